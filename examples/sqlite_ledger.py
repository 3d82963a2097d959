"""A chain ledger in one SQLite file: a new ledger backend is this one file plus the shipped contract suite.

Each operation opens the database, starts a ``BEGIN IMMEDIATE`` transaction (which takes SQLite's write lock, so
read-modify-write is atomic across threads and processes), reads the chain's row, applies the rule from
:mod:`recurse_lambda.core.transitions` and writes the row it returns. The rules raise the conflict themselves:
all a backend adds is storage. ``progress``, ``event``, ``result`` and ``joined`` are JSON columns.

Use it for chains that run on one machine (the simulator, a local Lambda runtime) and with the CLI::

    RECURSE_LAMBDA_SQLITE=chains.db recurse-lambda list --ledger sqlite_ledger:from_environment

Its tests are ``tests/test_ledger_sqlite.py``: a subclass of
:class:`recurse_lambda.testing.ledger_contract.LedgerContract` with a ``ledger`` fixture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from recurse_lambda import ChainRecord, ChainStatus
from recurse_lambda.core import transitions

PATH_ENV = "RECURSE_LAMBDA_SQLITE"
_JSON = ("progress", "event", "result", "joined")
# Declared types give each column its affinity: an owner "123" stays text, a lease stays a float.
_TYPES = {
    "chain_id": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",
    "hop": "INTEGER NOT NULL",
    "owner": "TEXT",
    "lease_until": "REAL NOT NULL",
    "progress": "TEXT NOT NULL",  # JSON
    "attempts": "INTEGER NOT NULL",
    "event": "TEXT NOT NULL",  # JSON
    "started_at": "REAL NOT NULL",
    "updated_at": "REAL NOT NULL",
    "handed_off_by": "TEXT",
    "result": "TEXT NOT NULL",  # JSON
    "error": "TEXT",
    "function": "TEXT",
    "expires_at": "REAL",
    "joined": "TEXT NOT NULL",  # JSON
    "resends": "INTEGER NOT NULL",
    "resent_hop": "INTEGER",
}
_COLUMNS = tuple(f.name for f in dataclasses.fields(ChainRecord))
assert set(_COLUMNS) == set(_TYPES), "a ChainRecord field without a column"
_SCHEMA = f"CREATE TABLE IF NOT EXISTS chains ({', '.join(f'{c} {_TYPES[c]}' for c in _COLUMNS)})"


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))  # RFC 8259, as every ledger stores


class SqliteLedger:
    """A :class:`~recurse_lambda.Ledger` in the SQLite database at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, retention: float = 7 * 24 * 3600.0) -> None:
        self.path = os.fspath(path)
        self.retention = retention  # seconds an ended chain keeps its id (and result)
        with contextlib.closing(self._connect()) as db:
            db.execute(_SCHEMA)

    @property
    def name(self) -> str | None:
        return self.path

    def __repr__(self) -> str:
        return f"SqliteLedger({self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; each operation says BEGIN IMMEDIATE itself.
        return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ChainRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        for name in _JSON:
            values[name] = json.loads(values[name])
        values["status"] = ChainStatus(values["status"])
        values["joined"] = tuple(values["joined"])
        return ChainRecord(**values)

    @staticmethod
    def _row(record: ChainRecord) -> tuple[Any, ...]:
        values = {name: getattr(record, name) for name in _COLUMNS}
        for name in _JSON:
            values[name] = _dumps(values[name])
        values["status"] = record.status.value
        return tuple(values[name] for name in _COLUMNS)

    def _read(self, db: sqlite3.Connection, chain_id: str) -> ChainRecord | None:
        row = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM chains WHERE chain_id = ?", (chain_id,)
        ).fetchone()
        return None if row is None else self._record(row)

    def _write(self, db: sqlite3.Connection, record: ChainRecord) -> ChainRecord:
        marks = ", ".join("?" for _ in _COLUMNS)
        db.execute(
            f"INSERT OR REPLACE INTO chains ({', '.join(_COLUMNS)}) VALUES ({marks})", self._row(record)
        )
        # Return what was stored, as read back: no aliasing with the caller's objects.
        stored = self._read(db, record.chain_id)
        assert stored is not None
        return stored

    # ------------------------------------------------------------------ the admin side

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        with self._transaction() as db:
            record, created = transitions.start(
                self._read(db, chain_id), chain_id, progress=progress, event=event, now=now, function=function
            )
            return (self._write(db, record) if created else record), created

    def get(self, chain_id: str) -> ChainRecord | None:
        with contextlib.closing(self._connect()) as db:
            return self._read(db, chain_id)

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        where, args = ("WHERE status = ?", (status.value,)) if status is not None else ("", ())
        query = f"SELECT {', '.join(_COLUMNS)} FROM chains {where} ORDER BY updated_at DESC LIMIT ?"
        with contextlib.closing(self._connect()) as db:
            return [self._record(row) for row in db.execute(query, (*args, limit))]

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            return self._write(db, transitions.cancel(current, chain_id, now=now, retention=self.retention))

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            return self._write(db, transitions.resume(current, chain_id, now=now, stall_after=stall_after))

    # ------------------------------------------------------------------ the writer side

    def claim(self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.claim(current, chain_id, hop=hop, owner=owner, now=now, lease_until=lease_until)
            return self._write(db, new)

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.checkpoint(
                current, chain_id, hop=hop, owner=owner, progress=progress, now=now, lease_until=lease_until
            )
            return self._write(db, new)

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.hand_off(current, chain_id, hop=hop, owner=owner, progress=progress, now=now)
            return self._write(db, new)

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.finish(
                current,
                chain_id,
                hop=hop,
                owner=owner,
                progress=progress,
                result=result,
                now=now,
                retention=self.retention,
            )
            return self._write(db, new)

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.fail(
                current, chain_id, hop=hop, owner=owner, error=error, now=now, retention=self.retention
            )
            return self._write(db, new)

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.join(current, chain_id, part=part, now=now)
            return new if new is current else self._write(db, new)

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.resend(
                current, chain_id, hop=hop, resends=resends, quiet_since=quiet_since, now=now
            )
            return self._write(db, new)

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        with self._transaction() as db:
            current = self._read(db, chain_id)
            new = transitions.abort(
                current, chain_id, part=part, status=status, error=error, now=now, retention=self.retention
            )
            return self._write(db, new)


def from_environment() -> SqliteLedger:
    """The ledger in the file ``$RECURSE_LAMBDA_SQLITE`` (for ``--ledger sqlite_ledger:from_environment``)."""
    path = os.environ.get(PATH_ENV)
    if not path:
        raise RuntimeError(f"set {PATH_ENV} to the SQLite file of the ledger")
    return SqliteLedger(path)
