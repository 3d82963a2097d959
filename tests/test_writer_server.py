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


# -- the JuiceFS gateway (the integration tier): it honours no conditional write and keeps no metadata of a
# multipart upload, so a retry after the completion recognises the object by the done marker ------------------


def make_big_handler(clock: VirtualClock) -> Any:
    from collections.abc import Generator

    from recurse_lambda import Run, recursive
    from recurse_lambda.s3._writer import open_writer
    from tests.test_writer_properties import Progress

    @recursive(state=Progress)
    def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, Any]]:
        out = open_writer(run, event["bucket"], "result", state.out, part_size=5 * 1024 * 1024)
        while state.i < event["n"]:
            out.write(block(state.i))
            clock.advance(0.1)
            state.i += 1
            yield
        return out.complete()

    return handler


@pytest.fixture
def gateway() -> Iterator[Any]:
    """A JuiceFS gateway on 127.0.0.1 for one test (skipped where it cannot start; the integration tier has it)."""
    from recurse_lambda.local.juicefs import JuiceFSError, JuiceFSGateway

    try:
        started = JuiceFSGateway().__enter__()
    except JuiceFSError as exc:  # pragma: no cover - the integration tier has it
        pytest.skip(f"no JuiceFS gateway: {exc}")
    try:
        yield started
    finally:
        started.__exit__(None, None, None)


def block(i: int) -> bytes:
    return (f"{i:08d}".encode() + bytes(range(256)) * 1000)[: 700_000 - i]


@pytest.mark.integration
@pytest.mark.parametrize("seed", range(2))
def test_chains_on_the_juicefs_gateway(gateway: Any, seed: int) -> None:
    client = gateway.client()
    bucket = f"writer-{seed}"
    client.create_bucket(Bucket=bucket)
    clock = VirtualClock()
    faults = FaultPlan(duplicate=0.3, crash=0.3, crash_at=(("before_finish", 2), ("before_finish", 3)))
    sim = Simulator(
        make_big_handler(clock),
        timeout=0.5,
        clock=clock,
        ledger="memory",
        s3_client=gateway.client,
        faults=faults,
        seed=seed,
    )
    report = sim.run({"bucket": bucket, "n": 20})
    assert report.status == "SUCCEEDED", report.error
    got = client.get_object(Bucket=bucket, Key="result")["Body"].read()
    assert got == b"".join(block(i) for i in range(20))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys[-1] == "result" and all(k.endswith("/done") for k in keys[:-1]) and len(keys) <= 2
    assert list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == []


@pytest.mark.integration
def test_compose_on_the_juicefs_gateway_recognises_its_output_after_a_crash(gateway: Any) -> None:
    # The gateway keeps no metadata: only the done marker, written before the completion, lets the rerun of
    # reduce recognise the output an attempt completed just before it died.
    from recurse_lambda.s3 import compose_output, piece_key

    client = gateway.client()
    client.create_bucket(Bucket="compose")
    mib = 1024 * 1024
    pieces, whole = [], b""
    for i, size in enumerate([6 * mib, 100_000, 5 * mib + 3]):  # copied, merged, copied (the last)
        data = bytes([65 + i]) * size
        key = piece_key("out.bin", i, "job-1")
        etag = client.put_object(Bucket="compose", Key=key, Body=data)["ETag"]
        pieces.append({"bucket": "compose", "key": key, "etag": etag.strip('"'), "bytes": size})
        whole += data

    class DiesAfterCompleting:
        def complete_multipart_upload(self, **kwargs: Any) -> Any:
            client.complete_multipart_upload(**kwargs)
            raise SystemExit("the invocation died")

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

    with pytest.raises(SystemExit):
        compose_output(DiesAfterCompleting(), "compose", "out.bin", pieces)
    result = compose_output(client, "compose", "out.bin", pieces)  # the rerun of reduce
    assert result["bytes"] == len(whole)
    assert client.get_object(Bucket="compose", Key="out.bin")["Body"].read() == whole
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="compose")["Contents"]]
    assert keys[-1] == "out.bin" and len(keys) == 2 and keys[0].endswith("/done")  # pieces gone
    assert list(client.list_multipart_uploads(Bucket="compose").get("Uploads", [])) == []
