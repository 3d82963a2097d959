"""``run.s3.keys`` as a whole chain in the simulator, on moto: across hops, under random fault schedules
(duplicate deliveries, random crashes and errors, recycled containers, crashes at named points), the keys the
chain committed are every key under the prefix once, in S3's order (UTF-8 binary order of the keys)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
from moto.s3.models import s3_backends
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.local._faults import POINTS

BUCKET = "listed"
N = 2000
KEYS = sorted((f"p/{i % 37:02d}/{i:05d}{'-é' if i % 11 == 0 else ''}" for i in range(N)), key=str.encode)


class Listed(BaseModel):
    after: str = ""
    keys: list[str] = []


def make_handler(clock: VirtualClock) -> Any:
    @recursive(state=Listed)
    def handler(event: dict[str, Any], state: Listed, run: Run) -> Generator[None, None, list[str]]:
        lister = run.s3.keys(BUCKET, "p/", start_after=state.after, page_size=event["page"])
        for batch in lister.batches():
            state.keys += [r.key for r in batch]
            state.after = batch.end
            clock.advance(event["cost"])
            yield  # a safe point: the cursor and the keys seen are committed together
        return state.keys

    return handler


@pytest.fixture
def s3(moto_s3: Any) -> Iterator[Any]:
    moto_s3.create_bucket(Bucket=BUCKET)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]  # no HTTP round trip per key: 2,000 keys in ~0.1 s
    for i, key in enumerate(reversed(KEYS)):  # created out of order
        backend.put_object(BUCKET, key, b"x" * (i % 3))
    for key in ("o/before", "q/after", "p"):  # beside the prefix: not listed
        backend.put_object(BUCKET, key, b"")
    yield moto_s3


faults = st.builds(
    FaultPlan,
    duplicate=st.sampled_from([0.0, 0.3, 0.6]),
    crash=st.sampled_from([0.0, 0.1, 0.2]),
    error=st.sampled_from([0.0, 0.1]),
    recycle=st.sampled_from([0.0, 0.5]),
    crash_at=st.lists(
        st.tuples(st.sampled_from([*POINTS, "safe_point"]), st.integers(1, 12)), max_size=4
    ).map(tuple),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=faults,
    seed=st.integers(0, 2**16),
    page=st.integers(40, 250),
    cost=st.sampled_from([0.1, 0.2, 0.3]),  # >= 8 batches of >= 0.1 s: more than one 0.5 s invocation
)
def test_the_chain_commits_every_key_once_in_order(
    s3: Any, plan: FaultPlan, seed: int, page: int, cost: float
) -> None:
    clock = VirtualClock()
    sim = Simulator(
        make_handler(clock),
        timeout=0.5,
        clock=clock,
        ledger="memory",
        s3_client=lambda: boto3.client("s3", region_name="us-east-1"),
        faults=plan,
        seed=seed,
    )
    report = sim.run({"page": page, "cost": cost})
    if report.status == "SUCCEEDED":
        assert report.result == KEYS
        assert report.hops > 1  # really across hops: a hop holds at most a few batches
    else:
        # Out of retries on one hop: what the chain committed is still a prefix of the listing, no key twice.
        assert report.status == "FAILED", report.error
        committed = Listed.model_validate(report.last_state).keys
        assert committed == KEYS[: len(committed)]


def test_a_fault_free_chain_hops_at_batch_ends(s3: Any) -> None:
    clock = VirtualClock()
    sim = Simulator(make_handler(clock), timeout=0.5, clock=clock, ledger="memory", s3_client=lambda: s3)
    report = sim.run({"page": 100, "cost": 0.1})
    assert report.status == "SUCCEEDED" and report.result == KEYS
    assert report.hops >= N // 100 // 5  # at most 5 batches of 0.1 s in a 0.5 s invocation
