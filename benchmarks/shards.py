"""How close a sharded job comes to the ideal speed-up, in virtual time (issue: parallel shards with a join).

One object of fixed-width records (16 bytes each) holds ``--hours`` of chunk work: every record costs the same
virtual time, so the ideal makespan with N shards is total work / N. The job runs through the real runner in the
simulator (a ``@recursive(shards=Shards(N, reduce=...))`` handler, an in-memory ledger, an in-process moto S3 for
the object, a 900 s function timeout, Lambda's 50 ms delivery delay, 20 ms per invoke call and 10 ms per ledger
write or read, as from a Lambda function to DynamoDB), with 1, 10 and 100 shards. The makespan runs from the job's delivery to the end of the invocation
that commits the reduced result, and so includes the split, every hand-off and the reduce.

Targets: makespan ≤ 1.10 × ideal at N = 10 and ≤ 1.25 × ideal at N = 100. The last line printed is one JSON
object keyed by the shard count (``"1"``, ``"10"``, ``"100"``), each holding ``makespan_s`` and
``makespan_ratio`` (makespan / ideal). Run: ``python benchmarks/shards.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import InMemoryLedger, Run, Shards, recursive
from recurse_lambda.local import Simulator, VirtualClock

RECORD = 16  # bytes per record
TIMEOUT = 900.0
INVOKE_LATENCY = 0.020  # seconds per asynchronous invoke call
LEDGER_LATENCY = 0.010  # seconds per ledger request (every start, claim, checkpoint, join, get ...)
TARGETS = {1: None, 10: 1.10, 100: 1.25}


class Progress(BaseModel):
    offset: int = 0
    records: int = 0
    total: int = 0


def total(results: list[dict[str, int]]) -> dict[str, int]:
    return {"records": sum(r["records"] for r in results), "total": sum(r["total"] for r in results)}


def job(clock: VirtualClock, count: int, per_record: float, batch: int) -> Any:
    @recursive(
        state=Progress,
        shards=Shards(count=count, reduce=total, min_bytes=RECORD),
        checkpoint_every_seconds=None,
    )
    def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, int]]:
        assert run.shard is not None
        for b in run.shard.lines(start=state.offset, encoding=None).batches(batch):
            clock.advance(per_record * len(b))  # the chunk's work
            state.records += len(b)
            state.total += sum(int(line) for line in b)
            state.offset = b.end
            yield
        return {"records": state.records, "total": state.total}

    return handler


def s3_client() -> Any:
    import boto3
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ[name] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    mock = mock_aws()
    mock.start()  # in-process: nothing leaves the interpreter
    return boto3.client("s3", region_name="us-east-1")


def run(s3: Any, count: int, records: int, per_record: float, batch: int) -> dict[str, Any]:
    clock = VirtualClock()
    handler = job(clock, count, per_record, batch)
    sim = Simulator(
        handler,
        clock=clock,
        timeout=TIMEOUT,
        ledger=InMemoryLedger(),
        s3_client=lambda: s3,
        invoke_latency=INVOKE_LATENCY,
        ledger_latency=LEDGER_LATENCY,
        max_invocations=1_000_000,
    )
    t0 = time.perf_counter()
    report = sim.run({"bucket": "bench", "key": "records.txt"})
    report.raise_for_status()
    assert report.result["records"] == records, report.result
    work = records * per_record
    ideal = work / count
    makespan = report.ended - report.started
    return {
        "shards": count,
        "work_s": work,
        "ideal_s": ideal,
        "makespan_s": round(makespan, 3),
        "makespan_ratio": round(makespan / ideal, 4),
        "invocations": report.invocations,
        "timeouts": report.timeouts,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=8.0, help="hours of chunk work in the job (default 8)")
    parser.add_argument("--per-record", type=float, default=0.5, help="virtual seconds of work per record")
    parser.add_argument("--batch", type=int, default=4, help="records per chunk (per yield)")
    parser.add_argument("--shards", type=int, nargs="+", default=list(TARGETS), help="shard counts to run")
    args = parser.parse_args(argv)
    records = int(args.hours * 3600 / args.per_record)
    s3 = s3_client()
    s3.create_bucket(Bucket="bench")
    body = b"".join(b"%015d\n" % (i % 1000) for i in range(records))
    s3.put_object(Bucket="bench", Key="records.txt", Body=body)
    print(
        f"{args.hours:g} h of work: {records} records of {args.per_record:g} s, {args.batch} per chunk, "
        f"{len(body)} bytes; timeout {TIMEOUT:.0f} s"
    )
    print(
        f"{'shards':>6} {'ideal s':>10} {'makespan s':>11} {'ratio':>7} {'target':>7} {'invocations':>11} {'wall s':>7}"
    )
    figures: dict[str, dict[str, float]] = {}
    met = True
    for count in args.shards:
        r = run(s3, count, records, args.per_record, args.batch)
        target = TARGETS.get(count)
        ok = target is None or r["makespan_ratio"] <= target
        met = met and ok
        print(
            f"{count:>6} {r['ideal_s']:>10.1f} {r['makespan_s']:>11.1f} {r['makespan_ratio']:>7.4f} "
            f"{'≤' + format(target, '.2f') if target else '-':>7} {r['invocations']:>11} {r['wall_s']:>7.1f}"
            f"{'' if ok else '  MISSED'}"
        )
        figures[str(count)] = {"makespan_s": r["makespan_s"], "makespan_ratio": r["makespan_ratio"]}
    print(json.dumps(figures))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
