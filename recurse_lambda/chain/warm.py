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

from ..core.policy import ChunkTimings, HandOffTimings
from ..errors import ChunkTooLargeError

ClientFactory = Callable[[str], Any]


def boto3_client(service: str) -> Any:
    """The process's boto3 client for ``service``, from :mod:`recurse_lambda.aws.clients` (imported here, at the
    first client, so that ``import recurse_lambda`` imports no boto3)."""
    from ..aws import clients

    return clients.client(service)


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
            from ..s3 import S3Cache

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


# ---------------------------------------------------------------------- what a chain learns, durably
#
# Memory is lost with the runtime reset that follows a timeout, so what a chain has learned about its time budget
# travels in its committed progress, under one key:
#   {"handoff": s, "chunk_max": s, "budget": s, "timeouts": n,
#    "at": {"hop": n, "chunk": k, "attempt": a, "left": s}   (checkpoints: "chunk k starts now, with s left")
#    "handoff_left": s}                                       (hand-offs: the time left when the hand-off began)

LEARNED = "learned"


def learned_of(progress: Any) -> dict[str, Any]:
    """The ``learned`` summary of a committed progress (or an empty one: it is advisory, never trusted blindly)."""
    learned = progress.get(LEARNED) if isinstance(progress, dict) else None
    return dict(learned) if isinstance(learned, dict) else {}


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < float("inf"):
        return float(value)
    return None


def seed_warm(warm: WarmState, learned: dict[str, Any], budget: float) -> None:
    """Give a runtime that has measured nothing (a cold start, or a reset after a timeout) what the chain learned.

    Values are capped by this invocation's budget, so a summary (forged or from a larger timeout) can only make
    the policy hand off sooner, never fail the chain.
    """
    handoff = _seconds(learned.get("handoff"))
    if handoff is not None and not warm.handoff.measured:
        warm.handoff.seed(min(handoff, budget / 2))
    chunk_max = _seconds(learned.get("chunk_max"))
    if chunk_max is not None and not len(warm.timings):
        warm.timings.add(min(chunk_max, budget))


def learned_summary(warm: WarmState, base: dict[str, Any], budget: float, **extra: Any) -> dict[str, Any]:
    """What to commit: this runtime's measurements (or the seeds it started from) and the chain's counts."""
    out: dict[str, Any] = {"timeouts": int(base.get("timeouts", 0) or 0), "budget": round(budget, 4)}
    handoff = warm.handoff.known
    if handoff is not None:
        out["handoff"] = round(handoff, 4)
    if len(warm.timings):
        out["chunk_max"] = round(warm.timings.max, 4)
    out.update(extra)
    return out


def lost_hand_off(learned: dict[str, Any]) -> dict[str, Any]:
    """The summary to send on with a hand-off whose invoke was lost (its invocation timed out or crashed while
    invoking): the hand-off needed more than the time it had, so the next hop plans for twice that."""
    had = _seconds(learned.get("handoff_left")) or 0.0
    known = _seconds(learned.get("handoff")) or 0.0
    out = {k: v for k, v in learned.items() if k != "handoff_left"}
    if max(had, known) > 0:
        out["handoff"] = round(2 * max(had, known), 4)
    out["timeouts"] = int(learned.get("timeouts", 0) or 0) + 1
    return out


def killed_chunk(progress: Any, hop: int, attempts: int) -> tuple[int, float, int] | None:
    """(chunk index, seconds it had, attempts killed on it) when attempts of ``hop`` died on their first chunk.

    Every attempt after the last commit of ``hop`` resumed at the committed chunk and started it first, with a
    whole invocation, and an attempt that follows a failed one commits after every chunk: so such an attempt that
    committed nothing was killed by (or crashed in) that chunk. The first attempt of a hop commits only now and
    then, so it proves nothing (the first-chunk marker covers it). ``attempts`` counts the hop's claims.
    """
    if not isinstance(progress, dict):
        return None
    learned = learned_of(progress)
    at = learned.get("at")
    last = int(at.get("attempt", 0)) if isinstance(at, dict) and at.get("hop") == hop else 0
    dead = attempts - max(last, 1)
    budget = _seconds(learned.get("budget"))
    if dead < 1 or budget is None:
        return None
    return int(progress.get("chunks", 0)), budget, dead


def killed_chunk_error(progress: Any, hop: int, attempts: int) -> ChunkTooLargeError | None:
    """The :class:`ChunkTooLargeError` a hop's record proves, if it proves one (see :func:`killed_chunk`)."""
    found = killed_chunk(progress, hop, attempts)
    if found is None:
        return None
    chunk, budget, dead = found
    return ChunkTooLargeError(
        budget,
        budget,
        f"chunk {chunk} (the first chunk of hop {hop} after its last commit) did not reach a safe point within a "
        f"whole invocation ({budget:.3f} s) on {dead} attempt(s), which timed out or crashed",
        chunk=chunk,
    )
