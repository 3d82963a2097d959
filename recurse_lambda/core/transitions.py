"""The ledger's rules as pure functions: ``(current record | None, operation arguments) -> new record``.

Every transition states its condition, so the rules map one-to-one onto DynamoDB's ``ConditionExpression``:

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

A backend reads the current record, calls the function and writes what it returns, all in one atomic step (a lock,
a transaction); ``start`` returns whether it created the record, ``join`` returns ``current`` itself when the part
had joined already (nothing to write). The functions store what they are given: a backend copies or serialises
``progress``, ``event`` and ``result`` as it stores them. ``retention`` is the seconds an ended chain keeps its id.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import LedgerConflict, LostLeaseError
from .model import ChainRecord, ChainStatus

__all__ = [
    "abort",
    "cancel",
    "checkpoint",
    "claim",
    "fail",
    "finish",
    "hand_off",
    "join",
    "resend",
    "resume",
    "start",
]


def _refuse(chain_id: str, what: str, current: ChainRecord | None, *, fenced: bool = False) -> LedgerConflict:
    cls = LostLeaseError if fenced else LedgerConflict
    return cls(f"{what} refused for chain {chain_id}", current)


def _running(current: ChainRecord | None) -> bool:
    return current is not None and current.status is ChainStatus.RUNNING


def _owned(current: ChainRecord | None, chain_id: str, hop: int, owner: str, what: str) -> ChainRecord:
    if current is None or not (
        current.status is ChainStatus.RUNNING and current.hop == hop and current.owner == owner
    ):
        raise _refuse(chain_id, what, current, fenced=True)
    return current


def _claimable(current: ChainRecord | None, hop: int, owner: str | None, now: float) -> bool:
    return (
        current is not None
        and current.status is ChainStatus.RUNNING
        and current.hop == hop
        and (current.owner in (None, owner) or current.lease_until <= now)
    )


def start(
    current: ChainRecord | None,
    chain_id: str,
    *,
    progress: dict[str, Any],
    event: Any,
    now: float,
    function: str | None = None,
) -> tuple[ChainRecord, bool]:
    """A new RUNNING record at hop 0, unless a live one exists: then that one. True when created."""
    if current is not None and (current.expires_at is None or current.expires_at > now):
        return current, False
    record = ChainRecord(
        chain_id=chain_id,
        status=ChainStatus.RUNNING,
        hop=0,
        owner=None,
        lease_until=0.0,
        progress=progress,
        attempts=0,
        event=event,
        started_at=now,
        updated_at=now,
        function=function,
    )
    return record, True


def claim(
    current: ChainRecord | None, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float
) -> ChainRecord:
    if current is None or not _claimable(current, hop, owner, now):
        raise _refuse(chain_id, f"claim of hop {hop}", current)
    return replace(
        current, owner=owner, lease_until=lease_until, attempts=current.attempts + 1, updated_at=now
    )


def checkpoint(
    current: ChainRecord | None,
    chain_id: str,
    *,
    hop: int,
    owner: str,
    progress: dict[str, Any],
    now: float,
    lease_until: float,
) -> ChainRecord:
    current = _owned(current, chain_id, hop, owner, f"checkpoint of hop {hop}")
    return replace(current, progress=progress, lease_until=lease_until, updated_at=now)


def hand_off(
    current: ChainRecord | None, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
) -> ChainRecord:
    current = _owned(current, chain_id, hop, owner, f"hand-off from hop {hop}")
    return replace(
        current,
        hop=hop + 1,
        owner=None,
        lease_until=0.0,
        attempts=0,
        progress=progress,
        handed_off_by=owner,
        updated_at=now,
    )


def finish(
    current: ChainRecord | None,
    chain_id: str,
    *,
    hop: int,
    owner: str,
    progress: dict[str, Any],
    result: Any,
    now: float,
    retention: float,
) -> ChainRecord:
    current = _owned(current, chain_id, hop, owner, f"finish of hop {hop}")
    return replace(
        current,
        status=ChainStatus.SUCCEEDED,
        owner=None,
        progress=progress,
        result=result,
        updated_at=now,
        expires_at=now + retention,
    )


def fail(
    current: ChainRecord | None,
    chain_id: str,
    *,
    hop: int,
    owner: str | None,
    error: str,
    now: float,
    retention: float,
) -> ChainRecord:
    if current is None or not _claimable(current, hop, owner, now):
        raise _refuse(chain_id, f"fail at hop {hop}", current)
    return replace(
        current,
        status=ChainStatus.FAILED,
        owner=None,
        error=error,
        updated_at=now,
        expires_at=now + retention,
    )


def cancel(current: ChainRecord | None, chain_id: str, *, now: float, retention: float) -> ChainRecord:
    if current is None or not _running(current):
        raise _refuse(chain_id, "cancel", current)
    return replace(
        current, status=ChainStatus.CANCELLED, owner=None, updated_at=now, expires_at=now + retention
    )


def resume(
    current: ChainRecord | None, chain_id: str, *, now: float, stall_after: float = 900.0
) -> ChainRecord:
    if current is None or not (
        current.status is ChainStatus.FAILED
        or (
            current.status is ChainStatus.RUNNING
            and (
                (current.owner is None and current.updated_at + stall_after <= now)
                or (current.owner is not None and current.lease_until <= now)
            )
        )
    ):
        raise _refuse(chain_id, "resume", current)
    return replace(
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


def join(current: ChainRecord | None, chain_id: str, *, part: str, now: float) -> ChainRecord:
    """``current`` itself when ``part`` has joined already: a duplicate delivery writes nothing."""
    if current is None or not _running(current):
        raise _refuse(chain_id, f"join of {part}", current)
    if part in current.joined:
        return current
    return replace(current, joined=tuple(sorted({*current.joined, part})), updated_at=now)


def resend(
    current: ChainRecord | None, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float
) -> ChainRecord:
    if current is None or not (
        current.status is ChainStatus.RUNNING
        and current.hop == hop
        and current.updated_at <= quiet_since
        and current.lease_until <= quiet_since
        and current.resends_of(hop) == resends
    ):
        raise _refuse(chain_id, f"resend of hop {hop}", current)
    return replace(current, resends=resends + 1, resent_hop=hop, updated_at=now)


def abort(
    current: ChainRecord | None,
    chain_id: str,
    *,
    part: str,
    status: ChainStatus,
    error: str,
    now: float,
    retention: float,
) -> ChainRecord:
    """Raises ValueError for a ``status`` other than FAILED or CANCELLED, whatever the record."""
    if status not in (ChainStatus.FAILED, ChainStatus.CANCELLED):
        raise ValueError(f"abort ends a chain as FAILED or CANCELLED, not {status}")
    if current is None or not (_running(current) and part not in current.joined):
        raise _refuse(chain_id, f"abort by {part}", current)
    return replace(
        current, status=status, owner=None, error=error, updated_at=now, expires_at=now + retention
    )
