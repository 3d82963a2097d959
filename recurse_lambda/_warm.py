"""Warm-container state: everything one container keeps between invocations, in one object.

Lambda runs a module's top level once per container, so a handler keeps one :class:`WarmState` for its life.
The simulator gives each simulated container its own and models a cold start (or a recycled container) by
replacing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._policy import ChunkTimings, HandOffTimings

ClientFactory = Callable[[str], Any]


def boto3_client(service: str) -> Any:
    import boto3  # imported here so that `import recurse_lambda` creates no client and stays light

    return boto3.client(service)


class WarmState:
    """Learned chunk and hand-off timings, lazily created clients, and the S3 content cache of one container."""

    def __init__(
        self,
        *,
        client_factory: ClientFactory | None = None,
        cache: Any | None = None,
        tmp_dir: str | None = None,
    ) -> None:
        # Memory is lost when Lambda re-initialises a runtime after a timeout or crash; /tmp is not.
        self.tmp_dir = tmp_dir if tmp_dir is not None else tempfile.gettempdir()
        self.timings = ChunkTimings()
        self.handoff = HandOffTimings()
        self.invocations = 0
        self.recursion_guard: Any | None = None  # the RecursionGuard of this container, once created
        self._client_factory = client_factory or boto3_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._cache = cache

    def client(self, service: str) -> Any:
        """The container's client for ``service``, created on first use and reused afterwards."""
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self._clients[service] = self._client_factory(service)
        return client

    def client_getter(self, service: str) -> Callable[[], Any]:
        return lambda: self.client(service)

    @property
    def cache(self) -> Any:
        """The container's S3 content cache (an ``S3Cache``), created on first use."""
        if self._cache is None:
            from .s3 import S3Cache

            self._cache = S3Cache()
        return self._cache


class FirstChunkMarker:
    """A file in the container's tmp directory saying "this hop's first chunk is running".

    An invocation killed by its timeout cannot clean up, and Lambda re-initialises the runtime (memory lost,
    /tmp kept); the next attempt that finds the marker knows the first chunk never reached a safe point.
    """

    def __init__(self, warm: WarmState, handler_name: str) -> None:
        digest = hashlib.sha256(handler_name.encode()).hexdigest()[:16]
        self.path = Path(warm.tmp_dir) / f"recurse-lambda-{digest}.first-chunk"

    def previous(self, chain_id: str, hop: int) -> tuple[int, float]:
        """How many earlier attempts of this hop left their first chunk unfinished here, and their budget."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0, 0.0
        if data.get("chain_id") == chain_id and data.get("hop") == hop:
            return int(data.get("attempts", 1)), float(data.get("budget", 0.0))
        return 0, 0.0

    def set(self, chain_id: str, hop: int, budget: float, attempts: int = 1) -> None:
        data = {"chain_id": chain_id, "hop": hop, "budget": budget, "attempts": attempts}
        try:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:  # a read-only or full /tmp only loses this diagnosis
            pass

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
