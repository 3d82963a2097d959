"""The contract every :class:`~recurse_lambda.Ledger` keeps, shipped so that a third-party ledger can run it.

Subclass :class:`LedgerContract` in a test module and provide a ``ledger`` fixture that returns a fresh, empty
ledger; pytest then runs every rule of :mod:`recurse_lambda.core.transitions` against it (the in-memory, DynamoDB
and SQLite ledgers run the very same tests, so they cannot drift apart)::

    import pytest
    from recurse_lambda.testing.ledger_contract import LedgerContract

    class TestSqliteLedger(LedgerContract):
        @pytest.fixture
        def ledger(self, tmp_path):  # a fresh, empty ledger for each test
            return SqliteLedger(tmp_path / "chains.db")

The tests use fixed timestamps (100.0, 200.0, ...) rather than a clock, and compare ``progress``, ``event`` and
``result`` after a JSON round trip: a backend must store them as RFC 8259 JSON. ``P0`` and ``P1`` are two
progress values a backend's own tests may reuse.
"""

from __future__ import annotations

from typing import Any

import pytest

from recurse_lambda import ChainRecord, ChainStatus, Ledger, LedgerConflict, LostLeaseError

__all__ = ["P0", "P1", "LedgerContract"]

P0: dict[str, Any] = {"state": {"n": 0}, "chunks": 0, "pins": {}}
P1: dict[str, Any] = {
    "state": {"n": 1},
    "chunks": 5,
    "pins": {"b/k": {"etag": '"e"', "version_id": None, "size": 3}},
}


def _current(info: pytest.ExceptionInfo[LedgerConflict]) -> ChainRecord:
    """The record a refused write carried (the tests that call this expect one)."""
    current = info.value.current
    assert current is not None, "a refused write on an existing chain must carry its current record"
    return current


def _get(ledger: Ledger, chain_id: str) -> ChainRecord:
    record = ledger.get(chain_id)
    assert record is not None, f"chain {chain_id} should exist"
    return record


class LedgerContract:
    """The tests; a subclass provides the ``ledger`` fixture (a fresh, empty ledger per test)."""

    @pytest.fixture
    def ledger(self) -> Ledger:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def started(self, ledger: Ledger, chain_id: str = "c") -> ChainRecord:
        record, created = ledger.start(chain_id, progress=P0, event={"e": 1}, now=100.0)
        assert created
        return record

    def test_it_satisfies_the_protocol_and_names_where_it_lives(self, ledger: Ledger) -> None:
        assert isinstance(ledger, Ledger)
        assert ledger.name is None or (isinstance(ledger.name, str) and ledger.name)

    def test_start_is_idempotent_by_chain_id(self, ledger: Ledger) -> None:
        first = self.started(ledger)
        assert (first.status, first.hop, first.owner, first.attempts) == (ChainStatus.RUNNING, 0, None, 0)
        again, created = ledger.start("c", progress=P1, event={"other": 2}, now=200.0)
        assert not created
        assert again.progress == P0 and again.event == {"e": 1}
        assert ledger.get("missing") is None

    def test_claim_counts_attempts_and_allows_the_same_owner_again(self, ledger: Ledger) -> None:
        self.started(ledger)
        r = ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        assert (r.owner, r.attempts) == ("r1", 1)
        r = ledger.claim(
            "c", hop=0, owner="r1", now=102.0, lease_until=200.0
        )  # Lambda retry: same request id
        assert r.attempts == 2

    def test_claim_by_another_owner_waits_for_the_lease(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        with pytest.raises(LedgerConflict) as info:
            ledger.claim("c", hop=0, owner="r2", now=150.0, lease_until=300.0)
        assert _current(info).owner == "r1"
        r = ledger.claim("c", hop=0, owner="r2", now=200.0, lease_until=300.0)
        assert r.owner == "r2"

    def test_claim_of_the_wrong_hop_or_a_missing_chain_conflicts(self, ledger: Ledger) -> None:
        self.started(ledger)
        with pytest.raises(LedgerConflict) as info:
            ledger.claim("c", hop=1, owner="r1", now=101.0, lease_until=200.0)
        assert _current(info).hop == 0
        with pytest.raises(LedgerConflict) as info:
            ledger.claim("nope", hop=0, owner="r1", now=101.0, lease_until=200.0)
        assert info.value.current is None

    def test_checkpoint_hand_off_and_finish_are_fenced_on_owner_and_hop(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        with pytest.raises(LostLeaseError):
            ledger.checkpoint("c", hop=0, owner="r2", progress=P1, now=102.0, lease_until=200.0)
        r = ledger.checkpoint("c", hop=0, owner="r1", progress=P1, now=102.0, lease_until=250.0)
        assert (r.progress, r.lease_until) == (P1, 250.0)
        with pytest.raises(LostLeaseError):
            ledger.hand_off("c", hop=0, owner="r2", progress=P1, now=103.0)
        r = ledger.hand_off("c", hop=0, owner="r1", progress=P1, now=103.0)
        assert (r.hop, r.owner, r.attempts, r.handed_off_by) == (1, None, 0, "r1")
        with pytest.raises(LostLeaseError):  # the old owner cannot write on the next hop
            ledger.checkpoint("c", hop=0, owner="r1", progress=P0, now=104.0, lease_until=300.0)
        ledger.claim("c", hop=1, owner="r3", now=105.0, lease_until=300.0)
        with pytest.raises(LostLeaseError):
            ledger.finish("c", hop=1, owner="r1", progress=P1, result={"x": 1}, now=106.0)
        r = ledger.finish("c", hop=1, owner="r3", progress=P1, result={"x": 1}, now=106.0)
        assert (r.status, r.result) == (ChainStatus.SUCCEEDED, {"x": 1})
        with pytest.raises(LedgerConflict):
            ledger.claim("c", hop=1, owner="r3", now=107.0, lease_until=300.0)

    def test_fail_keeps_the_last_committed_progress(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        ledger.checkpoint("c", hop=0, owner="r1", progress=P1, now=102.0, lease_until=200.0)
        with pytest.raises(LedgerConflict):  # another live owner holds the hop
            ledger.fail("c", hop=0, owner="r2", error="boom", now=150.0)
        r = ledger.fail("c", hop=0, owner="r1", error="boom", now=150.0)
        assert (r.status, r.error, r.progress) == (ChainStatus.FAILED, "boom", P1)

    def test_an_abandoned_hop_can_be_failed_once_its_lease_expired(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        r = ledger.fail("c", hop=0, owner="someone-else", error="retries exhausted", now=201.0)
        assert r.status is ChainStatus.FAILED

    def test_cancel_stops_every_later_transition(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        assert ledger.cancel("c", now=102.0).status is ChainStatus.CANCELLED
        with pytest.raises(LostLeaseError):
            ledger.checkpoint("c", hop=0, owner="r1", progress=P1, now=103.0, lease_until=200.0)
        with pytest.raises(LostLeaseError):
            ledger.hand_off("c", hop=0, owner="r1", progress=P1, now=103.0)
        with pytest.raises(LedgerConflict):
            ledger.claim("c", hop=0, owner="r1", now=103.0, lease_until=200.0)
        with pytest.raises(LedgerConflict):
            ledger.cancel("c", now=104.0)

    def test_join_counts_each_part_once_while_running(self, ledger: Ledger) -> None:
        self.started(ledger, "job")
        assert _get(ledger, "job").joined == ()
        assert ledger.join("job", part="job/1", now=101.0).joined == ("job/1",)
        assert ledger.join("job", part="job/0", now=102.0).joined == ("job/0", "job/1")
        again = ledger.join("job", part="job/1", now=103.0)  # a duplicate delivery counts once
        assert again.joined == ("job/0", "job/1")
        assert _get(ledger, "job").joined == ("job/0", "job/1")
        ledger.claim("job", hop=0, owner="r1", now=104.0, lease_until=200.0)  # joins need no ownership
        assert len(ledger.join("job", part="job/2", now=105.0).joined) == 3
        ledger.cancel("job", now=106.0)
        with pytest.raises(LedgerConflict) as refused:
            ledger.join("job", part="job/3", now=107.0)
        assert _current(refused).status is ChainStatus.CANCELLED
        with pytest.raises(LedgerConflict):
            ledger.join("missing", part="x", now=107.0)

    def test_abort_ends_a_running_job_whoever_holds_it_unless_the_part_joined(self, ledger: Ledger) -> None:
        self.started(ledger, "job")
        ledger.join("job", part="0", now=101.0)
        ledger.claim("job", hop=0, owner="r1", now=102.0, lease_until=200.0)  # held by a live invocation
        with pytest.raises(LedgerConflict):  # a joined shard succeeded: its stale failure ends nothing
            ledger.abort("job", part="0", status=ChainStatus.FAILED, error="stale", now=103.0)
        r = ledger.abort("job", part="1", status=ChainStatus.FAILED, error="shard 1 failed", now=104.0)
        assert (r.status, r.error, r.owner, r.hop) == (ChainStatus.FAILED, "shard 1 failed", None, 0)
        assert r.expires_at is not None and r.expires_at > 104.0
        assert r.progress == P0 and _get(ledger, "job").status is ChainStatus.FAILED
        with pytest.raises(LostLeaseError):  # the holder is fenced off at its next write
            ledger.hand_off("job", hop=0, owner="r1", progress=P1, now=105.0)
        with pytest.raises(LedgerConflict) as refused:  # only a RUNNING job is aborted, once
            ledger.abort("job", part="2", status=ChainStatus.CANCELLED, error="x", now=106.0)
        assert _current(refused).error == "shard 1 failed"
        self.started(ledger, "other")  # nothing joined yet
        r = ledger.abort(
            "other", part="3", status=ChainStatus.CANCELLED, error="shard 3 was cancelled", now=107.0
        )
        assert (r.status, r.error) == (ChainStatus.CANCELLED, "shard 3 was cancelled")
        with pytest.raises(LedgerConflict):
            ledger.abort("missing", part="0", status=ChainStatus.FAILED, error="x", now=108.0)
        with pytest.raises(ValueError):
            ledger.abort("job", part="0", status=ChainStatus.SUCCEEDED, error="x", now=108.0)

    def test_a_job_aborted_by_a_shard_is_resumed_like_any_failed_chain(self, ledger: Ledger) -> None:
        self.started(ledger, "job")
        ledger.abort("job", part="1", status=ChainStatus.FAILED, error="shard 1 failed", now=101.0)
        r = ledger.resume("job", now=102.0)
        assert (r.status, r.hop, r.error, r.expires_at) == (ChainStatus.RUNNING, 1, None, None)

    def test_stored_progress_does_not_alias_the_callers_objects(self, ledger: Ledger) -> None:
        progress: dict[str, Any] = {"state": {"items": [1]}, "chunks": 0, "pins": {}}
        ledger.start("c", progress=progress, event={}, now=1.0)
        progress["state"]["items"].append(2)
        assert _get(ledger, "c").progress["state"]["items"] == [1]

    def test_list_filters_by_status_newest_first(self, ledger: Ledger) -> None:
        for i, chain in enumerate(("a", "b", "c")):
            ledger.start(chain, progress=P0, event={}, now=100.0 + i)
        ledger.claim("b", hop=0, owner="r", now=110.0, lease_until=200.0)
        ledger.finish("b", hop=0, owner="r", progress=P1, result=1, now=111.0)
        assert [r.chain_id for r in ledger.list()] == ["b", "c", "a"]
        assert [r.chain_id for r in ledger.list(status=ChainStatus.RUNNING)] == ["c", "a"]
        assert [r.chain_id for r in ledger.list(status=ChainStatus.SUCCEEDED)] == ["b"]
        assert len(ledger.list(limit=1)) == 1

    def test_the_function_is_recorded_at_start_for_resume(self, ledger: Ledger) -> None:
        record, _ = ledger.start(
            "c", progress=P0, event={}, now=1.0, function="arn:aws:lambda:r:1:function:f:7"
        )
        assert _get(ledger, "c").function == record.function == "arn:aws:lambda:r:1:function:f:7"

    def test_resume_continues_a_failed_chain_at_a_new_fencing_hop(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        ledger.checkpoint("c", hop=0, owner="r1", progress=P1, now=102.0, lease_until=200.0)
        ledger.fail("c", hop=0, owner="r1", error="boom", now=103.0)
        r = ledger.resume("c", now=104.0)
        assert (r.status, r.hop, r.owner, r.error, r.progress) == (ChainStatus.RUNNING, 1, None, None, P1)
        with pytest.raises(LedgerConflict):  # a straggler of the old hop is stale
            ledger.claim("c", hop=0, owner="r1", now=105.0, lease_until=300.0)
        assert ledger.claim("c", hop=1, owner="r9", now=105.0, lease_until=300.0).owner == "r9"

    def test_resume_takes_a_stalled_running_chain_but_not_a_live_one(self, ledger: Ledger) -> None:
        self.started(ledger)
        with pytest.raises(LedgerConflict):  # unowned, but not idle long enough to call it stalled
            ledger.resume("c", now=150.0, stall_after=900.0)
        assert ledger.resume("c", now=1001.0, stall_after=900.0).hop == 1
        ledger.claim("c", hop=1, owner="r1", now=1002.0, lease_until=2000.0)
        with pytest.raises(LedgerConflict):  # owned and its lease is live
            ledger.resume("c", now=1500.0)
        assert ledger.resume("c", now=2000.0).hop == 2  # the lease expired: the owner is gone
        ledger.claim("c", hop=2, owner="r2", now=2001.0, lease_until=3000.0)
        ledger.finish("c", hop=2, owner="r2", progress=P1, result=1, now=2002.0)
        with pytest.raises(LedgerConflict):  # a finished chain is not resumed
            ledger.resume("c", now=9999.0)
        with pytest.raises(LedgerConflict):
            ledger.resume("missing", now=1.0)

    def test_a_finished_chain_keeps_its_id_until_its_retention_expires(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        done = ledger.finish("c", hop=0, owner="r1", progress=P1, result={"x": 1}, now=102.0)
        assert done.expires_at is not None and done.expires_at > 102.0
        again, created = ledger.start("c", progress=P0, event={"e": 2}, now=done.expires_at - 1)
        assert not created and again.result == {"x": 1}
        fresh, created = ledger.start("c", progress=P0, event={"e": 2}, now=done.expires_at + 1)
        assert created and fresh.status is ChainStatus.RUNNING and fresh.event == {"e": 2}

    def test_hand_off_commits_the_progress_it_is_given(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        fresh = {"state": {"n": 42}, "chunks": 9, "pins": {}}
        assert ledger.hand_off("c", hop=0, owner="r1", progress=fresh, now=102.0).progress == fresh
        assert _get(ledger, "c").progress == fresh

    def test_leases_and_stalls_expire_at_their_exact_edge(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        with pytest.raises(LedgerConflict):
            ledger.claim("c", hop=0, owner="r2", now=199.999, lease_until=300.0)
        assert ledger.claim("c", hop=0, owner="r2", now=200.0, lease_until=300.0).owner == "r2"

    def test_resend_acts_only_on_a_quiet_hop_and_counts_per_hop(self, ledger: Ledger) -> None:
        self.started(ledger)  # updated at 100, unowned
        with pytest.raises(LedgerConflict):  # written after quiet_since: not dead yet
            ledger.resend("c", hop=0, resends=0, quiet_since=99.0, now=400.0)
        with pytest.raises(LedgerConflict):  # another hop
            ledger.resend("c", hop=1, resends=0, quiet_since=100.0, now=400.0)
        r = ledger.resend("c", hop=0, resends=0, quiet_since=100.0, now=400.0)
        assert (r.resends_of(0), r.resends_of(1), r.updated_at, r.status) == (
            1,
            0,
            400.0,
            ChainStatus.RUNNING,
        )
        assert _get(ledger, "c").resends_of(0) == 1
        with pytest.raises(LedgerConflict) as info:  # the resend itself is a sign of life
            ledger.resend("c", hop=0, resends=1, quiet_since=399.0, now=700.0)
        assert _current(info).resends_of(0) == 1
        with pytest.raises(LedgerConflict):  # a stale count: another record resent it first
            ledger.resend("c", hop=0, resends=0, quiet_since=400.0, now=700.0)
        assert ledger.resend("c", hop=0, resends=1, quiet_since=400.0, now=700.0).resends_of(0) == 2

    def test_resend_waits_for_a_claims_lease_and_restarts_at_the_next_hop(self, ledger: Ledger) -> None:
        self.started(ledger)
        ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.0)
        with pytest.raises(LedgerConflict):  # the lease ran until 200: alive after quiet_since
            ledger.resend("c", hop=0, resends=0, quiet_since=150.0, now=500.0)
        assert ledger.resend("c", hop=0, resends=0, quiet_since=200.0, now=500.0).resends_of(0) == 1
        ledger.claim("c", hop=0, owner="r2", now=501.0, lease_until=600.0)
        r = ledger.hand_off("c", hop=0, owner="r2", progress=P1, now=502.0)
        assert r.resends_of(1) == 0
        r = ledger.resend("c", hop=1, resends=0, quiet_since=502.0, now=900.0)
        assert (r.resends_of(0), r.resends_of(1)) == (0, 1)
        ledger.cancel("c", now=901.0)
        with pytest.raises(LedgerConflict):  # ended chains are not resent
            ledger.resend("c", hop=1, resends=1, quiet_since=901.0, now=1200.0)
        with pytest.raises(LedgerConflict):
            ledger.resend("missing", hop=0, resends=0, quiet_since=1.0, now=2.0)
