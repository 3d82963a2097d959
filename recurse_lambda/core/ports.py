"""The ports: what the core asks of the outside world, as protocols. Adapters live elsewhere (``aws/``, ``local/``,
``examples/``); the core imports none of them.

- :class:`Clock`: monotonic and wall time, and a way to wait (``SystemClock``; ``VirtualClock``).
- :class:`Invoker`: an asynchronous invoke of the next hop (``LambdaInvoker``; the simulator's).
- :class:`Ledger`: conditional storage of chain records (``InMemoryLedger``; ``DynamoDBLedger``).
- :class:`SpillStore`: where envelopes too large for an invoke payload go (``S3SpillStore``; a dict).
- :class:`FailureNotifier`: tells someone a chain failed for good (``SqsNotifier``, ``SnsNotifier``, ...).
- :class:`ObjectLister`: lists the objects under a sharded job's source (S3; the simulator's).

The :class:`Ledger` has two sides. The *admin* side (:class:`LedgerAdmin`: ``name``, ``start``, ``get``,
``list``, ``cancel``, ``resume``) is what starting chains and :class:`~recurse_lambda.ChainControl` use; the
*writer* side (:class:`LedgerWriter`) is what a running hop uses. The conditions of every transition are those
of :mod:`recurse_lambda.core.transitions`; a new backend applies those functions inside one atomic
read-modify-write (see ``examples/sqlite_ledger.py``) and runs
:class:`recurse_lambda.testing.ledger_contract.LedgerContract` against itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .model import ChainRecord, ChainStatus

if TYPE_CHECKING:
    from ..shards.plan import ObjectInfo, SourceRef
    from .notify import ChainFailureNotice

__all__ = [
    "Clock",
    "FailureNotifier",
    "Invoker",
    "Ledger",
    "LedgerAdmin",
    "LedgerWriter",
    "ObjectLister",
    "SpillStore",
]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic seconds, wall-clock seconds, and a way to wait."""

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch, for timestamps that cross containers (leases, chain start)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a virtual clock advances instead)."""
        ...


@runtime_checkable
class Invoker(Protocol):
    """Starts an asynchronous invocation (``InvocationType="Event"``) of ``function`` with ``payload``."""

    def invoke_async(self, function: str, payload: bytes) -> None:
        """Queue the invocation; raise :class:`InvokeThrottled` when throttled, ``HandOffError`` otherwise."""
        ...


class SpillStore(Protocol):
    """Where envelopes too large for an invoke payload go (S3 in production, a dict in the simulator)."""

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        """Store ``body``; return a JSON-serialisable reference (at least ``bucket`` and ``key``)."""
        ...

    def get(self, ref: Mapping[str, Any]) -> bytes: ...


@runtime_checkable
class FailureNotifier(Protocol):
    """Sends a :class:`ChainFailureNotice` somewhere; raises :class:`NotifyError` when it cannot."""

    def notify(self, notice: ChainFailureNotice) -> None: ...


class ObjectLister(Protocol):
    """Lists the objects under a sharded job's source (S3 ``ListObjectsV2`` in production)."""

    def __call__(self, source: SourceRef, /) -> list[ObjectInfo]: ...


@runtime_checkable
class LedgerAdmin(Protocol):
    """The ledger as starting chains and operators see it: create, read, list, cancel and resume."""

    @property
    def name(self) -> str | None:
        """Where the ledger lives, for notices and messages (a table name), or None (in memory)."""
        ...

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

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord: ...

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        """Continue a FAILED chain, or a RUNNING one that stalled, at a new fencing hop."""
        ...


@runtime_checkable
class LedgerWriter(Protocol):
    """The ledger as a running hop writes it: each write conditional on the hop (and owner) it expects."""

    def get(self, chain_id: str) -> ChainRecord | None: ...

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

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        """Add ``part`` to the RUNNING chain's ``joined`` set (idempotent); returns the new record."""
        ...

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        """Count one more resend of the dead hop ``hop``; ``resends`` is the count expected."""
        ...

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        """End the RUNNING chain as ``status`` (FAILED or CANCELLED) with ``error``, unless ``part`` has joined."""
        ...


@runtime_checkable
class Ledger(LedgerAdmin, LedgerWriter, Protocol):
    """Conditional storage for chain records: both sides. Implementations: ``InMemoryLedger``, ``DynamoDBLedger``.

    A failed condition raises :class:`~recurse_lambda.LedgerConflict` carrying the current record (or None);
    checkpoint, hand-off and finish raise its subclass :class:`~recurse_lambda.LostLeaseError`.
    """
