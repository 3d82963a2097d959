"""End-to-end fixtures: real HTTP everywhere. S3 is moto's server, the ledger dynalite (moto's server when node is
missing), and the function runs in AWS's runtime interface client behind the local Lambda.

Every test here is marked ``e2e``; run the tier with ``python -m pytest tests/e2e -m e2e``.
"""

from __future__ import annotations

import json
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda import ChainRecord
from recurse_lambda.aws import DynamoDBLedger
from recurse_lambda.local import EmbeddedS3
from recurse_lambda.local.embedded_s3 import isolated_session
from recurse_lambda.local.lambda_fixture import (  # noqa: F401 - fixtures
    create_ledger_table,
    dynamodb_client,
    emulation,
    ledger_endpoint,
    local_lambda,
)
from recurse_lambda.local.lambda_runtime import LocalLambda

pytest.importorskip(
    "awslambdaric", reason="the e2e tier needs awslambdaric (pip install 'recurse-lambda[lambda]')"
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent
BUCKET = "e2e-input"
BIG_KEY = "big.txt"
BIG_SIZE = 64 * 1024 * 1024


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def text_object(size: int, seed: int = 7) -> bytes:
    """``size`` bytes of lines (about 64 bytes each, some ending in \\r\\n), ending in a newline."""
    alphabet = bytes(range(97, 123)) * 10
    table = bytearray(alphabet[:256])
    for b in range(3):
        table[b] = 10  # b"\n": 3/256 of the bytes
    table[3] = 13  # b"\r", sometimes right before a newline
    data = bytearray(random.Random(seed).randbytes(size).translate(bytes(table)))
    data[-1] = 10
    return bytes(data)


def line_count_reference(data: bytes) -> dict[str, int]:
    """examples/line_count.py's result, computed directly from its docstring's definition."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    checksum = 0
    for piece in pieces:
        content = piece[:-1] if piece.endswith(b"\r") else piece
        checksum = (checksum + zlib.crc32(content)) % 2**64
    return {"lines": len(pieces), "bytes": len(data), "checksum": checksum}


@pytest.fixture(scope="session")
def s3() -> Iterator[EmbeddedS3]:
    with EmbeddedS3() as server:
        yield server


@pytest.fixture(scope="session")
def big_object(s3: EmbeddedS3) -> dict[str, Any]:
    """A 64 MB text object in the embedded S3, and the result line_count must give for it."""
    data = text_object(BIG_SIZE)
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key=BIG_KEY, Body=data)
    return {"bucket": BUCKET, "key": BIG_KEY, "expected": line_count_reference(data)}


@pytest.fixture
def ledger_table(ledger_endpoint: str) -> tuple[str, DynamoDBLedger]:  # noqa: F811
    """A fresh ledger table in the session's DynamoDB, and a ledger on it for the test's own reads."""
    name = f"chains-{uuid.uuid4().hex[:8]}"
    client = dynamodb_client(ledger_endpoint)
    create_ledger_table(client, name)
    return name, DynamoDBLedger(name, client=lambda: client)


def function_environ(s3: EmbeddedS3, dynamodb_endpoint: str, table: str) -> dict[str, str]:
    return {
        "RECURSE_LAMBDA_TABLE": table,
        "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint,
    }


def lambda_client(fn: LocalLambda) -> Any:
    return isolated_session("testing", "testing").client("lambda", endpoint_url=fn.endpoint_url)


def start_chain(fn: LocalLambda, event: dict[str, Any]) -> str:
    """Run the first hop through the Invoke API (RequestResponse) and return its chain id."""
    answer = lambda_client(fn).invoke(
        FunctionName=fn.name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
    )
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return str(body["chain_id"])


def wait_for_end(ledger: DynamoDBLedger, chain_id: str, fn: LocalLambda, limit: float = 120.0) -> ChainRecord:
    end = time.time() + limit
    while time.time() < end:
        record = ledger.get(chain_id)
        if record is not None and record.status.terminal:
            return record
        time.sleep(0.1)
    raise AssertionError(f"chain {chain_id} did not end in {limit} s; logs:\n{fn.logs()[-5000:]}")
