"""The runner's behaviour, driven through the simulator in virtual time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recurse_lambda import (
    ENVELOPE_KEY,
    ChainFailed,
    ChainStatus,
    InMemoryLedger,
    InvokeThrottled,
    ObjectChangedError,
    SystemClock,
    WarmState,
    World,
    after_chunks,
    recursive,
)
from recurse_lambda.local import FakeContext, FaultPlan, MemorySpillStore, Simulator
from tests.conftest import Counter, counting_handler, expected, simulate


def test_a_plain_function_is_a_one_hop_chain_and_the_handler_stays_callable():
    @recursive
    def handler(event, state, run):
        return {"echo": event["x"], "chain": run.chain_id}

    ctx = FakeContext(clock=SystemClock(), deadline=SystemClock().now() + 5, aws_request_id="req-1")
    out = handler({"x": 42}, ctx)
    assert out["status"] == "SUCCEEDED" and out["result"] == {"echo": 42, "chain": "req-1"}
    assert handler.__name__ == "handler"


def test_a_long_chain_gives_the_fault_free_result_with_high_utilisation(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock)
    report = sim.run({"n": 1000})
    assert report.status == "SUCCEEDED"
    assert report.result == expected(1000)
    assert report.hops == 11 and report.invocations == 11
    assert report.timeouts == 0 and report.utilization > 0.98
    first = report.first_response
    assert (first["status"], first["hop"], first["outcome"]) == ("RUNNING", 0, "handed_off")
    assert first["chain_id"] == report.chain_id


def test_the_next_hop_targets_the_running_version(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, function_version="7")
    sim.run({"n": 300})
    assert sim.invoke_targets and all(t.endswith("function:recurse-lambda-sim:7") for t in sim.invoke_targets)


class ThrottlingInvoker:
    def __init__(self, clock, throttles: int, retry_after: float | None):
        self.clock, self.left, self.retry_after = clock, throttles, retry_after
        self.calls: list[tuple[float, str]] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.calls.append((self.clock.now(), function))
        if self.left:
            self.left -= 1
            raise InvokeThrottled("Rate Exceeded.", self.retry_after)


def invoke_once(handler, clock, invoker, *, timeout=10.0, ledger=None, environ=None, event=None):
    ctx = FakeContext(clock=clock, deadline=clock.now() + timeout, aws_request_id="r-1")
    world = World(clock=clock, invoker=invoker, warm=WarmState(), ledger=ledger, environ=environ or {})
    return handler.handle(event or {"n": 1000}, ctx, world)


def test_throttled_invokes_are_retried_honouring_retry_after(clock):
    invoker = ThrottlingInvoker(clock, throttles=2, retry_after=0.3)
    out = invoke_once(counting_handler(clock, policy=after_chunks(10)), clock, invoker)
    assert out["outcome"] == "handed_off"
    times = [t for t, _ in invoker.calls]
    assert len(times) == 3
    assert times[1] - times[0] == pytest.approx(0.3) and times[2] - times[1] == pytest.approx(0.3)


def test_a_throttle_that_outlasts_the_invocation_raises_for_lambda_to_retry(clock):
    invoker = ThrottlingInvoker(clock, throttles=1000, retry_after=1.0)
    with pytest.raises(Exception, match="throttled until the invocation's deadline"):
        invoke_once(counting_handler(clock), clock, invoker)


def test_large_state_spills_and_the_chain_completes(clock):
    big = "x" * 5000

    @recursive(state=Counter, max_payload_bytes=2000)
    def handler(event, state, run):
        while state.i < 300:
            clock.advance(0.1)
            state.i += 1
            yield
        return {"i": state.i, "event_len": len(event["blob"])}

    spill = MemorySpillStore()
    report = simulate(handler, timeout=10, clock=clock, spill=spill).run({"blob": big})
    assert report.result == {"i": 300, "event_len": 5000}
    assert len(spill.objects) == report.hops - 1


def test_oversized_envelope_without_spill_fails_before_any_invoke(clock):
    @recursive(state=Counter, max_payload_bytes=2000)
    def handler(event, state, run):
        while True:
            clock.advance(0.1)
            yield

    sim = simulate(handler, timeout=10, clock=clock)
    report = sim.run({"blob": "x" * 5000})
    assert report.status == "FAILED" and "no spill bucket" in report.error
    assert sim.invoke_targets == [] and report.invocations == 1


def test_signed_chain_runs_and_a_forged_envelope_is_rejected_processing_nothing(clock):
    calls: list[int] = []

    @recursive(state=Counter)
    def handler(event, state, run):
        calls.append(run.hop)
        while state.i < 200:
            clock.advance(0.1)
            state.i += 1
            yield
        return state.i

    env = {"RECURSE_LAMBDA_SIGNING_KEY": "s3cret"}
    report = simulate(handler, timeout=10, clock=clock, environ=env).run({})
    assert report.result == 200 and report.hops > 1
    calls.clear()
    forged = {ENVELOPE_KEY: {"v": 1, "chain_id": report.chain_id, "hop": 1, "started_at": 0, "progress": {}}}
    sim = simulate(handler, timeout=10, clock=clock, environ=env)
    bad = sim.run(forged)
    assert calls == [] and sim.commits == []
    assert bad.invocations == 1  # rejected once, not retried: a retry would be rejected the same way
    assert bad.rows[0].outcome == "rejected"


def test_an_authentic_envelope_whose_spilled_body_is_gone_fails_its_chain(clock):
    @recursive(state=Counter, max_payload_bytes=2000)
    def handler(event, state, run):
        while True:
            clock.advance(0.1)
            yield

    spill = MemorySpillStore()
    sim = simulate(handler, timeout=10, clock=clock, spill=spill)
    original_put = spill.put

    def put_then_lose(key, body):
        ref = original_put(key, body)
        del spill.objects[key]  # the lifecycle rule expired it before the next hop read it
        return ref

    spill.put = put_then_lose
    report = sim.run({"blob": "x" * 5000})
    assert report.status == "FAILED" and "spilled envelope body" in report.error
    assert [r.outcome for r in report.rows] == ["handed_off", "failed"]


def test_a_lambda_retry_resumes_from_the_last_checkpoint_and_loses_bounded_work(clock):
    log: list[tuple[str, int]] = []
    handler = counting_handler(clock, log, checkpoint_every_chunks=10)
    # Invocation 1 crashes at a random moment mid-work; Lambda retries it with the same request id.
    sim = simulate(handler, timeout=10, clock=clock, faults=FaultPlan(crash_at=(("safe_point", 1),)))
    report = sim.run({"n": 200})
    assert report.result == expected(200)
    assert [r.kind for r in report.rows[:2]] == ["first", "retry"]
    assert report.rows[0].outcome == "crash" and report.rows[1].request_id == report.rows[0].request_id
    redone = len(log) - 200
    assert 0 < redone <= 10


def test_idempotency_keys_are_stable_across_retries_and_crashes(clock):
    log: list[tuple[str, int]] = []
    handler = counting_handler(clock, log, checkpoint_every_chunks=7)
    faults = FaultPlan(crash=0.3, duplicate=0.5, error=0.2)
    succeeded = redone = 0
    for seed in range(5):
        log.clear()
        report = simulate(handler, timeout=5, clock=clock, faults=faults, seed=seed).run({"n": 400})
        seen: dict[str, int] = {}
        for key, i in log:
            assert seen.setdefault(key, i) == i
        if report.status == "SUCCEEDED":
            succeeded += 1
            assert report.result == expected(400)
            assert len(seen) == 400
            redone += len(log) - 400
    assert succeeded >= 3 and redone > 0


def test_duplicate_deliveries_do_no_work(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, faults=FaultPlan(duplicate=1.0))
    report = sim.run({"n": 500})
    assert report.result == expected(500)
    dups = [r for r in report.rows if r.kind == "duplicate"]
    assert len(dups) == report.hops
    assert all(r.chunks == 0 and r.outcome in ("duplicate", "stale") for r in dups)


def test_a_hand_off_lost_between_ledger_and_invoke_is_sent_again_by_the_retry(clock):
    sim = simulate(
        counting_handler(clock), timeout=10, clock=clock, faults=FaultPlan(crash_at=(("before_invoke", 1),))
    )
    report = sim.run({"n": 300})
    assert report.result == expected(300)
    assert [r.outcome for r in report.rows[:2]] == ["crash", "resent"]


def test_after_the_last_attempt_the_chain_fails_with_its_last_committed_state(clock):
    @recursive(state=Counter, checkpoint_every_chunks=5)
    def handler(event, state, run):
        while True:
            clock.advance(0.1)
            state.i += 1
            if state.i == 13:
                raise RuntimeError("bad record at 13")
            yield

    report = simulate(handler, timeout=10, clock=clock).run({})
    assert report.status == "FAILED" and "bad record at 13" in report.error
    # The first attempt committed every 5 chunks; its retry commits after every chunk, up to the bad record.
    assert report.last_state == {"i": 12, "total": 0}
    assert [r.kind for r in report.rows] == ["first", "retry", "retry"]
    assert [r.outcome for r in report.rows] == ["error", "error", "failed"]
    assert report.destination == []  # recorded by the library itself, so Lambda does not keep retrying


def test_a_permanent_error_fails_the_chain_at_once(clock):
    @recursive(state=Counter)
    def handler(event, state, run):
        raise ObjectChangedError("b", "k", '"old"', '"new"')
        yield

    report = simulate(handler, timeout=10, clock=clock).run({})
    assert report.status == "FAILED" and report.invocations == 1
    assert 'pinned ETag "old", now "new"' in report.error


def test_max_hops_fails_the_chain_cleanly_keeping_its_state(clock):
    sim = simulate(counting_handler(clock, max_hops=3), timeout=10, clock=clock)
    report = sim.run({"n": 10_000})
    assert report.status == "FAILED" and "max_hops=3" in report.error
    assert report.invocations == 3 and report.last_state["i"] == sum(r.chunks for r in report.rows)


def test_max_duration_fails_the_chain_cleanly(clock):
    sim = simulate(counting_handler(clock, max_duration=25.0), timeout=10, clock=clock)
    report = sim.run({"n": 10_000})
    assert report.status == "FAILED" and "max_duration=25" in report.error


def test_a_chunk_that_completed_fits_even_with_little_room_left_for_the_hand_off(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock)
    report = sim.run({"n": 5, "chunk": 9.5})  # it completed in an invocation, so it fits in one: a hop each
    assert report.result == expected(5) and report.timeouts == 0 and report.hops == 6
    big = simulate(counting_handler(clock), timeout=10, clock=clock).run({"n": 5, "chunk": 6.0})
    assert (
        big.result == expected(5) and big.hops == 6
    )  # fits once, not twice: one chunk per hop, then the return


def test_a_first_chunk_longer_than_the_invocation_ends_in_chunk_too_large_not_retries_exhausted(clock):
    # Each attempt is killed at its deadline and Lambda re-initialises the runtime (memory lost, /tmp kept):
    # the marker left in /tmp tells the last attempt why, so the chain fails with the right error.
    sim = simulate(counting_handler(clock), timeout=10, clock=clock)
    report = sim.run({"n": 5, "chunk": 30.0})
    assert report.status == "FAILED" and "ChunkTooLargeError" in report.error
    assert "did not reach a safe point" in report.error
    assert [r.outcome for r in report.rows] == ["timeout", "timeout", "failed"]
    stateless = simulate(counting_handler(clock), timeout=10, clock=clock, ledger=None).run(
        {"n": 5, "chunk": 30.0}
    )
    assert [r.outcome for r in stateless.rows] == ["timeout", "timeout", "failed"]  # counted by the marker


def test_timeouts_kill_and_nothing_is_committed_after_a_deadline(clock):
    faults = FaultPlan(hang=0.4)
    sim = simulate(
        counting_handler(clock, checkpoint_every_chunks=3), timeout=5, clock=clock, faults=faults, seed=1
    )
    report = sim.run({"n": 300})
    assert report.timeouts > 0
    for row in report.rows:
        if row.outcome == "timeout":
            assert row.billed == pytest.approx(5.0)
    for commit in sim.commits:
        row = next(r for r in report.rows if r.start <= commit.at <= r.end)
        assert commit.at <= row.start + 5.0


def test_recursive_loop_detection_stops_the_chain_and_explains_it(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, recursion="Terminate")
    report = sim.run({"n": 10_000})
    assert report.status == "FAILED" and "RecursiveLoop" in report.error
    assert sum(1 for r in report.rows if r.kind != "destination") == 16
    assert report.destination[0]["requestContext"]["condition"] == "RecursiveInvocationException"


def test_recycled_containers_start_cold_and_the_result_holds(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, faults=FaultPlan(recycle=1.0))
    report = sim.run({"n": 500})
    assert report.result == expected(500)
    assert all(r.cold for r in report.rows)
    assert len({r.container for r in report.rows}) == report.invocations


def test_cancel_stops_the_chain_at_its_next_commit(clock):
    ledger = InMemoryLedger()

    @recursive(state=Counter)
    def handler(event, state, run):
        while True:
            clock.advance(0.1)
            state.i += 1
            if run.hop == 2 and ledger.get(run.chain_id).status == "RUNNING":
                ledger.cancel(run.chain_id, now=0.0)  # an operator cancels the chain mid-hop
            yield

    report = simulate(handler, timeout=10, clock=clock, ledger=ledger).run({})
    assert report.status == "CANCELLED"
    assert report.rows[-1].hop == 2 and report.rows[-1].outcome == "lost_lease"


def test_stateless_mode_works_without_a_ledger_but_duplicates_fork(clock):
    report = simulate(counting_handler(clock), timeout=10, clock=clock, ledger=None).run({"n": 300})
    assert (report.status, report.result) == ("SUCCEEDED", expected(300))
    forked = simulate(
        counting_handler(clock), timeout=10, clock=clock, ledger=None, faults=FaultPlan(duplicate=1.0)
    )
    fork_report = forked.run({"n": 300})
    assert sum(1 for r in fork_report.rows if r.outcome == "succeeded") > 1  # the classic pattern forks


def test_a_business_key_starts_one_chain_per_job(clock):
    ledger = InMemoryLedger()
    handler = counting_handler(clock, chain_id=lambda e: f"job-{e['job']}")
    first = simulate(handler, timeout=10, clock=clock, ledger=ledger).run({"n": 300, "job": 7})
    again = simulate(handler, timeout=10, clock=clock, ledger=ledger).run({"n": 300, "job": 7})
    assert first.chain_id == again.chain_id == "job-7"
    assert again.invocations == 1
    assert again.first_response["status"] == "SUCCEEDED" and again.first_response["result"] == expected(300)
    assert len(ledger) == 1


def test_a_first_hop_that_never_succeeds_is_recorded_failed_from_the_destination_record(clock):
    faults = FaultPlan(crash_at=tuple(("after_claim", i) for i in range(1, 30)))
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, faults=faults)
    report = sim.run({"n": 300})
    assert report.status == "FAILED" and "RetriesExhausted" in report.error
    # The record waits until the hop is dead, resends it once, and fails the chain when that is given up too.
    kinds = ["first", "retry", "retry", "destination", "destination", "destination"]
    assert [r.kind for r in report.rows] == [*kinds, "hand_off", "retry", "retry", *kinds[3:]]
    outcomes = ["error", "error", "resent", "error", "error", "failed"]
    assert [r.outcome for r in report.rows if r.kind == "destination"] == outcomes


def test_a_first_hop_lost_three_times_is_resent_from_the_destination_record_and_completes(clock):
    faults = FaultPlan(crash_at=(("after_claim", 1), ("after_claim", 2), ("after_claim", 3)))
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, faults=faults)
    report = sim.run({"n": 300})
    assert (report.status, report.result) == ("SUCCEEDED", expected(300))
    assert [r.outcome for r in report.rows if r.kind == "destination"] == ["error", "error", "resent"]


def test_initial_state_from_the_event_and_its_type_is_checked(clock):
    handler = counting_handler(clock, initial_state=lambda e: Counter(i=e["from"]))
    report = simulate(handler, timeout=10, clock=clock).run({"n": 10, "from": 5})
    assert report.result["i"] == 10 and report.result["total"] == sum(i * i for i in range(5, 10))
    wrong = counting_handler(clock, initial_state=lambda e: {"i": 0})
    report = simulate(wrong, timeout=10, clock=clock).run({"n": 3})
    assert report.rows[0].outcome == "rejected" and report.invocations == 1
    assert "initial_state returned dict" in report.first_response["error"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state": dict}, "pydantic model"),
        ({"max_hops": 0}, "max_hops"),
        ({"max_attempts": 4}, "max_attempts"),
        ({"checkpoint_every_chunks": 0}, "checkpoint_every_chunks"),
        ({"policy": 3}, "policy"),
    ],
)
def test_bad_options_are_refused_at_decoration(options, message):
    with pytest.raises(Exception, match=message):
        recursive(**options)


def test_a_result_that_is_not_json_fails_the_chain_clearly(clock):
    @recursive
    def handler(event, state, run):
        return object()

    report = simulate(handler, timeout=10, clock=clock).run({})
    assert report.status == "FAILED" and "JSON-serialisable" in report.error


def test_the_response_payload_of_a_hand_off_is_a_valid_envelope(clock):
    invoker = ThrottlingInvoker(clock, throttles=0, retry_after=None)
    sent: list[bytes] = []
    invoker.invoke_async = lambda f, p: sent.append(p)  # type: ignore[method-assign]
    invoke_once(counting_handler(clock), clock, invoker, event={"n": 1000})
    body: dict[str, Any] = json.loads(sent[0])[ENVELOPE_KEY]
    assert body["hop"] == 1 and body["event"] == {"n": 1000} and body["progress"]["state"]["i"] > 0
    assert body["progress"]["chunks"] == body["progress"]["state"]["i"]
    assert ChainStatus.RUNNING == "RUNNING"


def test_the_simulator_follows_the_handlers_own_ledger_configuration(clock):
    stateless = counting_handler(clock)
    assert Simulator(stateless, clock=clock).ledger is None
    ledger = InMemoryLedger()
    with_ledger = counting_handler(clock, ledger=ledger)
    report = Simulator(with_ledger, timeout=10, clock=clock).run({"n": 200})
    assert report.result == expected(200) and ledger.get(report.chain_id).status == "SUCCEEDED"


def test_raise_for_status_carries_the_error_and_the_last_state(clock):
    report = simulate(counting_handler(clock, max_hops=2), timeout=10, clock=clock).run({"n": 10_000})
    with pytest.raises(ChainFailed) as info:
        report.raise_for_status()
    assert "max_hops=2" in info.value.error and info.value.last_state["i"] > 0
    ok = simulate(counting_handler(clock), timeout=10, clock=clock).run({"n": 10})
    assert ok.raise_for_status() is ok


def test_in_hop_checkpoints_come_at_least_every_quarter_of_the_budget(clock):
    sim = simulate(counting_handler(clock), timeout=10, clock=clock)  # default: every 60 s, capped to 2.5 s
    report = sim.run({"n": 300})
    assert report.result == expected(300)
    per_hop = [c for c in sim.commits if c.op == "checkpoint" and c.hop == 0]
    assert len(per_hop) == 3  # at 2.5, 5 and 7.5 s of a 10-second invocation


def test_a_first_event_that_chain_id_cannot_key_is_rejected_once(clock):
    handler = counting_handler(clock, chain_id=lambda e: e["job"])
    report = simulate(handler, timeout=10, clock=clock).run({"n": 3})  # no "job"
    assert report.invocations == 1 and report.rows[0].outcome == "rejected"
    assert report.status == "REJECTED" and "KeyError" in report.error
    assert "KeyError" in report.first_response["error"]


def test_the_generator_is_closed_before_the_hand_off_and_the_close_counts_in_its_cost(clock):
    closed_at: list[float] = []

    @recursive(state=Counter, ledger=InMemoryLedger())
    def handler(event, state, run):
        try:
            while True:
                clock.advance(0.1)
                state.i += 1
                yield
        finally:
            clock.advance(0.5)  # e.g. a reader waiting for its prefetch thread
            closed_at.append(clock.now())

    sim = Simulator(handler, timeout=10, clock=clock, invoke_latency=0.05, max_invocations=3)
    with pytest.raises(RuntimeError, match="max_invocations"):
        sim.run({})
    assert len(closed_at) >= 2
    assert handler.warm.handoff.measured is False  # the simulator's containers have their own warm state
    rows = sorted(sim._containers, key=lambda c: c.number)
    assert rows[0].warm.handoff.estimate == pytest.approx(0.55)  # close + invoke, measured together


def test_a_stateless_failure_reports_its_error(clock):
    sim = simulate(counting_handler(clock, max_hops=2), timeout=10, clock=clock, ledger=None)
    report = sim.run({"n": 10_000})
    assert report.status == "FAILED" and "max_hops=2" in report.error


def test_each_simulated_container_gets_the_cache_the_factory_builds_and_a_reset_rebuilds_it(clock, tmp_path):
    from recurse_lambda.s3 import S3Cache

    built: list[str] = []

    def cache(tmp_dir: str) -> S3Cache:
        built.append(tmp_dir)
        return S3Cache(tmp_dir=tmp_dir, clock=clock)

    faults = FaultPlan(crash_at=(("safe_point", 1),))
    sim = simulate(counting_handler(clock), timeout=10, clock=clock, cache=cache, faults=faults)
    report = sim.run({"n": 200})
    assert report.result == expected(200)
    assert len(built) == 2 and built[0] == built[1]  # the crash reset the runtime: same /tmp, new memory
    assert sim._containers[0].warm.cache.stats.misses == 0


def test_a_ledger_that_fails_at_claim_time_makes_lambda_retry_the_delivery(clock):
    from recurse_lambda import LedgerError

    class Unreachable(InMemoryLedger):
        failures = 1

        def claim(self, *args, **kwargs):
            if self.failures:
                self.failures -= 1
                raise LedgerError("throttled", code="ProvisionedThroughputExceededException")
            return super().claim(*args, **kwargs)

    report = simulate(counting_handler(clock), timeout=10, clock=clock, ledger=Unreachable()).run({"n": 50})
    assert report.result == expected(50)
    assert [r.outcome for r in report.rows[:2]] == ["error", "succeeded"] and report.rows[1].kind == "retry"


def test_a_transient_error_in_the_key_function_is_retried_not_rejected(clock):
    from recurse_lambda import S3Error

    calls: list[int] = []

    def key(event):
        calls.append(1)
        if len(calls) == 1:
            raise S3Error("cannot inspect s3://my-bucket/k: connection reset")  # transient
        return "job-1"

    report = simulate(counting_handler(clock, chain_id=key), timeout=10, clock=clock).run({"n": 20})
    assert report.result == expected(20) and report.chain_id == "job-1"
    assert [r.kind for r in report.rows[:2]] == ["first", "retry"]
