"""Warm-container state: everything one container keeps between invocations, in one object.

Lambda runs a module's top level once per container, so a handler keeps one :class:`WarmState` for its life.
The simulator gives each simulated container its own and models a cold start (or a recycled container) by
replacing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._policy import ChunkTimings, HandOffTimings

ClientFactory = Callable[[str], Any]


def boto3_client(service: str) -> Any:
    import boto3  # imported here so that `import recurse_lambda` creates no client and stays light

    return boto3.client(service)


class WarmState:
    """Learned chunk and hand-off timings, lazily created clients, and the S3 content cache of one container."""

    def __init__(self, *, client_factory: ClientFactory | None = None, cache: Any | None = None) -> None:
        self.timings = ChunkTimings()
        self.handoff = HandOffTimings()
        self.invocations = 0
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
