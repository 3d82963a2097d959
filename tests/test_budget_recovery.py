"""Short timeouts and slow chunks recover instead of repeating their mistakes (issue 9, items 12-14).

Everything runs in the simulator, in virtual time. A timeout resets the simulated runtime (memory lost, /tmp
kept), as Lambda does, so what a chain learned must travel in its committed progress.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from pydantic import BaseModel

from recurse_lambda import (
    BudgetState,
    ChunkTimings,
    ChunkTooLargeError,
    HandOffTimings,
    Run,
    predictive,
    recursive,
)
from recurse_lambda.local import Simulator, VirtualClock
from tests.conftest import counting_handler, expected, simulate


class Position(BaseModel):
    i: int = 0
    total: int = 0


def uneven_handler(clock: VirtualClock, durations: dict[int, float], default: float, **options: Any):
    """Chunk ``i`` takes ``durations.get(i, default)`` virtual seconds."""

    @recursive(state=Position, **options)
    def handler(event: dict[str, Any], state: Position, run: Run) -> Generator[None, None, int]:
        while state.i < event["n"]:
            clock.advance(durations.get(state.i, default))
            state.total += state.i
            state.i += 1
            yield
        return state.total

    return handler


# ---------------------------------------------------------------------- item 12: slow hand-offs


SCENARIOS = [  # (timeout, ledger latency, invoke latency, chunk seconds), each timed out again and again before
    (3.0, 0.03, 0.3, 0.003),
    (3.0, 0.05, 0.3, 0.003),
    (1.0, 0.1, 0.1, 0.01),
    (1.0, 0.1, 0.1, 0.05),
    (10.0, 0.2, 0.8, 0.01),
    (10.0, 0.2, 0.8, 0.05),
]


@pytest.mark.parametrize(("timeout", "ledger_latency", "invoke_latency", "chunk"), SCENARIOS)
def test_a_slow_hand_off_times_out_at_most_once(timeout, ledger_latency, invoke_latency, chunk):
    clock = VirtualClock()
    n = int(6 * timeout / chunk)  # about six invocations of work
    sim = simulate(
        counting_handler(clock),
        timeout=timeout,
        clock=clock,
        ledger_latency=ledger_latency,
        invoke_latency=invoke_latency,
    )
    report = sim.run({"n": n, "chunk": chunk})
    assert report.status == "SUCCEEDED", report.timeline()
    assert report.result == expected(n)
    assert report.timeouts <= 1, report.timeline()


@pytest.mark.parametrize(("timeout", "ledger_latency", "invoke_latency"), [(3.0, 0.0, 0.3), (1.0, 0.1, 0.1)])
@pytest.mark.parametrize("chunk", [0.001, 0.01, 0.05, 0.1, 0.25])
def test_the_issue_scenarios_succeed_with_at_most_one_timeout(timeout, ledger_latency, invoke_latency, chunk):
    clock = VirtualClock()
    n = int(4 * timeout / chunk)
    sim = simulate(
        counting_handler(clock),
        timeout=timeout,
        clock=clock,
        ledger_latency=ledger_latency,
        invoke_latency=invoke_latency,
    )
    report = sim.run({"n": n, "chunk": chunk})
    assert report.status == "SUCCEEDED" and report.result == expected(n), report.timeline()
    assert report.timeouts <= 1, report.timeline()


def test_what_a_chain_learned_survives_the_runtime_reset_and_reaches_the_next_hop():
    # Hop 0's hand-off is killed while invoking (the runtime is reset: its measurements are gone). The retry
    # resends the committed hand-off, telling the next hop that the hand-off needed more than the time it had.
    clock = VirtualClock()
    sim = simulate(counting_handler(clock), timeout=10.0, clock=clock, ledger_latency=0.2, invoke_latency=0.8)
    report = sim.run({"n": 6000, "chunk": 0.01})
    assert [r.outcome for r in report.rows[:3]] == ["timeout", "resent", "handed_off"]
    assert report.timeouts == 1
    learned = sim.ledger.get(report.chain_id).progress["learned"]
    assert learned["timeouts"] == 1
    assert 0.9 < learned["handoff"] < 1.1  # measured by later hops: ledger write 0.2 + invoke 0.8
    assert 0 < learned["chunk_max"] <= 0.0101


def test_the_committed_summary_seeds_a_cold_runtime():
    # Every invocation gets a fresh container: nothing is learned in memory, everything comes from the ledger.
    from recurse_lambda.local import FaultPlan

    clock = VirtualClock()
    sim = simulate(
        counting_handler(clock),
        timeout=10.0,
        clock=clock,
        ledger_latency=0.2,
        invoke_latency=0.8,
        faults=FaultPlan(recycle=1.0),
    )
    report = sim.run({"n": 6000, "chunk": 0.01})
    assert report.status == "SUCCEEDED" and report.timeouts <= 1, report.timeline()
    assert all(r.cold for r in report.rows)


def test_a_retry_after_a_timeout_is_more_careful_than_the_attempt_that_timed_out():
    state = BudgetState(budget=10.0, remaining=1.5, timings=ChunkTimings(), handoff=HandOffTimings())
    state.timings.add(0.1)
    state.handoff.add(0.4)
    policy = predictive()  # reserve 1.5 × 0.4 + 0.1 = 0.7; 2 × 0.1 = 0.2 fits in 1.5 − 0.7
    assert policy(state) is False
    state.caution = 1  # one attempt of this hop failed: reserve 1.3, prediction 0.4 — no longer fits
    assert policy(state) is True


def test_a_retry_after_a_timeout_commits_after_every_chunk():
    clock = VirtualClock()
    handler = uneven_handler(clock, {13: 2.5}, 0.25)
    sim = simulate(handler, timeout=3.0, clock=clock)
    report = sim.run({"n": 30})
    assert report.status == "SUCCEEDED" and report.result == sum(range(30))
    retry = next(r for r in report.rows if r.kind == "retry")
    assert retry.outcome == "handed_off" and retry.chunks == 2  # the light chunk, then the heavy one
    commits = [c.op for c in sim.commits if retry.start <= c.at <= retry.end]
    assert commits == ["claim", "checkpoint", "hand_off"]  # a commit after the light chunk, before the heavy


# ---------------------------------------------------------------------- item 13: one heavy chunk


def test_a_heavy_chunk_that_fits_in_an_invocation_completes_wherever_it_falls():
    for heavy in (3, 7, 10, 11, 12, 13, 20):  # wherever it falls in the hop
        clock = VirtualClock()
        handler = uneven_handler(clock, {heavy: 2.5}, 0.25)
        report = simulate(handler, timeout=3.0, clock=clock).run({"n": 30})
        assert report.status == "SUCCEEDED", (heavy, report.timeline())
        assert report.result == sum(range(30))


def test_a_heavy_chunk_of_ninety_percent_completes_in_stateless_mode_too_when_it_falls_first():
    clock = VirtualClock()
    handler = uneven_handler(clock, {0: 2.7}, 0.25)
    report = Simulator(handler, timeout=3.0, clock=clock, ledger=None).run({"n": 10})
    assert report.status == "SUCCEEDED" and report.timeouts == 0


@pytest.mark.parametrize("heavy", [5, 11, 17])
def test_a_chunk_that_cannot_fit_in_a_whole_invocation_fails_naming_its_index(heavy):
    clock = VirtualClock()
    handler = uneven_handler(clock, {heavy: 4.0}, 0.25)
    report = simulate(handler, timeout=3.0, clock=clock).run({"n": 30})
    assert report.status == "FAILED"
    assert report.error.startswith("ChunkTooLargeError"), report.error
    assert f"chunk {heavy}" in report.error and "RetriesExhausted" not in report.error
    assert report.last_state["i"] == heavy  # everything before it is committed


# ---------------------------------------------------------------------- item 14: a slow outlier that completed


def test_a_chunk_that_completed_in_an_invocation_never_fails_the_chain():
    # A 0.69-s chunk in a 1-s function with a 0.2-s hand-off: it completed, so it fits; it used to fail the
    # chain with ChunkTooLargeError because little more than 0.6 s were left after the reserve.
    clock = VirtualClock()
    handler = uneven_handler(clock, {25: 0.69}, 0.01)
    sim = simulate(handler, timeout=1.0, clock=clock, ledger_latency=0.1, invoke_latency=0.1)
    report = sim.run({"n": 200})
    assert report.status == "SUCCEEDED", report.timeline()
    assert report.result == sum(range(200))


def test_the_policy_never_raises_for_a_duration_an_invocation_like_this_one_completed():
    timings = ChunkTimings()
    timings.add(0.689)
    handoff = HandOffTimings()
    handoff.add(0.25)
    state = BudgetState(budget=1.0, remaining=0.3, timings=timings, handoff=handoff)
    assert predictive()(state) is True  # hand off (one chunk per hop), no error
    timings.add(1.2)  # longer than this whole invocation: no invocation like it could run it
    with pytest.raises(ChunkTooLargeError):
        predictive()(state)
