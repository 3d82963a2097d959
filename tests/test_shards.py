"""Sharded jobs: the plan, the shard readers, the join in the ledger, and whole jobs in the simulator."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Generator, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from pydantic import BaseModel

from recurse_lambda import (
    ENVELOPE_KEY,
    ChainControl,
    ChainStatus,
    ConfigurationError,
    InMemoryLedger,
    Run,
    Shards,
    recursive,
)
from recurse_lambda.errors import ChainStateError
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.shards.plan import SHARD_KEY, ObjectInfo, plan_shards, shard_chain_id, shard_chain_ids


class Tally(BaseModel):
    offset: int = 0
    lines: int = 0
    total: int = 0


def merge(results: list[dict[str, int]]) -> dict[str, int]:
    return {"lines": sum(r["lines"] for r in results), "total": sum(r["total"] for r in results)}


def one_pass(data: bytes) -> dict[str, int]:
    lines = [line for line in data.split(b"\n") if line]  # the last line may lack its terminator
    return {"lines": len(lines), "total": sum(int(line) for line in lines)}


def tally_handler(
    clock: VirtualClock,
    count: int,
    reduced: list[Any] | None = None,
    check: Any = None,
    **options: Any,
) -> Any:
    """Counts and sums the numbers of a text object, one batch of 7 lines per chunk of 1 virtual second.

    ``check(run, state)`` is called before each batch (a test raises from it).
    """

    def reduce(results: list[dict[str, int]]) -> dict[str, int]:
        if reduced is not None:
            reduced.append(results)
        return merge(results)

    options.setdefault("shards", Shards(count=count, reduce=reduce, min_bytes=1))

    @recursive(state=Tally, **options)
    def handler(event: dict[str, Any], state: Tally, run: Run) -> Generator[None, None, dict[str, int]]:
        assert run.shard is not None, "a sharded job's user code runs only in its shards"
        for batch in run.shard.lines(start=state.offset, encoding=None).batches(7):
            if check is not None:
                check(run, state)
            clock.advance(1.0)
            state.lines += len(batch)
            state.total += sum(int(line) for line in batch)
            state.offset = batch.end
            yield
        return {"lines": state.lines, "total": state.total}

    return handler


def numbers(n: int, seed: int = 1) -> bytes:
    return b"".join(b"%d\n" % ((i * 7919 + seed) % 100_003) for i in range(n))


def put(s3: Any, key: str, body: bytes, bucket: str = "data") -> None:
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def sim(handler: Any, s3: Any, clock: VirtualClock, **options: Any) -> Simulator:
    options.setdefault("ledger", InMemoryLedger())
    return Simulator(handler, clock=clock, timeout=60.0, s3_client=lambda: s3, **options)


# ------------------------------------------------------------------------------------------------ the plan


def test_the_plan_cuts_the_concatenated_objects_into_equal_ranges():
    objects = [
        ObjectInfo("b", "a", '"1"', 10),
        ObjectInfo("b", "empty", '"0"', 0),
        ObjectInfo("b", "c", '"2"', 5),
    ]
    shards = plan_shards(objects, 3)
    assert [[(p.key, p.start, p.end) for p in s] for s in shards] == [
        [("a", 0, 5)],
        [("a", 5, 10)],
        [("c", 0, 5)],
    ]
    assert shards[0][0].pin == ("b/a", {"etag": '"1"', "version_id": None, "size": 10})


@given(
    sizes=st.lists(st.integers(0, 50), min_size=0, max_size=6),
    count=st.integers(1, 20),
    min_bytes=st.integers(1, 30),
)
def test_the_plan_covers_every_byte_once_in_at_most_count_near_equal_shards(sizes, count, min_bytes):
    objects = [ObjectInfo("b", f"k{i}", f'"{i}"', size) for i, size in enumerate(sizes)]
    shards = plan_shards(objects, count, min_bytes)
    total = sum(sizes)
    assert 1 <= len(shards) <= max(1, count)
    if total:
        assert len(shards) <= -(-total // min_bytes)
    covered = [(p.key, b) for s in shards for p in s for b in range(p.start, p.end)]
    assert covered == [(f"k{i}", b) for i, size in enumerate(sizes) for b in range(size)]
    lengths = [sum(p.end - p.start for p in s) for s in shards]
    assert max(lengths) - min(lengths) <= 1


def test_shard_chain_ids_sort_in_shard_order():
    ids = [shard_chain_id("job", i, 120) for i in range(120)]
    assert ids[0] == "@shard/job/000" and ids == sorted(ids)
    assert shard_chain_ids("job", {"count": 120, "ids": "@shard/"}) == ids
    assert shard_chain_ids("job", {"count": 2}) == ["job/0", "job/1"]  # a job split before the prefix


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count"),
        ({"count": 1001}, "count"),
        ({"count": 2, "reduce": "sum"}, "reduce"),
        ({"count": 2, "min_bytes": 0}, "min_bytes"),
    ],
)
def test_bad_shard_options_are_refused(kwargs, message):
    kwargs.setdefault("reduce", merge)
    with pytest.raises(ConfigurationError, match=message):
        Shards(**kwargs)


# ------------------------------------------------------------------------------------------------ whole jobs


def test_a_sharded_job_merges_its_shards_results_once(moto_s3):
    clock, reduced = VirtualClock(), []
    data = numbers(2_000)
    put(moto_s3, "numbers.txt", data)
    handler = tally_handler(clock, 5, reduced)
    report = sim(handler, moto_s3, clock).run({"bucket": "data", "key": "numbers.txt"})
    report.raise_for_status()
    assert report.result == one_pass(data)
    assert len(reduced) == 1 and len(reduced[0]) == 5
    lanes = {r.chain_id for r in report.rows}
    assert {shard_chain_id(report.chain_id, i, 5) for i in range(5)} <= lanes
    outcomes = [r.outcome for r in report.rows if r.chain_id == report.chain_id]
    assert outcomes == ["split", "succeeded"]  # the split, then the reduce woken by the last join


def test_shards_run_in_parallel_in_virtual_time(moto_s3):
    clock = VirtualClock()
    data = numbers(7 * 40)  # 40 chunks of one virtual second
    put(moto_s3, "numbers.txt", data)
    report = sim(tally_handler(clock, 4), moto_s3, clock).run({"bucket": "data", "key": "numbers.txt"})
    report.raise_for_status()
    assert report.result == one_pass(data)
    assert report.ended - report.started < 40 / 4 + 5  # about a quarter of the one-chain time, plus overheads


def test_a_prefix_job_reads_every_object_once(moto_s3):
    clock = VirtualClock()
    bodies = {"in/a.txt": numbers(300, 1), "in/b.txt": numbers(5, 2)[:-1], "in/c.txt": numbers(700, 3)}
    for key, body in bodies.items():
        put(moto_s3, key, body)
    put(moto_s3, "elsewhere.txt", numbers(50))
    report = sim(tally_handler(clock, 6), moto_s3, clock).run({"bucket": "data", "prefix": "in/"})
    report.raise_for_status()
    assert report.result == one_pass(b"\n".join(bodies.values()))


class CsvTally(BaseModel):
    offset: int = 0
    rows: int = 0
    total: int = 0


def csv_handler(clock: VirtualClock, count: int) -> Any:
    """Counts the rows of CSV objects with a header and sums their ``n`` column, 5 rows per virtual second."""

    def reduce(results: list[dict[str, int]]) -> dict[str, int]:
        return {"rows": sum(r["rows"] for r in results), "total": sum(r["total"] for r in results)}

    @recursive(state=CsvTally, shards=Shards(count=count, reduce=reduce, min_bytes=1))
    def handler(event: dict[str, Any], state: CsvTally, run: Run) -> Generator[None, None, dict[str, int]]:
        assert run.shard is not None
        for batch in run.shard.csv(start=state.offset, range_size=64).batches(5):
            clock.advance(1.0)
            state.rows += len(batch)
            state.total += sum(int(row["n"]) for row in batch)
            state.offset = batch.end
            yield
        return {"rows": state.rows, "total": state.total}

    return handler


def csv_body(rows: int, seed: int, columns: str = "id,n,note") -> bytes:
    lines = [columns]
    for i in range(rows):
        values = {"id": str(i), "n": str((i * 7919 + seed) % 1009), "note": f'"a, quoted ""{i % 5}"" note"'}
        lines.append(",".join(values[c] for c in columns.split(",")))
    return ("\r\n".join(lines) + "\r\n").encode()


def csv_one_pass(*bodies: bytes) -> dict[str, int]:
    rows = [r for body in bodies for r in csv.DictReader(io.StringIO(body.decode(), newline=""))]
    return {"rows": len(rows), "total": sum(int(r["n"]) for r in rows)}


def test_a_sharded_csv_job_reads_every_row_once_with_each_objects_header(moto_s3):
    clock = VirtualClock()
    put(moto_s3, "one.csv", csv_body(300, 1))
    report = sim(csv_handler(clock, 5), moto_s3, clock, faults=FaultPlan(duplicate=0.3)).run(
        {"bucket": "data", "key": "one.csv"}
    )
    report.raise_for_status()
    assert report.result == csv_one_pass(csv_body(300, 1))
    assert len(report.chains) == 1 + 5
    # A prefix whose objects order their columns differently: each part reads its own object's header.
    bodies = [csv_body(120, 2), csv_body(3, 3, "n,note,id"), csv_body(200, 4, "note,id,n")]
    for i, body in enumerate(bodies):
        put(moto_s3, f"in/{i}.csv", body)
    report = sim(csv_handler(clock, 4), moto_s3, clock).run({"bucket": "data", "prefix": "in/"})
    report.raise_for_status()
    assert report.result == csv_one_pass(*bodies)


def test_a_sharded_csv_job_over_a_record_that_spans_lines_fails_and_says_why(moto_s3):
    clock = VirtualClock()
    body = csv_body(100, 1).replace(b"quoted", b"quo\nted", 1)  # one quoted field holds a newline
    put(moto_s3, "multi.csv", body)
    report = sim(csv_handler(clock, 3), moto_s3, clock).run({"bucket": "data", "key": "multi.csv"})
    assert report.status == "FAILED"
    assert "spans more than one line" in report.error and "in one chain" in report.error


def test_a_failed_shard_fails_the_job_naming_it_and_resume_continues_it(moto_s3):
    clock, fail = VirtualClock(), {"on": True}
    data = numbers(400)
    put(moto_s3, "numbers.txt", data)
    ledger = InMemoryLedger()

    def bad_record(run: Run, state: Tally) -> None:
        if fail["on"] and run.shard.index == 2 and state.lines >= 14:
            raise KeyError("a bad record")

    handler = tally_handler(clock, 4, check=bad_record, permanent_errors=(KeyError,))
    simulator = sim(handler, moto_s3, clock, ledger=ledger)
    report = simulator.run({"bucket": "data", "key": "numbers.txt"})
    assert report.status == "FAILED"
    shard = shard_chain_id(report.chain_id, 2, 4)
    assert f"shard 2 of 4 ({shard}) failed: KeyError" in report.error
    assert ledger.get(shard).status is ChainStatus.FAILED
    assert {ledger.get(shard_chain_id(report.chain_id, i, 4)).status for i in (0, 1, 3)} == {
        ChainStatus.SUCCEEDED
    }

    fail["on"] = False
    sent: list[tuple[str, bytes]] = []

    class Collect:
        def invoke_async(self, function: str, payload: bytes) -> None:
            sent.append((function, payload))

    control = ChainControl(ledger, invoker=Collect(), clock=clock, environ={})
    assert control.resume(report.chain_id).status is ChainStatus.RUNNING
    assert ledger.get(shard).status is ChainStatus.RUNNING  # the failed shard is resumed with its job
    # ...before the job, so a late report of the shard's old failure cannot fail the job again after its resume
    assert [json.loads(p)[ENVELOPE_KEY]["chain_id"] for _, p in sent] == [shard, report.chain_id]
    for _, payload in sent:
        simulator.run(json.loads(payload))
    job = ledger.get(report.chain_id)
    assert (job.status, job.result) == (ChainStatus.SUCCEEDED, one_pass(data))


@pytest.mark.parametrize("point", ["after_checkpoint", "before_handoff", "after_handoff", "after_invoke"])
def test_a_crash_of_the_splitter_or_the_reducer_is_repaired_by_its_retry(moto_s3, point):
    clock, reduced = VirtualClock(), []
    data = numbers(300)
    put(moto_s3, "numbers.txt", data)
    faults = FaultPlan(crash_at=((point, 1),))  # invocation 1 is the job's split
    report = sim(tally_handler(clock, 3, reduced), moto_s3, clock, faults=faults).run(
        {"bucket": "data", "key": "numbers.txt"}
    )
    report.raise_for_status()
    assert report.result == one_pass(data) and len(reduced) == 1
    assert report.count("crash") == 1


def test_a_crash_between_a_shards_finish_and_its_join_is_repaired(moto_s3):
    clock, reduced = VirtualClock(), []
    data = numbers(50)
    put(moto_s3, "numbers.txt", data)
    faults = FaultPlan(
        crash_at=(("after_finish", 2),)
    )  # invocation 2: the first shard, which ends in one hop
    report = sim(tally_handler(clock, 2, reduced), moto_s3, clock, faults=faults).run(
        {"bucket": "data", "key": "numbers.txt"}
    )
    report.raise_for_status()
    assert report.result == one_pass(data) and len(reduced) == 1
    assert report.count("stale") >= 1  # the retry found the shard SUCCEEDED and re-drove its join


def test_cancel_of_a_job_cancels_its_running_shards():
    ledger = InMemoryLedger()
    ledger.start(
        "j",
        progress={"state": {}, "chunks": 0, "pins": {}, "shards": {"count": 3, "ids": "@shard/"}},
        event={},
        now=0.0,
    )
    for i in range(3):
        ledger.start(shard_chain_id("j", i, 3), progress={}, event={}, now=0.0)
    ledger.cancel(shard_chain_id("j", 1, 3), now=1.0)
    control = ChainControl(ledger, invoker=FaultPlan(), clock=VirtualClock(), environ={})  # type: ignore[arg-type]
    assert control.cancel("j").status is ChainStatus.CANCELLED
    assert [r.status for r in ledger.records()] == [ChainStatus.CANCELLED] * 4


def test_cancelling_one_shard_cancels_its_job_naming_it_and_resume_says_why_not(moto_s3):
    clock, ledger = VirtualClock(), InMemoryLedger()
    put(moto_s3, "numbers.txt", numbers(700))
    control = ChainControl(ledger, invoker=FaultPlan(), clock=clock, environ={})  # type: ignore[arg-type]
    cancelled: list[str] = []

    def cancel_shard_1(run: Run, state: Tally) -> None:
        if run.shard.index == 1 and state.lines >= 70 and not cancelled:
            cancelled.append(run.chain_id)
            assert control.cancel(run.chain_id).status is ChainStatus.CANCELLED

    report = sim(tally_handler(clock, 3, check=cancel_shard_1), moto_s3, clock, ledger=ledger).run(
        {"bucket": "data", "key": "numbers.txt"}
    )
    job = ledger.get(report.chain_id)
    assert job.status is ChainStatus.CANCELLED
    assert job.error == f"shard 1 of 3 ({cancelled[0]}) was cancelled"
    # the job cannot complete, so its other running shards were cancelled with it
    assert {ledger.get(shard_chain_id(job.chain_id, i, 3)).status for i in range(3)} == {
        ChainStatus.CANCELLED
    }
    with pytest.raises(ChainStateError, match=r"it is CANCELLED \(shard 1 of 3 .* was cancelled\)"):
        control.resume(job.chain_id)


def test_a_shard_cancelled_after_its_job_failed_keeps_the_job_from_resuming_and_says_why():
    ledger, clock = InMemoryLedger(), VirtualClock()
    plan = {"count": 2, "parts": [[], []], "started": True, "ids": "@shard/"}
    ledger.start(
        "j",
        progress={"state": {}, "chunks": 0, "pins": {}, "shards": plan},
        event={},
        now=0.0,
        function="arn:aws:lambda:us-east-1:1:function:f",
    )
    for i in range(2):
        spec = {SHARD_KEY: {"job": "j", "index": i, "count": 2, "parts": []}, "event": {}}
        ledger.start(shard_chain_id("j", i, 2), progress={}, event=spec, now=0.0)
    ledger.claim(shard_chain_id("j", 0, 2), hop=0, owner="r", now=1.0, lease_until=9.0)
    ledger.fail(shard_chain_id("j", 0, 2), hop=0, owner="r", error="boom", now=2.0)
    ledger.abort("j", part="0", status=ChainStatus.FAILED, error="shard 0 of 2 failed", now=2.0)
    control = ChainControl(ledger, invoker=FaultPlan(), clock=clock, environ={})  # type: ignore[arg-type]
    control.cancel(shard_chain_id("j", 1, 2))  # the job has already ended: it stays FAILED
    assert ledger.get("j").status is ChainStatus.FAILED
    with pytest.raises(
        ChainStateError, match=r"its shard @shard/j/1 was cancelled, and a cancelled chain is not"
    ):
        control.resume("j")
    assert ledger.get("j").status is ChainStatus.FAILED  # refused before anything was touched
    assert ledger.get(shard_chain_id("j", 0, 2)).status is ChainStatus.FAILED


def test_a_sharded_job_needs_a_ledger(moto_s3):
    clock = VirtualClock()
    put(moto_s3, "numbers.txt", numbers(10))
    report = sim(tally_handler(clock, 2), moto_s3, clock, ledger=None).run(
        {"bucket": "data", "key": "numbers.txt"}
    )
    assert report.status == "REJECTED" and "needs a ledger" in report.error


def test_a_job_event_without_bucket_and_key_is_rejected_clearly(moto_s3):
    clock = VirtualClock()
    report = sim(tally_handler(clock, 2), moto_s3, clock).run({"path": "s3://x/y"})
    assert report.status == "FAILED" and '{"bucket": ..., "key": ...}' in report.error


# ------------------------------------------------------------------------------------------------ the property


@pytest.fixture(scope="module")
def moto_s3_session() -> Iterator[Any]:
    """One moto S3 for the property's examples (a function-scoped fixture would be shared across them anyway)."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="data")
            yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@settings(max_examples=25, deadline=None)
@given(
    lines=st.lists(st.integers(0, 10**6), min_size=0, max_size=120),
    crlf=st.booleans(),
    count=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    duplicate=st.sampled_from([0.0, 0.5]),
    error=st.sampled_from([0.0, 0.2]),
)
def test_the_merged_result_equals_one_pass_and_reduce_runs_once_under_faults(
    moto_s3_session, lines, crlf, count, seed, duplicate, error
):
    s3 = moto_s3_session
    clock, reduced = VirtualClock(), []
    data = (b"\r\n" if crlf else b"\n").join(b"%d" % n for n in lines)
    key = f"p/{seed}-{count}-{len(lines)}-{crlf}.txt"
    s3.put_object(Bucket="data", Key=key, Body=data)
    handler = tally_handler(clock, count, reduced)
    simulator = sim(handler, s3, clock, faults=FaultPlan(duplicate=duplicate, error=error), seed=seed)
    report = simulator.run({"bucket": "data", "key": key})
    if report.status == "SUCCEEDED":
        assert report.result == one_pass(data.replace(b"\r", b""))
        assert len(reduced) == 1, f"reduce ran {len(reduced)} times"
    else:  # injected errors can exhaust a hop's attempts: then the job failed, naming a shard or itself
        assert report.status == "FAILED" and report.error
        assert len(reduced) <= 1


def test_a_sharded_job_on_the_dynamodb_ledger(moto_s3):
    """The join is a string-set ADD in DynamoDB: the same job, with duplicates, on moto's DynamoDB."""
    from recurse_lambda.aws import DynamoDBLedger

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    DynamoDBLedger.create_table(ddb, "chains")
    ledger = DynamoDBLedger("chains", client=lambda: ddb)
    clock, reduced = VirtualClock(), []
    data = numbers(600)
    put(moto_s3, "numbers.txt", data)
    simulator = sim(
        tally_handler(clock, 4, reduced), moto_s3, clock, ledger=ledger, faults=FaultPlan(duplicate=0.5)
    )
    report = simulator.run({"bucket": "data", "key": "numbers.txt"})
    report.raise_for_status()
    assert report.result == one_pass(data) and len(reduced) == 1
    assert report.duplicates_dropped >= 1
    assert len(ledger.get(report.chain_id).joined) == 4


def test_the_timeline_draws_the_job_and_each_shard_in_its_own_lane(moto_s3):
    import xml.etree.ElementTree as ET

    clock = VirtualClock()
    put(moto_s3, "numbers.txt", numbers(500))
    report = sim(tally_handler(clock, 3), moto_s3, clock).run({"bucket": "data", "key": "numbers.txt"})
    svg = ET.fromstring(report.timeline_svg())
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert [t for t in texts if t in ("job", "0", "1", "2")] == ["job", "0", "1", "2"]
    classes = " ".join(e.get("class", "") for e in svg.iter())
    assert "c-split" in classes and "split into shards" in texts
    assert (
        report.hops == 3
    )  # hop 0 of each shard (of every chain, not only the job, which does no chunk work)


def test_the_sharded_count_example_counts_every_line_and_word_once(moto_s3):
    from examples import sharded_count

    text = "".join(f"line {i} has {'word ' * (i % 7)}\n" for i in range(3_000)).encode()
    put(moto_s3, "words.txt", text)
    clock = VirtualClock()
    report = Simulator(
        sharded_count.handler,
        clock=clock,
        ledger="memory",
        s3_client=lambda: moto_s3,
        faults=FaultPlan(duplicate=0.3),
    ).run({"bucket": "data", "key": "words.txt"})
    report.raise_for_status()
    lines = text.decode().splitlines()
    assert report.result == {"lines": len(lines), "words": sum(len(line.split()) for line in lines)}
    assert len(report.chains) == 1 + sharded_count.SHARDS


def test_a_shard_whose_envelope_cannot_be_loaded_fails_the_job(moto_s3):
    from recurse_lambda.local import MemorySpillStore

    clock = VirtualClock()
    put(moto_s3, "numbers.txt", numbers(100))
    spill = MemorySpillStore()
    spill.put = lambda key, body: {"bucket": "memory", "key": key}  # type: ignore[method-assign]  # expired at once
    handler = tally_handler(clock, 2, max_payload_bytes=2000)
    event = {"bucket": "data", "key": "numbers.txt", "note": "x" * 3000}  # every shard envelope spills
    report = sim(handler, moto_s3, clock, spill=spill).run(event)
    assert report.status == "FAILED"
    assert "shard 0 of 2" in report.error or "shard 1 of 2" in report.error
    assert "spilled envelope body" in report.error


# ------------------------------------------------------------------------------- every job ends (issue 9)

POINTS = (
    "after_claim",
    "before_checkpoint",
    "after_checkpoint",
    "before_handoff",
    "after_handoff",
    "before_invoke",
    "after_invoke",
    "safe_point",
    "before_finish",
    "after_finish",
)


# A shard fails while a job invocation (woken by the splitter's retry) holds the job, crashed after its claim.
@example(2, 900, (0, 420), None, [("after_invoke", 1), ("after_claim", 5)], 0.0, 0.0, 0.0, 0.0, 1)
# A shard is cancelled in mid-hop.
@example(1, 1, None, (0, 0), [], 0.0, 0.0, 0.0, 0.0, 0)
@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(1, 4),
    n_lines=st.integers(0, 900),
    bad=st.none() | st.tuples(st.integers(0, 3), st.integers(0, 500)),
    cancel=st.none() | st.tuples(st.integers(0, 3), st.integers(0, 500)),
    crash_at=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 14)), max_size=3),
    crash=st.sampled_from([0.0, 0.2]),
    duplicate=st.sampled_from([0.0, 0.5]),
    error=st.sampled_from([0.0, 0.2]),
    latency=st.sampled_from([0.0, 0.5, 3.0]),
    seed=st.integers(0, 10_000),
)
def test_every_sharded_job_ends_whatever_the_interleaving(
    moto_s3_session, count, n_lines, bad, cancel, crash_at, crash, duplicate, error, latency, seed
):
    """Shard failures and cancels at any point, crashes at every named point, duplicates and latencies: when
    nothing is left to deliver, the job is terminal, and SUCCEEDED only with every shard's result."""
    run_interleaving(
        moto_s3_session,
        InMemoryLedger(),
        count,
        n_lines,
        bad,
        cancel,
        crash_at,
        crash,
        duplicate,
        error,
        latency,
        seed,
    )


@example(2, 900, (0, 420), None, [("after_invoke", 1), ("after_claim", 5)], 0.0, 0.0, 0.0, 0.0, 1)
@example(3, 200, None, (1, 7), [], 0.0, 0.0, 0.0, 0.0, 2)
@settings(max_examples=8, deadline=None)
@given(
    count=st.integers(1, 3),
    n_lines=st.integers(0, 600),
    bad=st.none() | st.tuples(st.integers(0, 2), st.integers(0, 300)),
    cancel=st.none() | st.tuples(st.integers(0, 2), st.integers(0, 300)),
    crash_at=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 10)), max_size=2),
    crash=st.sampled_from([0.0, 0.2]),
    duplicate=st.sampled_from([0.0, 0.5]),
    error=st.just(0.0),
    latency=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 10_000),
)
def test_every_sharded_job_ends_on_the_dynamodb_ledger_too(
    moto_s3_session, count, n_lines, bad, cancel, crash_at, crash, duplicate, error, latency, seed
):
    """The same property on moto's DynamoDB, where ``abort`` is one conditional UpdateItem."""
    import uuid

    from recurse_lambda.aws import DynamoDBLedger

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    table = f"chains-{uuid.uuid4().hex[:12]}"
    DynamoDBLedger.create_table(ddb, table)
    ledger = DynamoDBLedger(table, client=lambda: ddb)
    run_interleaving(
        moto_s3_session, ledger, count, n_lines, bad, cancel, crash_at, crash, duplicate, error, latency, seed
    )


def run_interleaving(
    s3, ledger, count, n_lines, bad, cancel, crash_at, crash, duplicate, error, latency, seed
) -> None:
    clock, reduced = VirtualClock(), []
    data = numbers(n_lines, seed)
    key = f"end/{seed}-{count}-{n_lines}.txt"
    s3.put_object(Bucket="data", Key=key, Body=data)
    control = ChainControl(ledger, invoker=FaultPlan(), clock=clock, environ={})  # type: ignore[arg-type]
    happened: dict[str, str] = {}

    def check(run: Run, state: Tally) -> None:
        index = run.shard.index
        if (
            cancel is not None
            and index == cancel[0]
            and state.lines >= cancel[1]
            and "cancel" not in happened
        ):
            happened["cancel"] = run.chain_id
            control.cancel(run.chain_id)
        if bad is not None and index == bad[0] and state.lines >= bad[1]:
            happened.setdefault("bad", run.chain_id)
            raise KeyError("a bad record")

    handler = tally_handler(clock, count, reduced, check=check, permanent_errors=(KeyError,))
    faults = FaultPlan(crash=crash, duplicate=duplicate, error=error, crash_at=tuple(crash_at))
    simulator = sim(handler, s3, clock, ledger=ledger, faults=faults, seed=seed, ledger_latency=latency)
    report = simulator.run({"bucket": "data", "key": key})
    job = ledger.get(report.chain_id)
    assert job is not None and job.status.terminal, (
        f"the job is left {job and job.status}: {report.timeline()}"
    )
    plan = job.progress.get("shards")
    shards = [ledger.get(i) for i in shard_chain_ids(job.chain_id, plan)] if plan else []
    if job.status is ChainStatus.SUCCEEDED:
        assert job.result == one_pass(data) and len(reduced) >= 1
        assert all(s is not None and s.status is ChainStatus.SUCCEEDED for s in shards)
        assert "cancel" not in happened
    elif job.status is ChainStatus.CANCELLED:
        assert "cancel" in happened and f"({happened['cancel']}) was cancelled" in job.error
    else:
        assert job.error
        ended = [
            s for s in shards if s is not None and s.status in (ChainStatus.FAILED, ChainStatus.CANCELLED)
        ]
        if job.error.startswith("shard "):  # else the job failed on its own (its hop's attempts ran out)
            assert any(f"({s.chain_id})" in job.error for s in ended)


# ------------------------------------------------------------------------------- shard ids are their own


@pytest.mark.parametrize("order", [("data", "data/1"), ("data/1", "data")])
def test_a_business_key_that_looks_like_a_shard_id_is_a_job_of_its_own(moto_s3, order):
    """Key ``data`` then ``data/1`` (and the other way round): each job reads its own object and merges only its
    own shards, as the docs' ``f"{bucket}/{key}"`` keys would have it."""
    clock, ledger = VirtualClock(), InMemoryLedger()
    bodies = {"data": numbers(300, 1), "data/1": numbers(500, 2)}
    for key, body in bodies.items():
        put(moto_s3, key, body)
    handler = tally_handler(clock, 2, chain_id=lambda event: event["key"])
    for key in order:
        report = sim(handler, moto_s3, clock, ledger=ledger).run({"bucket": "data", "key": key})
        report.raise_for_status()
        assert report.chain_id == key and report.result == one_pass(bodies[key])
    assert {r.chain_id for r in ledger.records()} == {
        "data",
        "data/1",
        *(shard_chain_id(job, i, 2) for job in bodies for i in range(2)),
    }


def test_a_chain_id_in_the_shards_namespace_is_refused_clearly(moto_s3):
    clock, ledger = VirtualClock(), InMemoryLedger()
    put(moto_s3, "numbers.txt", numbers(10))
    handler = tally_handler(clock, 2, chain_id=lambda event: "@shard/other-job/0")
    report = sim(handler, moto_s3, clock, ledger=ledger).run({"bucket": "data", "key": "numbers.txt"})
    assert report.status == "REJECTED"
    assert "'@shard/other-job/0' begins with '@shard/', which is reserved for the shards" in report.error
    assert len(ledger) == 0
    from recurse_lambda import keys

    with pytest.raises(ConfigurationError, match="reserved for shard chain ids"):
        keys.from_fields("id", prefix="@shard/x")


def test_a_job_split_before_the_reserved_prefix_still_finds_its_shards(moto_s3):
    """A job in flight across an upgrade: its plan has no "ids" entry, so its shards keep their ``job/i`` ids."""
    from recurse_lambda import EnvelopeCodec
    from recurse_lambda.core.codec import Envelope

    clock, ledger = VirtualClock(), InMemoryLedger()
    t = clock.time()
    plan = {"count": 2, "parts": [[], []], "started": True}  # as the old version wrote it
    progress = {"state": Tally().model_dump(), "chunks": 0, "pins": {}, "shards": plan}
    ledger.start("job", progress=progress, event={"bucket": "data", "key": "k"}, now=t + 0.0)
    ledger.claim("job", hop=0, owner="split", now=t + 0.0, lease_until=t + 60.0)
    ledger.hand_off("job", hop=0, owner="split", progress=progress, now=t + 1.0)
    for i, result in enumerate(({"lines": 1, "total": 5}, {"lines": 2, "total": 7})):
        ledger.start(f"job/{i}", progress={}, event={}, now=t + 1.0)
        ledger.claim(f"job/{i}", hop=0, owner=f"s{i}", now=t + 2.0, lease_until=t + 60.0)
        ledger.finish(f"job/{i}", hop=0, owner=f"s{i}", progress={}, result=result, now=t + 3.0)
        ledger.join("job", part=str(i), now=t + 3.0)
    wake = EnvelopeCodec().encode(Envelope("job", 1, progress, {"bucket": "data", "key": "k"}, t))
    report = sim(tally_handler(clock, 2), moto_s3, clock, ledger=ledger).run(json.loads(wake))
    assert ledger.get("job").result == {"lines": 3, "total": 12}
    assert report.count("succeeded") == 1
    control = ChainControl(ledger, invoker=FaultPlan(), clock=clock, environ={})  # type: ignore[arg-type]
    assert [r.chain_id for r in control._shards(ledger.get("job"))] == ["job/0", "job/1"]
