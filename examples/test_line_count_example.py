"""Tests of line_count.py as a user of recurse-lambda writes them, with the fixtures its pytest plugin provides.

Run them with ``python -m pytest examples/test_line_count_example.py`` (the ``embedded_s3`` fixture needs
``pip install "recurse-lambda[local]"``). Everything runs in this process and in virtual time: no AWS account,
no network, no sleeping.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from line_count import handler  # as Lambda imports it: the handler is "line_count.handler"

# Every simulate() in this module: a 1-second function in which each chunk of 20,000 lines costs 0.4 virtual
# seconds, so the object below takes several hops; run.s3 reads from the embedded S3.
pytestmark = pytest.mark.recurse_lambda(timeout=1.0, chunk_cost=0.4, s3=True)


def sample(n: int = 60_000) -> bytes:
    """LF and CRLF endings, empty lines, multi-byte characters, and a last line without a newline."""
    lines = [f"{i} {'γάμμα ' * (i % 4)}".encode() if i % 7 else b"" for i in range(n)]
    return b"".join(line + (b"\r\n" if i % 3 == 0 else b"\n") for i, line in enumerate(lines)) + b"tail"


def reference(data: bytes) -> dict[str, int]:
    """The result line_count.py promises, computed another way."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    checksum = sum(zlib.crc32(p.removesuffix(b"\r")) for p in pieces) % 2**64
    return {"lines": len(pieces), "bytes": len(data), "checksum": checksum}


DATA = sample()


@pytest.fixture(scope="module")
def event(embedded_s3: Any) -> dict[str, str]:
    bucket = embedded_s3.create_bucket()  # a fresh name: moto's buckets outlive a test
    embedded_s3.put(bucket, "data.txt", DATA)
    return {"bucket": bucket, "key": "data.txt"}


def test_counts_every_line_over_several_hops(simulate: Any, event: dict[str, str]) -> None:
    report = simulate(handler, event).raise_for_status()
    assert report.result == reference(DATA)
    assert report.hops >= 3 and report.timeouts == 0


def test_a_lost_hand_off_is_sent_again(simulate: Any, fault_schedule: Any, event: dict[str, str]) -> None:
    # The first invocation commits its hand-off and dies before its invoke reaches Lambda.
    report = simulate(handler, event, faults=fault_schedule("crash@after_handoff=1"))
    assert report.raise_for_status().result == reference(DATA)
    assert report.retries == 1 and report.count("resent") == 1


@pytest.mark.parametrize("seed", range(6))
def test_faults_never_corrupt_the_count(simulate: Any, event: dict[str, str], seed: int) -> None:
    report = simulate(handler, event, faults="duplicate=0.3,crash=0.2,recycle=0.5", seed=seed)
    if report.status == "SUCCEEDED":
        assert report.result == reference(DATA)
    else:  # failed for good after Lambda's retries: the last committed state counts exactly what it read
        state = report.last_state
        expected = reference(DATA[: state["offset"]])
        assert (state["lines"], state["checksum"]) == (expected["lines"], expected["checksum"])


def test_a_duplicate_forks_the_chain_only_without_a_ledger(simulate: Any, event: dict[str, str]) -> None:
    # simulate() uses an in-memory ledger; line_count.py runs without one unless RECURSE_LAMBDA_TABLE is set.
    with_ledger = simulate(handler, event, faults="duplicate=0.3", seed=1)
    assert with_ledger.count("succeeded") == 1 and with_ledger.duplicates_dropped >= 1
    stateless = simulate(handler, event, faults="duplicate=0.3", seed=1, ledger=None)
    assert stateless.result == reference(DATA)  # each copy counts right...
    assert stateless.count("succeeded") > 1  # ...but several copies of the chain ran to the end


def test_counts_a_gzip_object_decompressed(simulate: Any, embedded_s3: Any) -> None:
    # The same text gzipped: counted decompressed over several hops, each resuming inside the gzip member from
    # the cursor the last one committed; `bytes` is the decompressed size, `object_bytes` the stored one.
    import gzip

    stored = gzip.compress(DATA, mtime=0)
    bucket = embedded_s3.create_bucket()
    embedded_s3.put(bucket, "data.txt.gz", stored)
    report = simulate(handler, {"bucket": bucket, "key": "data.txt.gz"}).raise_for_status()
    assert report.result == {**reference(DATA), "object_bytes": len(stored)}
    assert report.hops >= 3 and isinstance(report.last_state["cursor"], dict)
