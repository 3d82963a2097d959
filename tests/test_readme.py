"""The README's example handler runs as written: extracted from README.md and run as a chain on moto."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import boto3
from moto import mock_aws

from recurse_lambda.local import Simulator, VirtualClock

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_handler_counts_lines_as_a_chain():
    namespace: dict = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    handler = namespace["handler"]
    data = b"".join(f"line {i} \xc3\xa9\r\n".encode() if i % 3 else b"x\n" for i in range(50_000)) + b"tail"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="my-bucket")
        s3.put_object(Bucket="my-bucket", Key="data.txt", Body=data)
        sim = Simulator(handler, timeout=60.0, clock=VirtualClock(), ledger="memory", s3_client=lambda: s3)
        report = sim.run({"bucket": "my-bucket", "key": "data.txt"})
    lines = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    lines = lines[:-1] + ([lines[-1]] if lines[-1] else [])
    assert report.status == "SUCCEEDED"  # resuming this same code mid-object: tests/test_examples.py
    assert report.result == {"lines": len(lines), "checksum": sum(map(zlib.crc32, lines)) % 2**64}


def test_the_readme_simulator_snippet_names_real_parameters():
    snippet = python_blocks()[1]
    assert "Simulator(" in snippet and "FaultPlan(" in snippet
    for name in re.findall(r"(\w+)=", snippet):
        assert name in {"timeout", "clock", "faults", "duplicate", "crash", "seed"}, name
