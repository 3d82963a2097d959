"""The writer and the listing over HTTP, on the embedded S3 (moto's server on loopback), as the CLI's
``simulate --s3-endpoint`` reaches another S3: chains under faults give the one-pass bytes, one object, no
upload left open, and a crash after the completion is recognised through the server's answers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import moto.s3.models
import pytest

from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.local.embedded_s3 import EmbeddedS3
from recurse_lambda.s3._listing import KeyLister
from tests.test_writer_properties import BUCKET, PART, make_handler

FAULTS = FaultPlan(
    duplicate=0.3, crash=0.3, recycle=0.5, crash_at=(("before_finish", 2), ("after_checkpoint", 3))
)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedS3]:
    with EmbeddedS3() as s3:
        yield s3


@pytest.fixture
def client(server: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)  # the server runs in this process
    c = server.client()
    if BUCKET not in [b["Name"] for b in c.list_buckets().get("Buckets", ())]:
        c.create_bucket(Bucket=BUCKET)
    for o in c.list_objects_v2(Bucket=BUCKET).get("Contents", ()):
        c.delete_object(Bucket=BUCKET, Key=o["Key"])
    return c


@pytest.mark.parametrize("seed", range(4))
def test_chains_on_the_embedded_s3(server: EmbeddedS3, client: Any, seed: int) -> None:
    rng = random.Random(seed)
    records = [f"{i} " + "é" * rng.randrange(200) + "\n" for i in range(40)]
    costs = [rng.choice([0.01, 0.05, 0.2]) for _ in records]
    clock = VirtualClock()
    sim = Simulator(
        make_handler(clock),
        timeout=0.5,
        clock=clock,
        ledger="memory",
        s3_client=server.client,
        faults=FAULTS,
        seed=seed,
    )
    report = sim.run({"records": records, "costs": costs})
    assert report.status == "SUCCEEDED", report.error
    assert client.get_object(Bucket=BUCKET, Key="result")["Body"].read() == "".join(records).encode()
    assert [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["result"]
    assert list(client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == []


def test_listing_on_the_embedded_s3(client: Any) -> None:
    for i in range(30):
        client.put_object(Bucket=BUCKET, Key=f"l/{i:02d}", Body=b"a" * i)
    batches = list(KeyLister(client, BUCKET, "l/", start_after="l/09", page_size=7).batches())
    assert [len(b) for b in batches] == [7, 7, 6]
    assert [r.key for b in batches for r in b] == [f"l/{i:02d}" for i in range(10, 30)]
    assert batches[0].records[0].size == 10 and '"' not in batches[0].records[0].etag
