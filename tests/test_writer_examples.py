"""examples/project_jsonl.py and examples/manifest.py as whole chains in the simulator, on moto, under faults,
against their contracts computed another way: the output object byte for byte, and the result."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from examples import manifest, project_jsonl
from recurse_lambda import RecursiveHandler
from recurse_lambda.local import ChainReport, FaultPlan, Simulator, VirtualClock
from recurse_lambda.s3._writer import OutputExistsError
from tests.test_examples import paced

BUCKET = "data"
OUT = "results"
FAULTS = FaultPlan(
    duplicate=0.3, crash=0.2, recycle=0.5, crash_at=(("before_finish", 3), ("after_checkpoint", 2))
)


@pytest.fixture
def s3(moto_s3: Any) -> Iterator[Any]:
    moto_s3.create_bucket(Bucket=BUCKET)
    moto_s3.create_bucket(Bucket=OUT)
    yield moto_s3


def simulate(
    handler: RecursiveHandler, event: dict[str, Any], *, faults: Any = None, seed: int = 0
) -> ChainReport:
    clock = VirtualClock()
    sim = Simulator(
        paced(handler, clock),
        timeout=0.5,
        clock=clock,
        ledger="memory",
        s3_client=lambda: boto3.client("s3", region_name="us-east-1"),
        faults=faults,
        seed=seed,
    )
    return sim.run(event)


def out_keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=OUT).get("Contents", ())]


# -- project_jsonl -----------------------------------------------------------------------------------------


def jsonl_input(rng: random.Random, n: int) -> bytes:
    lines: list[bytes] = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.05:
            lines.append(rng.choice([b"", b"  \t ", b"\r"]))  # blank: ignored
        elif kind < 0.1:
            lines.append(
                rng.choice([b"{not json", b"[1, 2]", b"42", b'"text"', b"null", b"NaN", b"\xff\xfe"])
            )
        else:
            rec: dict[str, Any] = {
                "id": i,
                "user": rng.choice(["ann", "bö", "日本", None]),
                "extra": "x" * 30,
            }
            if rng.random() < 0.8:
                rec["amount"] = round(rng.uniform(0, 100), 2)
            lines.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode())
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")


def project_reference(data: bytes) -> tuple[bytes, int, int]:
    out, records, skipped = [], 0, 0
    for line in data.split(b"\n"):
        if not line.strip(b" \t\r\n"):
            continue
        try:
            rec = json.loads(
                line.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
            )
        except ValueError:
            skipped += 1
            continue
        if not isinstance(rec, dict):
            skipped += 1
            continue
        value = {"id": rec.get("id"), "user": rec.get("user"), "amount": rec.get("amount")}
        out.append((json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        records += 1
    return b"".join(out), records, skipped


@pytest.mark.parametrize("seed", range(4))
def test_project_jsonl_writes_its_contract_once_under_faults(s3: Any, seed: int) -> None:
    data = jsonl_input(random.Random(seed), 45_000)
    s3.put_object(Bucket=BUCKET, Key="in.jsonl", Body=data)
    event = {"bucket": BUCKET, "key": "in.jsonl", "out_bucket": OUT, "out_key": f"projected-{seed}.jsonl"}
    report = simulate(project_jsonl.handler, event, faults=FAULTS, seed=seed)
    assert report.status == "SUCCEEDED", report.error
    expected, records, skipped = project_reference(data)
    got = s3.get_object(Bucket=OUT, Key=event["out_key"])["Body"].read()
    assert got == expected
    etag = s3.head_object(Bucket=OUT, Key=event["out_key"])["ETag"].strip('"')
    assert report.result == {
        "records": records,
        "skipped": skipped,
        "output": {"bucket": OUT, "key": event["out_key"], "etag": etag, "bytes": len(expected)},
    }
    assert out_keys(s3) == [event["out_key"]]
    assert list(s3.list_multipart_uploads(Bucket=OUT).get("Uploads", [])) == []


def test_project_jsonl_writes_a_multipart_output(s3: Any) -> None:
    """An output over one part (8 MiB by default): parts across hops, completed once."""
    rng = random.Random(7)
    users = ["ü" * rng.randrange(40, 120) for _ in range(50)]
    data = b"".join(
        json.dumps({"id": i, "user": rng.choice(users), "amount": i / 4}).encode() + b"\n"
        for i in range(55_000)
    )
    s3.put_object(Bucket=BUCKET, Key="big.jsonl", Body=data)
    event = {"bucket": BUCKET, "key": "big.jsonl", "out_bucket": OUT, "out_key": "big.jsonl"}
    report = simulate(project_jsonl.handler, event, faults=FaultPlan(duplicate=0.3), seed=1)
    assert report.status == "SUCCEEDED", report.error
    expected, _, _ = project_reference(data)
    assert len(expected) > 8 * 1024 * 1024
    assert s3.get_object(Bucket=OUT, Key="big.jsonl")["Body"].read() == expected
    assert report.result["output"]["etag"].endswith("-2")
    assert (
        out_keys(s3) == ["big.jsonl"] and list(s3.list_multipart_uploads(Bucket=OUT).get("Uploads", [])) == []
    )


def test_project_jsonl_fails_before_any_work_when_the_output_exists(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="in.jsonl", Body=b'{"id": 1}\n')
    s3.put_object(Bucket=OUT, Key="taken", Body=b"keep me")
    event = {"bucket": BUCKET, "key": "in.jsonl", "out_bucket": OUT, "out_key": "taken"}
    report = simulate(project_jsonl.handler, event)
    assert report.status == "FAILED" and OutputExistsError.__name__ in (report.error or "")
    assert s3.get_object(Bucket=OUT, Key="taken")["Body"].read() == b"keep me"


# -- manifest ----------------------------------------------------------------------------------------------


def manifest_reference(s3: Any, prefix: str) -> tuple[list[dict[str, Any]], int]:
    lines, total = [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents", ()):
            lines.append({"key": o["Key"], "size": o["Size"], "etag": o["ETag"].strip('"')})
            total += o["Size"]
    return lines, total


@pytest.mark.parametrize("seed", range(2))
def test_manifest_lists_every_object_once_in_order_under_faults(s3: Any, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(2100):
        s3.put_object(
            Bucket=BUCKET, Key=f"logs/{rng.randrange(10**6):06d}-{i}-é", Body=b"y" * rng.randrange(50)
        )
    s3.put_object(Bucket=BUCKET, Key="elsewhere", Body=b"no")
    event = {"bucket": BUCKET, "prefix": "logs/", "out_bucket": OUT, "out_key": "manifest.jsonl"}
    report = simulate(manifest.handler, event, faults=FAULTS, seed=seed)
    assert report.status == "SUCCEEDED", report.error
    lines, total = manifest_reference(s3, "logs/")
    expected = "".join(
        json.dumps(x, ensure_ascii=False, separators=(",", ":")) + "\n" for x in lines
    ).encode()
    assert s3.get_object(Bucket=OUT, Key="manifest.jsonl")["Body"].read() == expected
    assert report.result["objects"] == 2100 and report.result["bytes"] == total
    assert report.result["output"]["bytes"] == len(expected)
    assert (
        out_keys(s3) == ["manifest.jsonl"]
        and list(s3.list_multipart_uploads(Bucket=OUT).get("Uploads", [])) == []
    )


def test_manifest_with_presigned_urls(s3: Any) -> None:
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"p/{i}", Body=b"z" * i)
    event = {"bucket": BUCKET, "prefix": "p/", "out_bucket": OUT, "out_key": "m", "presign_seconds": 600}
    report = simulate(manifest.handler, event)
    assert report.status == "SUCCEEDED", report.error
    lines = s3.get_object(Bucket=OUT, Key="m")["Body"].read().decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [list(r) for r in records] == [["key", "size", "etag", "url"]] * 5
    assert [r["key"] for r in records] == [f"p/{i}" for i in range(5)]
    assert all("Expires" in r["url"] and f"/{r['key']}?" in r["url"] for r in records)
    assert report.result["objects"] == 5 and report.result["bytes"] == 10
