"""Per-hop library time of examples/line_count.py through the local Lambda (docs/local-lambda.md).

The real production path: the function runs in AWS's runtime interface client (``awslambdaric``) in worker
processes, hands off with boto3's ``Invoke`` over HTTP to the local Lambda, reads S3 from moto's server and
keeps its ledger in dynalite (moto's server without node). For each hop the library's own time is
``duration − chunk_time − handoff_time`` from the hop log record (claim, clients, HEAD, envelope, everything
outside the chunks and the hand-off). Also counted: timeouts (workers killed at the deadline), retries and
on-failure records. Run: ``python benchmarks/local_lambda_hops.py [--size-mb 64] [--timeout 1] [--workers 2]``;
the last line printed is one JSON object.
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
                "line_count.handler",
                ROOT / "examples",
                name="line-count",
                timeout=args.timeout,
                workers=args.workers,
                environ=env,
            ) as fn:
                client = isolated_session("testing", "testing").client("lambda", endpoint_url=fn.endpoint_url)
                began = time.time()
                answer = client.invoke(
                    FunctionName=fn.name, Payload=json.dumps({"bucket": "bench-input", "key": "k"}).encode()
                )
                first = json.loads(answer["Payload"].read())
                if "chain_id" not in first:
                    sys.exit(f"the first hop failed: {first}\n{fn.logs()[-3000:]}")
                chain_id = first["chain_id"]
                record = ledger.get(chain_id)
                while record is None or not record.status.terminal:
                    time.sleep(0.05)
                    record = ledger.get(chain_id)
                elapsed = time.time() - began
                fn.wait_idle(30)
                hops = [r for r in fn.log_records() if r.get("kind") == "hop"]
                for h in hops:
                    h["library"] = round(h["duration"] - (h["chunk_time"] or 0) - (h["handoff_time"] or 0), 4)
                    print(
                        json.dumps(
                            {
                                k: h.get(k)
                                for k in (
                                    "hop",
                                    "attempt",
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
                }
                print(json.dumps(summary))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
