"""Per-hop library time of examples/line_count.py through the local Lambda (docs/local-lambda.md).

The real production path: the function runs in AWS's runtime interface client (``awslambdaric``) in worker
processes, hands off with boto3's ``Invoke`` over HTTP to the local Lambda, reads S3 from moto's server and
keeps its ledger in dynalite (moto's server without node). For each hop the library's own time is the hop log
record's ``library_time`` (``duration − chunk_time − handoff_time``: claim, clients, HEAD, envelope, everything
outside the chunks and the hand-off). Also counted: timeouts (workers killed at the deadline), retries and
on-failure records. ``--primed`` runs tests/e2e/primed_count.py instead: the same handler with its clients created
at import, in the init phase, as the library does on Lambda once it primes them. Run:
``python benchmarks/local_lambda_hops.py [--size-mb 64] [--timeout 1] [--workers 2] [--primed]``; the last line
printed is one JSON object (``cold``: the library time of each worker's first hop; ``warm``: the others).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recurse_lambda.aws import DynamoDBLedger  # noqa: E402
from recurse_lambda.local import EmbeddedS3  # noqa: E402
from recurse_lambda.local.embedded_s3 import isolated_session  # noqa: E402
from recurse_lambda.local.lambda_fixture import create_ledger_table, dynamodb_client, ledger_server  # noqa: E402
from recurse_lambda.local.lambda_runtime import LocalLambda  # noqa: E402
from tests.e2e.conftest import line_count_reference, text_object  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--primed", action="store_true", help="clients created at init (tests/e2e/primed_count.py)"
    )
    args = parser.parse_args()
    data = text_object(args.size_mb * 1024 * 1024)
    expected = line_count_reference(data)
    server = ledger_server().start()
    try:
        with EmbeddedS3() as s3:
            s3.client().create_bucket(Bucket="bench-input")
            s3.client().put_object(Bucket="bench-input", Key="k", Body=data)
            ddb = dynamodb_client(server.endpoint_url)
            create_ledger_table(ddb, "chains")
            ledger = DynamoDBLedger("chains", client=lambda: ddb)
            env = {
                "RECURSE_LAMBDA_TABLE": "chains",
                "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
                "AWS_ENDPOINT_URL_DYNAMODB": server.endpoint_url,
            }
            with LocalLambda(
                "primed_count.handler" if args.primed else "line_count.handler",
                ROOT / "tests" / "e2e" if args.primed else ROOT / "examples",
                python_path=[str(ROOT / "examples")],
                name="line-count",
                timeout=args.timeout,
                workers=args.workers,
                environ=env,
            ) as fn:
                client = isolated_session("testing", "testing").client("lambda", endpoint_url=fn.endpoint_url)
                began = time.time()
                # Started as a trigger would: an asynchronous invoke, retried by the local Lambda if it fails.
                client.invoke(
                    FunctionName=fn.name,
                    InvocationType="Event",
                    Payload=json.dumps({"bucket": "bench-input", "key": "k"}).encode(),
                )
                record = None
                while record is None or not record.status.terminal:
                    time.sleep(0.05)
                    records = ledger.list()
                    record = records[0] if records else None
                    if time.time() - began > 600:
                        sys.exit(f"no end after 600 s\n{fn.logs()[-3000:]}")
                elapsed = time.time() - began
                fn.wait_idle(30)
                hops = [r for r in fn.log_records() if r.get("kind") == "hop"]
                seen_workers: set[int] = set()
                for h in hops:  # a worker's first hop ran in a fresh process (no restarts: see "timeouts")
                    h["library"] = h["library_time"]
                    h["cold"] = h["worker"] not in seen_workers
                    seen_workers.add(h["worker"])
                    print(
                        json.dumps(
                            {
                                k: h.get(k)
                                for k in (
                                    "hop",
                                    "attempt",
                                    "worker",
                                    "cold",
                                    "outcome",
                                    "duration",
                                    "chunk_time",
                                    "handoff_time",
                                    "library",
                                    "chunks",
                                )
                            }
                        )
                    )
                lib = [h["library"] for h in hops]
                cold = [h["library"] for h in hops if h.get("cold")]
                warm = [h["library"] for h in hops if not h.get("cold")]
                summary = {
                    "ledger": server.name,
                    "status": str(record.status),
                    "correct": record.result == expected,
                    "error": record.error,
                    "seconds": round(elapsed, 2),
                    "hops": len(hops),
                    "timeouts": sum(r.error_type == "Sandbox.Timedout" for _, r in fn.deliveries),
                    "failed_deliveries": sum(not r.ok for _, r in fn.deliveries),
                    "library_median_ms": round(statistics.median(lib) * 1000, 1) if lib else None,
                    "library_max_ms": round(max(lib) * 1000, 1) if lib else None,
                    "cold_ms": [round(x * 1000, 1) for x in cold],
                    "warm_median_ms": round(statistics.median(warm) * 1000, 1) if warm else None,
                    "warm_max_ms": round(max(warm) * 1000, 1) if warm else None,
                    "primed": args.primed,
                }
                print(json.dumps(summary))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
