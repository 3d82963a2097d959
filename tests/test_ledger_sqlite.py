"""examples/sqlite_ledger.py: a third-party ledger in one file, passing the shipped contract suite."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda import ChainStatus, Ledger, LedgerConflict
from recurse_lambda.local import VirtualClock
from recurse_lambda.testing.ledger_contract import P0, LedgerContract
from tests.conftest import counting_handler, expected, simulate

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")


@pytest.fixture(scope="module")
def sqlite_ledger() -> Iterator[Any]:
    """The example module, imported from examples/ as a user's own module would be."""
    sys.path.insert(0, EXAMPLES)
    try:
        import sqlite_ledger

        yield sqlite_ledger
    finally:
        sys.path.remove(EXAMPLES)


class TestSqliteLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, sqlite_ledger: Any, tmp_path: Path) -> Ledger:
        ledger: Ledger = sqlite_ledger.SqliteLedger(tmp_path / "chains.db")
        return ledger


def test_the_rows_are_json_columns_and_text_stays_text(sqlite_ledger: Any, tmp_path: Path) -> None:
    ledger = sqlite_ledger.SqliteLedger(tmp_path / "chains.db")
    ledger.start("c", progress=P0, event={"e": [1, 2]}, now=1.0)
    ledger.claim("c", hop=0, owner="123", now=2.0, lease_until=3.0)  # a numeric-looking owner stays a str
    with sqlite3.connect(tmp_path / "chains.db") as db:
        progress, event, owner = db.execute("SELECT progress, event, owner FROM chains").fetchone()
    assert (progress, event, owner) == ('{"state":{"n":0},"chunks":0,"pins":{}}', '{"e":[1,2]}', "123")
    assert ledger.get("c").owner == "123" and ledger.name == str(tmp_path / "chains.db")


def test_claims_from_many_threads_and_two_connections_admit_exactly_one(
    sqlite_ledger: Any, tmp_path: Path
) -> None:
    first = sqlite_ledger.SqliteLedger(tmp_path / "chains.db")
    second = sqlite_ledger.SqliteLedger(tmp_path / "chains.db")  # another process would open it the same way
    first.start("c", progress=P0, event={}, now=1.0)
    won: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            (first if i % 2 else second).claim("c", hop=0, owner=f"r{i}", now=2.0, lease_until=100.0)
            won.append(f"r{i}")
        except LedgerConflict:
            pass

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and first.get("c").owner == won[0] and first.get("c").attempts == 1


def test_a_chain_runs_hop_after_hop_on_the_sqlite_ledger(sqlite_ledger: Any, tmp_path: Path) -> None:
    clock = VirtualClock()
    ledger = sqlite_ledger.SqliteLedger(tmp_path / "chains.db")
    report = simulate(counting_handler(clock), timeout=10, clock=clock, ledger=ledger).run({"n": 300})
    assert report.status == "SUCCEEDED" and report.result == expected(300) and report.hops > 1
    (record,) = ledger.list()
    assert record.status is ChainStatus.SUCCEEDED and record.result == expected(300)
    assert record.hop == report.hops - 1
