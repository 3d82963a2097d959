"""The chain guarantees of tests/test_properties.py, with the DynamoDB ledger on moto instead of the in-memory one.

Same handler, same fault schedules, same checks: the chain ends SUCCEEDED or FAILED; a SUCCEEDED chain's result
equals the fault-free result; a FAILED one keeps a consistent committed prefix (from which it resumes); the
commit log shows no fork. Fewer and shorter chains than the in-memory run, as every ledger write goes through
botocore and moto (RECURSE_LAMBDA_DDB_SCHEDULES=500 for a deeper search).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from recurse_lambda import ChainStatus
from recurse_lambda.aws import DynamoDBLedger
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from tests.test_properties import Sum, assert_no_fork, chain, fault_free, faults

SCHEDULES = int(os.environ.get("RECURSE_LAMBDA_DDB_SCHEDULES", "40"))
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextmanager
def dynamodb_ledger() -> Iterator[DynamoDBLedger]:
    """A fresh table in a fresh moto backend (each Hypothesis example starts from nothing)."""
    with mock_aws():
        ddb = boto3.client("dynamodb", **CREDENTIALS)
        s3 = boto3.client("s3", **CREDENTIALS)
        s3.create_bucket(Bucket="offload")
        DynamoDBLedger.create_table(ddb, "chains")
        # A threshold so low that the progress of any chain past its 10th chunk lives in S3 behind a pointer.
        yield DynamoDBLedger(
            "chains",
            client=lambda: ddb,
            s3_client=lambda: s3,
            s3_offload=("offload", "p/"),
            offload_threshold=60,
        )


def raw_item(ledger: DynamoDBLedger, chain_id: str) -> dict[str, Any]:
    item: dict[str, Any] = ledger._client_getter().get_item(
        TableName="chains", Key={"chain_id": {"S": chain_id}}
    )["Item"]
    return item


@settings(max_examples=SCHEDULES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A fault-free chain of several hops, and a faulty one, always tried first.
@example(plan=FaultPlan(), seed=1, n=150, timeout=2.0, heavy=False, retries=2, every=None)
@example(
    plan=FaultPlan(crash=0.15, duplicate=0.6, throttle=0.2),
    seed=7,
    n=150,
    timeout=2.0,
    heavy=False,
    retries=2,
    every=5,
)
@given(
    plan=faults,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 200),
    timeout=st.sampled_from([2.0, 5.0]),
    heavy=st.booleans(),
    retries=st.integers(0, 2),
    every=st.sampled_from([None, 5, 25]),
)
def test_faults_never_fork_lose_or_corrupt_a_chain_on_dynamodb(plan, seed, n, timeout, heavy, retries, every):
    rng = random.Random(seed)
    sigma = 1.0 if heavy else 0.1
    durations = [min(0.2 * timeout, rng.lognormvariate(-3.0, sigma)) for _ in range(n)]
    clock = VirtualClock()
    handler = chain(clock, durations, checkpoint_every_chunks=every, max_attempts=retries + 1)
    with dynamodb_ledger() as ledger:
        sim = Simulator(
            handler,
            ledger=ledger,
            timeout=timeout,
            clock=clock,
            faults=plan,
            seed=seed,
            max_retry_attempts=retries,
        )
        report = sim.run({"job": seed})
        assert report.status in ("SUCCEEDED", "FAILED"), report.timeline()
        event(report.status)  # --hypothesis-show-statistics shows how many chains failed (and were resumed)
        (record,) = ledger.list()  # the report agrees with the table itself
        assert record.status == ChainStatus(report.status)
        if report.status == "SUCCEEDED":
            assert report.result == record.result == fault_free(n)
            if n >= 20:
                assert "M" in raw_item(ledger, record.chain_id)["progress"], "offloaded to S3"
        else:
            state = Sum.model_validate(report.last_state)
            assert 0 <= state.i <= n and state.total == sum(i * 7 + 1 for i in range(state.i))
            assert report.error and record.progress["state"] == report.last_state
            assert ledger.resume(record.chain_id, now=clock.time()).status is ChainStatus.RUNNING
        assert_no_fork(sim.commits)
        # Every hand-off commits at least one chunk: more hand-offs than chunks means committed progress was lost.
        assert sum(r.outcome == "handed_off" for r in report.rows) <= n
        if not plan.any:
            assert report.status == "SUCCEEDED" and report.retries == 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(20, 150), every=st.integers(1, 10))
def test_fencing_on_dynamodb_stops_an_owner_whose_lease_was_taken(seed, n, every):
    # Leases that expire before the deadline let duplicates take a hop whose owner is alive: the owner's next
    # conditional write is refused and it stops, so there is still one writer.
    clock = VirtualClock()
    handler = chain(clock, [0.05] * n, checkpoint_every_chunks=every, lease_margin=-3.5)
    with dynamodb_ledger() as ledger:
        sim = Simulator(
            handler,
            ledger=ledger,
            timeout=5.0,
            clock=clock,
            faults=FaultPlan(duplicate=0.9),
            seed=seed,
            duplicate_delay=5.0,
        )
        report = sim.run({"job": seed})
        assert report.status == "SUCCEEDED", report.timeline()
        assert report.result == fault_free(n)
        assert_no_fork(sim.commits)
        takeovers = [r for r in report.rows if r.kind == "duplicate" and r.chunks > 0]
        if takeovers:
            assert any(r.outcome == "lost_lease" for r in report.rows)
