"""The writer as whole chains in the simulator, on moto: random record streams, random hop points (each record
costs a random amount of virtual time) and random fault schedules (duplicates, crashes at random and at every
named point, recycled containers). A chain that SUCCEEDED wrote exactly the one-pass bytes, in one object, and
left no upload open and nothing spilled; a chain that FAILED keeps its upload for ``resume``, and
``abort_upload`` on its last state leaves nothing."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import boto3
import moto.s3.models
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.local._faults import POINTS
from recurse_lambda.s3._writer import open_writer
from recurse_lambda.s3._writer_state import WriterState, abort_upload

BUCKET = "out"
PART = 1024


class Progress(BaseModel):
    i: int = 0
    out: WriterState = WriterState()


def make_handler(clock: VirtualClock) -> Any:
    @recursive(state=Progress)
    def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, Any]]:
        out = open_writer(run, BUCKET, "result", state.out, part_size=PART, min_part_size=PART)
        records, costs = event["records"], event["costs"]
        while state.i < len(records):
            out.write(records[state.i].encode())
            clock.advance(costs[state.i])
            state.i += 1
            yield
        return out.complete()

    return handler


@pytest.fixture
def s3(moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)
    yield moto_s3


def reset(s3: Any) -> None:
    """A fresh bucket for each example (hypothesis reuses the fixture)."""
    names = [b["Name"] for b in s3.list_buckets().get("Buckets", ())]
    if BUCKET in names:
        for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", ()):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])
        for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ()):
            s3.delete_object(Bucket=BUCKET, Key=o["Key"])
    else:
        s3.create_bucket(Bucket=BUCKET)


records = st.lists(st.text(max_size=300).map(lambda s: s + "\n"), max_size=40)
faults = st.builds(
    FaultPlan,
    duplicate=st.sampled_from([0.0, 0.3]),
    crash=st.sampled_from([0.0, 0.2, 0.4]),
    recycle=st.sampled_from([0.0, 0.5]),
    crash_at=st.lists(st.tuples(st.sampled_from([*POINTS, "safe_point"]), st.integers(1, 6)), max_size=3).map(
        tuple
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records, data=st.data(), plan=faults, seed=st.integers(0, 2**16))
def test_the_output_equals_a_one_pass_write(
    s3: Any, records: list[str], data: Any, plan: Any, seed: int
) -> None:
    reset(s3)
    costs = data.draw(
        st.lists(st.sampled_from([0.01, 0.05, 0.2]), min_size=len(records), max_size=len(records))
    )
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
    report = sim.run({"records": records, "costs": costs})
    expected = "".join(records).encode()
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", ())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ())]
    if report.status == "SUCCEEDED":
        got = s3.get_object(Bucket=BUCKET, Key="result")["Body"].read()
        assert got == expected
        assert keys == ["result"] and list(uploads) == []
        assert report.result["bytes"] == len(expected)
    else:
        assert report.status == "FAILED", report.error
        assert "result" not in keys
        abort_upload(report.last_state, s3)
        if Progress.model_validate(report.last_state).out.condition:
            # The writer's first use was committed: abort_upload finds every upload and spill of the chain.
            # (Before that commit the state cannot name the output: the bucket's lifecycle rule cleans up.)
            assert list(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == []
            assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ())] == []
