"""The values the layers pass around: a chain's status and ledger record, and the envelope one hop hands on.

Plain frozen dataclasses, no I/O. The ledger's rules over :class:`ChainRecord` are in
:mod:`recurse_lambda.core.transitions`; the envelope's wire form is written and read by
:class:`recurse_lambda.core.codec.EnvelopeCodec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["ChainRecord", "ChainStatus", "Envelope"]


class ChainStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not ChainStatus.RUNNING


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """A chain as the ledger holds it. ``progress`` is the last committed cursor."""

    chain_id: str
    status: ChainStatus
    hop: int
    owner: str | None
    lease_until: float
    progress: dict[str, Any]
    attempts: int  # claims of the current hop so far
    event: Any
    started_at: float
    updated_at: float
    handed_off_by: str | None = None  # request id that committed the hand-off to the current hop
    result: Any = None
    error: str | None = None
    function: str | None = None  # the function (qualified ARN) running the chain, for resume
    expires_at: float | None = None  # set when the chain ends: after it, the chain id may start anew
    joined: tuple[str, ...] = ()  # a sharded job: the shards (padded indexes, sorted) that have finished
    resends: int = 0  # resends of hop ``resent_hop`` by on-failure records (see ``resends_of``)
    resent_hop: int | None = None

    def resends_of(self, hop: int) -> int:
        """How many times on-failure records have resent ``hop``."""
        return self.resends if self.resent_hop == hop else 0


@dataclass(frozen=True, slots=True)
class Envelope:
    """One hop's continuation. ``progress`` is the committed cursor: user state, chunk count and S3 pins."""

    chain_id: str
    hop: int
    progress: dict[str, Any]
    event: Any
    started_at: float
    code_version: str = "$LATEST"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: ChainRecord, *, code_version: str = "$LATEST") -> Envelope:
        """The envelope of the record's current hop: its committed progress, original event and start time."""
        return cls(
            record.chain_id, record.hop, record.progress, record.event, record.started_at, code_version
        )
