"""Chain guarantees under random faults, as properties over seeded schedules in virtual time.

For every schedule: the chain ends SUCCEEDED, FAILED or CANCELLED (never stalls); a SUCCEEDED chain's result
equals the fault-free result; a FAILED chain's last state is a consistent committed prefix; and the ledger's
write log shows no fork: every commit on a hop comes from the invocation that holds that hop's latest claim,
and committed progress never goes backwards.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.local import Commit, FaultPlan, VirtualClock
from tests.conftest import simulate

# Hypothesis examples per run of the main property; each is a whole chain under a random fault schedule.
# RECURSE_LAMBDA_SCHEDULES=20000 for a deeper search (docs/testing.md).
SCHEDULES = int(os.environ.get("RECURSE_LAMBDA_SCHEDULES", "1000"))


@pytest.fixture(autouse=True, scope="module")
def containers_tmp_in_memory() -> Iterator[None]:
    """Every simulated container has a /tmp directory of its own, and every invocation writes and removes a
    marker file in it: a thousand schedules make tens of thousands of directory and file operations, which on
    a busy disk cost more than the chains themselves. They go to a RAM-backed directory (Linux's /dev/shm)
    when there is one; the simulator puts them wherever ``tempfile`` does."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        yield
        return
    before, tempfile.tempdir = tempfile.tempdir, shm
    try:
        yield
    finally:
        tempfile.tempdir = before


class Sum(BaseModel):
    i: int = 0
    total: int = 0


def chain(clock: VirtualClock, durations: list[float], **options: Any):
    @recursive(state=Sum, **options)
    def handler(event: dict[str, Any], state: Sum, run: Run) -> Generator[None, None, dict[str, int]]:
        while state.i < len(durations):
            clock.advance(durations[state.i])
            state.total += state.i * 7 + 1
            state.i += 1
            yield
        return {"i": state.i, "total": state.total}

    return handler


def fault_free(n: int) -> dict[str, int]:
    return {"i": n, "total": sum(i * 7 + 1 for i in range(n))}


def assert_no_fork(commits: list[Commit]) -> None:
    holder: dict[int, str | None] = {}
    progress = -1
    for c in commits:
        if c.op == "claim":
            holder[c.hop] = c.owner
        elif c.op in ("checkpoint", "hand_off", "finish"):
            assert holder.get(c.hop) == c.owner, (
                f"{c.op} on hop {c.hop} by {c.owner}, holder {holder.get(c.hop)}"
            )
            assert c.chunks >= progress, "committed progress went backwards"
            progress = c.chunks


faults = st.builds(
    FaultPlan,
    crash=st.sampled_from([0.0, 0.05, 0.15, 0.3]),
    error=st.sampled_from([0.0, 0.05, 0.2]),
    hang=st.sampled_from([0.0, 0.05, 0.1]),
    duplicate=st.sampled_from([0.0, 0.2, 0.6]),
    throttle=st.sampled_from([0.0, 0.2, 0.5]),
    recycle=st.sampled_from([0.0, 0.5, 1.0]),
)


@settings(max_examples=SCHEDULES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=faults,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 1500),
    timeout=st.sampled_from([2.0, 5.0, 15.0]),
    heavy=st.booleans(),
    retries=st.integers(0, 2),
    every=st.sampled_from([None, 1, 5, 25]),
)
def test_faults_never_fork_lose_or_corrupt_a_chain(plan, seed, n, timeout, heavy, retries, every):
    rng = random.Random(seed)
    sigma = 1.0 if heavy else 0.1
    durations = [min(0.2 * timeout, rng.lognormvariate(-3.0, sigma)) for _ in range(n)]
    clock = VirtualClock()
    handler = chain(clock, durations, checkpoint_every_chunks=every, max_attempts=retries + 1)
    sim = simulate(handler, timeout=timeout, clock=clock, faults=plan, seed=seed, max_retry_attempts=retries)
    report = sim.run({"job": seed})
    assert report.status in ("SUCCEEDED", "FAILED"), report.timeline()
    if report.status == "SUCCEEDED":
        assert report.result == fault_free(n)
    else:
        state = Sum.model_validate(report.last_state)
        assert 0 <= state.i <= n and state.total == sum(i * 7 + 1 for i in range(state.i))
        assert report.error
    assert_no_fork(sim.commits)
    dropped = [r for r in report.rows if r.outcome in ("duplicate", "stale") and r.kind != "destination"]
    assert report.duplicates_dropped == len(
        dropped
    )  # an on-failure record that found nothing is no duplicate
    if not plan.any:
        assert report.status == "SUCCEEDED" and report.retries == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_without_crashes_every_chain_succeeds_whatever_the_duplicates_and_throttles(seed, n):
    clock = VirtualClock()
    handler = chain(clock, [0.05] * n)
    plan = FaultPlan(duplicate=0.5, throttle=0.3, recycle=0.5)
    sim = simulate(handler, timeout=2.0, clock=clock, faults=plan, seed=seed)
    report = sim.run({"job": seed})
    assert report.status == "SUCCEEDED", report.timeline()
    assert report.result == fault_free(n)
    assert_no_fork(sim.commits)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(20, 300), every=st.integers(1, 10))
def test_fencing_prevents_a_fork_even_when_leases_expire_while_their_owner_runs(seed, n, every):
    # Leases that expire 70 % of the way before the deadline let duplicates claim a hop whose owner is alive:
    # the owner's next commit must fail (LostLeaseError) and it must stop, so there is still one writer.
    clock = VirtualClock()
    handler = chain(clock, [0.05] * n, checkpoint_every_chunks=every, lease_margin=-3.5)
    sim = simulate(
        handler, timeout=5.0, clock=clock, faults=FaultPlan(duplicate=0.9), seed=seed, duplicate_delay=5.0
    )
    report = sim.run({"job": seed})
    assert report.status == "SUCCEEDED", report.timeline()
    assert report.result == fault_free(n)
    assert_no_fork(sim.commits)
    takeovers = [r for r in report.rows if r.kind == "duplicate" and r.chunks > 0]
    if takeovers:  # whoever was overtaken stopped at its next commit
        assert any(r.outcome == "lost_lease" for r in report.rows)


def test_a_destination_record_for_a_hop_that_committed_is_not_a_dropped_duplicate():
    # The last attempt commits the chain's result, then dies: Lambda gives the event up and the on-failure
    # record arrives for a chain that has ended. That row is stale, but it is not a duplicate delivery.
    clock = VirtualClock()
    handler = chain(clock, [0.1] * 5, max_attempts=1)
    plan = FaultPlan(crash_at=(("after_finish", 1),))
    sim = simulate(handler, timeout=2.0, clock=clock, faults=plan, max_retry_attempts=0)
    report = sim.run({"job": 1})
    assert report.status == "SUCCEEDED" and report.result == fault_free(5)
    assert [(r.kind, r.outcome) for r in report.rows] == [("first", "crash"), ("destination", "stale")]
    assert report.duplicates_dropped == 0 and report.summary()["duplicates_dropped"] == 0
    assert "0 duplicates dropped" in report.timeline()
