""":class:`InMemoryLedger`: a lock, a dict and the rules of :mod:`recurse_lambda.core.transitions`."""

from __future__ import annotations

import json
import threading
from typing import Any

from . import transitions
from .model import ChainRecord, ChainStatus

__all__ = ["InMemoryLedger"]


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

    @property
    def name(self) -> str | None:
        """None: an in-memory ledger lives nowhere an operator could point at."""
        return None

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[ChainRecord]:
        with self._lock:
            return list(self._records.values())

    def get(self, chain_id: str) -> ChainRecord | None:
        with self._lock:
            return self._records.get(chain_id)

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        with self._lock:
            chosen = [r for r in self._records.values() if status is None or r.status is status]
        return sorted(chosen, key=lambda r: r.updated_at, reverse=True)[:limit]

    def _store(self, record: ChainRecord) -> ChainRecord:
        self._records[record.chain_id] = record
        return record

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        progress, event = _json_copy(progress), _json_copy(event)
        with self._lock:
            record, created = transitions.start(
                self._records.get(chain_id),
                chain_id,
                progress=progress,
                event=event,
                now=now,
                function=function,
            )
            return (self._store(record) if created else record), created

    def claim(self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.claim(current, chain_id, hop=hop, owner=owner, now=now, lease_until=lease_until)
            )

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord:
        progress = _json_copy(progress)
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.checkpoint(
                    current,
                    chain_id,
                    hop=hop,
                    owner=owner,
                    progress=progress,
                    now=now,
                    lease_until=lease_until,
                )
            )

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord:
        progress = _json_copy(progress)
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.hand_off(current, chain_id, hop=hop, owner=owner, progress=progress, now=now)
            )

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord:
        progress, result = _json_copy(progress), _json_copy(result)
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.finish(
                    current,
                    chain_id,
                    hop=hop,
                    owner=owner,
                    progress=progress,
                    result=result,
                    now=now,
                    retention=self.retention,
                )
            )

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.fail(
                    current, chain_id, hop=hop, owner=owner, error=error, now=now, retention=self.retention
                )
            )

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(transitions.cancel(current, chain_id, now=now, retention=self.retention))

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(transitions.resume(current, chain_id, now=now, stall_after=stall_after))

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(transitions.join(current, chain_id, part=part, now=now))

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.resend(
                    current, chain_id, hop=hop, resends=resends, quiet_since=quiet_since, now=now
                )
            )

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        with self._lock:
            current = self._records.get(chain_id)
            return self._store(
                transitions.abort(
                    current,
                    chain_id,
                    part=part,
                    status=status,
                    error=error,
                    now=now,
                    retention=self.retention,
                )
            )
