"""What one invocation works with: the injected world, the ``run`` handed to the user, and its statistics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from ..core.clock import Clock
from ..core.codec import SpillStore
from ..core.invoke import Invoker
from ..core.ledger import Ledger
from .warm import WarmState

if TYPE_CHECKING:
    from ..s3 import S3Helpers
    from ..shards.plan import ObjectInfo, Shard, SourceRef


@dataclass
class World:
    """The outside world of one invocation, injected: production wires AWS, the simulator wires fakes."""

    clock: Clock
    invoker: Invoker
    warm: WarmState
    ledger: Ledger | None = None
    spill: SpillStore | None = None
    s3_client: Callable[[], Any] | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    # Called at every safe point (the simulator injects faults here); None in production.
    on_safe_point: Callable[[], None] | None = None
    # Given the invocation's live statistics as soon as it starts (the simulator's report reads them).
    observer: Callable[[InvocationStats], None] | None = None
    # Returns the container's recursion-setting check for this invocation's function (AWS only); None: no check.
    recursion_guard: Callable[[Any], RecursionCheck] | None = None
    # Where embedded-metric-format lines go (stdout, which CloudWatch Logs reads, in production).
    metrics_sink: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    # Lists what a sharded job reads (one object, or every object under a prefix); None: not available.
    lister: Callable[[SourceRef], list[ObjectInfo]] | None = None


class RecursionCheck(Protocol):
    def check(self) -> None:
        """Raise if the function may not invoke itself without limit; may warn and pass when it cannot tell."""
        ...


class Outcome(StrEnum):
    """How one invocation ended."""

    HANDED_OFF = "handed_off"  # committed its progress and started the next hop
    SUCCEEDED = "succeeded"  # the chain finished with a result
    FAILED = "failed"  # the chain was failed for good (recorded, not retried)
    RETRYING = "retrying"  # raised, so that Lambda retries it from the last committed checkpoint
    DUPLICATE = "duplicate"  # another live invocation owns this hop: exited without work
    STALE = "stale"  # the chain has moved past this hop or has ended: exited without work
    RESENT = "resent"  # the earlier attempt's hand-off may have been lost: sent it again
    LOST_LEASE = "lost_lease"  # fenced off mid-hop: stopped without handing off
    REJECTED = "rejected"  # the envelope was refused (bad signature, unknown chain)
    SPLIT = "split"  # a sharded job planned and started its shards
    WAITING = "waiting"  # a sharded job was woken before its last shard ended: it waits at the next hop


class InvocationStats:
    """Live figures of one invocation, updated by the runner as it goes."""

    __slots__ = (
        "attempt",
        "chain_id",
        "checkpoints",
        "chunk_time",
        "chunks",
        "ended",
        "handoff_time",
        "hop",
        "outcome",
        "request_id",
        "started",
    )

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.ended: float | None = None
        self.chain_id: str | None = None
        self.hop: int | None = None
        self.attempt: int | None = None
        self.chunks = 0
        self.chunk_time = 0.0
        self.checkpoints = 0
        self.handoff_time = 0.0
        self.outcome: Outcome | None = None


class Run:
    """What the handler sees of the chain: identity, time left, S3 helpers and idempotency keys."""

    def __init__(
        self,
        *,
        chain_id: str,
        hop: int,
        attempt: int | None,
        request_id: str,
        chunk: int,
        started_at: float,
        deadline: float,
        clock: Clock,
        context: Any,
        pins: MutableMapping[str, dict[str, Any]],
        world: World,
    ) -> None:
        self.chain_id = chain_id
        self.hop = hop
        self.attempt = attempt
        self.request_id = request_id
        self.chunk = chunk  # chain-wide index of the chunk in progress; stable across retries
        self.started_at = started_at
        self.context = context
        self.pins = pins
        self._deadline = deadline
        self._clock = clock
        self._world = world
        self._s3: S3Helpers | None = None
        #: For a shard of a sharded job: its place in the job and readers over its byte ranges; else None.
        self.shard: Shard | None = None

    @property
    def remaining(self) -> float:
        """Seconds left in this invocation."""
        return self._deadline - self._clock.now()

    def idempotency_key(self, *parts: object) -> str:
        """A key for a side effect that is the same on every retry of the same work.

        With no parts: ``chain_id/c<chunk>``, where ``chunk`` counts chunks from the chain's start and restarts
        from the committed count on a retry. Pass the cursor (``state.offset``) for a key tied to the data.
        Hop numbers are deliberately not part of it: a retry may hand off at another point.
        """
        if parts:
            return "/".join([self.chain_id, *map(str, parts)])
        return f"{self.chain_id}/c{self.chunk}"

    @property
    def s3(self) -> S3Helpers:
        """S3 helpers whose reads are pinned to the ETag recorded for the chain (created on first use)."""
        if self._s3 is None:
            from ..s3 import S3Helpers

            world = self._world
            getter = world.s3_client or world.warm.client_getter("s3")
            self._s3 = S3Helpers(getter, self.pins, cache=world.warm.cache)
        return self._s3

    def __repr__(self) -> str:
        return f"Run(chain_id={self.chain_id!r}, hop={self.hop}, attempt={self.attempt}, chunk={self.chunk})"
