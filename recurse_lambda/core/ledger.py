"""The chain ledger: one record per chain, changed only by conditional writes (DESIGN §4).

Every transition states its condition, so the protocol maps one-to-one onto DynamoDB's ``ConditionExpression``:

========== ======================================================================== ===========================
transition condition                                                                 effect
========== ======================================================================== ===========================
start      no record with this chain id                                             RUNNING, hop 0, unowned
claim      RUNNING ∧ hop = n ∧ (owner = ∅ ∨ owner = me ∨ lease expired)              owner = me, attempts + 1
checkpoint RUNNING ∧ hop = n ∧ owner = me                                           progress, lease
hand_off   RUNNING ∧ hop = n ∧ owner = me                                           hop n+1, unowned, progress
finish     RUNNING ∧ hop = n ∧ owner = me                                           SUCCEEDED, result
fail       RUNNING ∧ hop = n ∧ (owner = ∅ ∨ owner = me ∨ lease expired)              FAILED, error
cancel     RUNNING                                                                  CANCELLED
resume     FAILED ∨ (RUNNING ∧ (owner = ∅ ∧ idle ≥ stall ∨ lease expired))          RUNNING, hop n+1, unowned
join       RUNNING                                                                  joined ∪= {part}
resend     RUNNING ∧ hop = n ∧ updated_at ≤ t ∧ lease_until ≤ t ∧ resends(n) = k          resends(n) = k+1
abort      RUNNING ∧ part ∉ joined                                                  FAILED or CANCELLED, error
========== ======================================================================== ===========================

``join`` is the counter of a sharded job (see :mod:`recurse_lambda.shards.plan`): each finished shard adds its index
to the job's ``joined`` set. The count is the size of a set, so a shard delivered twice is counted once, and
every join returns the new record, so exactly one caller sees the count reach the number of shards first.
``abort`` is its counterpart for a shard that fails or is cancelled: it ends the job at once, whoever holds it
(an invocation of the job is fenced off at its next write, as by ``cancel``), so the job never waits for a
delivery that may not come. A shard already joined has succeeded, so its stale failure cannot end the job.

``resend`` is how an on-failure destination record acts on a hop (see :mod:`recurse_lambda.chain.deliveries`): only
on a hop that shows no sign of life since ``t`` (no write, and any lease expired, before ``t``), and only as
often as the caller's bound. ``resends(n)`` counts the resends of hop ``n`` (``resent_hop`` names the hop the
``resends`` count is for; a later hop starts from 0). It also sets ``updated_at``, so the next record waits again.

``start`` also succeeds over a terminal record whose retention has expired (``expires_at`` ≤ now): the same
business key may then start a new chain. ``resume`` moves to a new hop, so a straggler of the old one is stale.

A failed condition raises :class:`LedgerConflict` carrying the current record (DynamoDB returns it with
``ReturnValuesOnConditionCheckFailure=ALL_OLD``); checkpoint, hand-off and finish raise its subclass
:class:`LostLeaseError`: the caller has been fenced off and must stop.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from ..errors import LedgerConflict, LostLeaseError

__all__ = ["ChainRecord", "ChainStatus", "InMemoryLedger", "Ledger"]


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


@runtime_checkable
class Ledger(Protocol):
    """Conditional storage for chain records. Implementations: :class:`InMemoryLedger`; DynamoDB (adapter)."""

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        """Create the chain unless it exists; returns the record and whether this call created it."""
        ...

    def get(self, chain_id: str) -> ChainRecord | None: ...

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        """Chains, most recently updated first, optionally only those with ``status``."""
        ...

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        """Continue a FAILED chain, or a RUNNING one that stalled, at a new fencing hop (see the table)."""
        ...

    def claim(
        self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float
    ) -> ChainRecord: ...

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord: ...

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord: ...

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord: ...

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord: ...

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord: ...

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        """Add ``part`` to the RUNNING chain's ``joined`` set (idempotent); returns the new record."""
        ...

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        """Count one more resend of the dead hop ``hop`` (see the table); ``resends`` is the count expected."""
        ...

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        """End the RUNNING chain as ``status`` (FAILED or CANCELLED) with ``error``, unless ``part`` has joined."""
        ...


def _json_copy(value: Any) -> Any:
    # Round-trip through JSON, as a real store would: no aliasing with the caller's objects, and anything that
    # is not JSON-serialisable fails here rather than in production.
    # allow_nan=False: a DynamoDB ledger stores RFC 8259 JSON, and so does this one.
    return json.loads(json.dumps(value, allow_nan=False))


class InMemoryLedger:
    """A thread-safe in-memory ledger with the exact conditions of the protocol (for tests and the simulator)."""

    def __init__(self, *, retention: float = 7 * 24 * 3600.0) -> None:
        self.retention = retention  # seconds a finished chain keeps its id (and result) after it ends
        self._records: dict[str, ChainRecord] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[ChainRecord]:
        with self._lock:
            return list(self._records.values())

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        with self._lock:
            existing = self._records.get(chain_id)
            if existing is not None and (existing.expires_at is None or existing.expires_at > now):
                return existing, False
            record = ChainRecord(
                chain_id=chain_id,
                status=ChainStatus.RUNNING,
                hop=0,
                owner=None,
                lease_until=0.0,
                progress=_json_copy(progress),
                attempts=0,
                event=_json_copy(event),
                started_at=now,
                updated_at=now,
                function=function,
            )
            self._records[chain_id] = record
            return record, True

    def get(self, chain_id: str) -> ChainRecord | None:
        with self._lock:
            return self._records.get(chain_id)

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        with self._lock:
            chosen = [r for r in self._records.values() if status is None or r.status is status]
        return sorted(chosen, key=lambda r: r.updated_at, reverse=True)[:limit]

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = current is not None and (
                current.status is ChainStatus.FAILED
                or (
                    current.status is ChainStatus.RUNNING
                    and (
                        (current.owner is None and current.updated_at + stall_after <= now)
                        or (current.owner is not None and current.lease_until <= now)
                    )
                )
            )
            self._require(chain_id, ok, "resume", current, fenced=False)
            assert current is not None
            record = replace(
                current,
                status=ChainStatus.RUNNING,
                hop=current.hop + 1,
                owner=None,
                lease_until=0.0,
                attempts=0,
                handed_off_by=None,
                error=None,
                expires_at=None,
                updated_at=now,
            )
            self._records[chain_id] = record
            return record

    def _require(self, chain_id: str, ok: bool, what: str, current: ChainRecord | None, fenced: bool) -> None:
        if not ok:
            cls = LostLeaseError if fenced else LedgerConflict
            raise cls(f"{what} refused for chain {chain_id}", current)

    def _owned(self, chain_id: str, hop: int, owner: str, what: str) -> ChainRecord:
        current = self._records.get(chain_id)
        ok = (
            current is not None
            and current.status is ChainStatus.RUNNING
            and current.hop == hop
            and current.owner == owner
        )
        self._require(chain_id, ok, what, current, fenced=True)
        assert current is not None
        return current

    def claim(self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = (
                current is not None
                and current.status is ChainStatus.RUNNING
                and current.hop == hop
                and (current.owner in (None, owner) or current.lease_until <= now)
            )
            self._require(chain_id, ok, f"claim of hop {hop}", current, fenced=False)
            assert current is not None
            record = replace(
                current, owner=owner, lease_until=lease_until, attempts=current.attempts + 1, updated_at=now
            )
            self._records[chain_id] = record
            return record

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord:
        with self._lock:
            current = self._owned(chain_id, hop, owner, f"checkpoint of hop {hop}")
            record = replace(current, progress=_json_copy(progress), lease_until=lease_until, updated_at=now)
            self._records[chain_id] = record
            return record

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord:
        with self._lock:
            current = self._owned(chain_id, hop, owner, f"hand-off from hop {hop}")
            record = replace(
                current,
                hop=hop + 1,
                owner=None,
                lease_until=0.0,
                attempts=0,
                progress=_json_copy(progress),
                handed_off_by=owner,
                updated_at=now,
            )
            self._records[chain_id] = record
            return record

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord:
        with self._lock:
            current = self._owned(chain_id, hop, owner, f"finish of hop {hop}")
            record = replace(
                current,
                status=ChainStatus.SUCCEEDED,
                owner=None,
                progress=_json_copy(progress),
                result=_json_copy(result),
                updated_at=now,
                expires_at=now + self.retention,
            )
            self._records[chain_id] = record
            return record

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = (
                current is not None
                and current.status is ChainStatus.RUNNING
                and current.hop == hop
                and (current.owner in (None, owner) or current.lease_until <= now)
            )
            self._require(chain_id, ok, f"fail at hop {hop}", current, fenced=False)
            assert current is not None
            record = replace(
                current,
                status=ChainStatus.FAILED,
                owner=None,
                error=error,
                updated_at=now,
                expires_at=now + self.retention,
            )
            self._records[chain_id] = record
            return record

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = current is not None and current.status is ChainStatus.RUNNING
            self._require(chain_id, ok, "cancel", current, fenced=False)
            assert current is not None
            record = replace(
                current,
                status=ChainStatus.CANCELLED,
                owner=None,
                updated_at=now,
                expires_at=now + self.retention,
            )
            self._records[chain_id] = record
            return record

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = current is not None and current.status is ChainStatus.RUNNING
            self._require(chain_id, ok, f"join of {part}", current, fenced=False)
            assert current is not None
            if part in current.joined:
                return current
            record = replace(current, joined=tuple(sorted({*current.joined, part})), updated_at=now)
            self._records[chain_id] = record
            return record

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            ok = (
                current is not None
                and current.status is ChainStatus.RUNNING
                and current.hop == hop
                and current.updated_at <= quiet_since
                and current.lease_until <= quiet_since
                and current.resends_of(hop) == resends
            )
            self._require(chain_id, ok, f"resend of hop {hop}", current, fenced=False)
            assert current is not None
            record = replace(current, resends=resends + 1, resent_hop=hop, updated_at=now)
            self._records[chain_id] = record
            return record

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        if status not in (ChainStatus.FAILED, ChainStatus.CANCELLED):
            raise ValueError(f"abort ends a chain as FAILED or CANCELLED, not {status}")
        with self._lock:
            current = self._records.get(chain_id)
            ok = current is not None and current.status is ChainStatus.RUNNING and part not in current.joined
            self._require(chain_id, ok, f"abort by {part}", current, fenced=False)
            assert current is not None
            record = replace(
                current,
                status=status,
                owner=None,
                error=error,
                updated_at=now,
                expires_at=now + self.retention,
            )
            self._records[chain_id] = record
            return record
