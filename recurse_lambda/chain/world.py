"""What one invocation works with: the injected world, how it ended, and its statistics (``Run``, what the
handler sees, lives in :mod:`recurse_lambda.chain.run`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from ..core.clock import Clock
from ..core.codec import SpillStore
from ..core.invoke import Invoker
from ..core.ledger import Ledger
from .warm import WarmState

if TYPE_CHECKING:
    from ..shards.plan import ObjectInfo, SourceRef


@dataclass
class World:
    """The outside world of one invocation, injected: production wires AWS, the simulator wires fakes."""

    clock: Clock
    invoker: Invoker
    warm: WarmState
    ledger: Ledger | None = None
    spill: SpillStore | None = None
    s3_client: Callable[[], Any] | None = None
    # Lists the objects of a sharded job's source (production: S3 ListObjectsV2); None: sharded jobs cannot plan.
    lister: Callable[[SourceRef], list[ObjectInfo]] | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    # Called at every safe point (the simulator injects faults here); None in production.
    on_safe_point: Callable[[], None] | None = None
    # Given the invocation's live statistics as soon as it starts (the simulator's report reads them).
    observer: Callable[[InvocationStats], None] | None = None
    # Returns the container's recursion-setting check for this invocation's function (AWS only); None: no check.
    recursion_guard: Callable[[Any], RecursionCheck] | None = None
    # Where embedded-metric-format lines go (stdout, which CloudWatch Logs reads, in production).
    metrics_sink: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


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
