"""Shards over compressed objects (issue 12, item 6), and DecompressionError's place in the error tree."""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
import zlib
from collections.abc import Generator
from typing import Any

import pytest
import zstandard
from pydantic import BaseModel

import recurse_lambda
from recurse_lambda import InMemoryLedger, Run, Shards, recursive
from recurse_lambda import DecompressionError, RecurseLambdaError, s3
from recurse_lambda.config import PERMANENT_ERRORS
from recurse_lambda.local import Simulator, VirtualClock
from recurse_lambda.s3 import _gzip_points


def test_decompression_error_is_public_permanent_and_still_a_value_error() -> None:
    assert issubclass(DecompressionError, RecurseLambdaError)
    assert issubclass(DecompressionError, ValueError)  # what it was before it joined the tree
    assert _gzip_points.DecompressionError is DecompressionError  # the old import still works
    assert s3.DecompressionError is DecompressionError
    assert "DecompressionError" in recurse_lambda.__all__
    assert DecompressionError.__module__ == "recurse_lambda"
    assert issubclass(DecompressionError, PERMANENT_ERRORS)


# ------------------------------------------------------------------------------------------------ helpers


class Seen(BaseModel):
    cursor: int | dict[str, Any] = 0
    lines: list[tuple[int, int]] = []  # (length, CRC-32) of each line, in order


def seen_handler(clock: VirtualClock, count: int, batch: int = 7, **shard_options: Any) -> Any:
    """Each shard lists its lines, ``batch`` lines per virtual second (several hops per shard), resuming from
    ``batch.cursor``; the job's result is the shards' lists, concatenated in shard order."""

    def reduce(results: list[list[list[int]]]) -> dict[str, Any]:
        return {"lines": [line for r in results for line in r], "shards": len(results)}

    shards = Shards(count=count, reduce=reduce, min_bytes=1, **shard_options)

    @recursive(state=Seen, shards=shards)
    def handler(event: dict[str, Any], state: Seen, run: Run) -> Generator[None, None, Any]:
        assert run.shard is not None
        for b in run.shard.lines(start=state.cursor, encoding=None, range_size=4096).batches(batch):
            clock.advance(1.0)
            state.lines += [(len(line), zlib.crc32(line)) for line in b]
            state.cursor = b.cursor
            yield
        return state.lines

    return handler


def expected(content: bytes) -> list[list[int]]:
    """The lines a one-pass read finds (``\\n`` ends a line, a ``\\r`` before it is dropped)."""
    pieces = content.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    lines = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
    return [[len(line), zlib.crc32(line)] for line in lines]


def run_job(s3: Any, key: str, body: bytes, count: int, **options: Any) -> Any:
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key=key, Body=body)
    clock = VirtualClock()
    simulator = Simulator(
        seen_handler(clock, count),
        clock=clock,
        timeout=60.0,
        s3_client=lambda: s3,
        ledger=InMemoryLedger(),
        **options,
    )
    return simulator.run({"bucket": "data", "key": key})


def text(seed: int, n: int = 3000) -> bytes:
    """Lines of many lengths (empty, short, 20 KB), LF and CRLF, multi-byte UTF-8, without a final newline."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = rng.choice([b"", b"%d" % i, "é€%d".encode() % i, b"y" * rng.choice([300, 20_000])])
        out.append(body + rng.choice([b"\n", b"\r\n"]))
    return b"".join(out) + b"last line without a newline"


def pieces(content: bytes, seed: int, sizes: tuple[int, ...] = (0, 1, 700, 9000, 50_000)) -> list[bytes]:
    """``content`` cut at random places, with empty pieces among them."""
    rng, out, i = random.Random(seed), [], 0
    while i < len(content):
        n = rng.choice(sizes)
        out.append(content[i : i + n])
        i += n
    return out


def bgzf_member(data: bytes) -> bytes:
    """A BGZF block: a gzip member whose extra field holds the 'BC' subfield (the block's size minus 1)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = c.compress(data) + c.flush()
    bsize = 12 + 6 + len(deflated) + 8 + 6  # header with XLEN, the subfield, data, trailer
    head = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\0\xff" + struct.pack("<H", 6)
    return (
        head
        + b"BC"
        + struct.pack("<HH", 2, bsize - 1)
        + deflated
        + struct.pack("<II", zlib.crc32(data), len(data))
    )


def cli(args: list[str], pieces_: list[bytes]) -> bytes:
    """Each piece compressed by a command-line tool (``gzip -c``, ``zstd -c``), concatenated."""
    return b"".join(subprocess.run(args, input=p, capture_output=True, check=True).stdout for p in pieces_)


# ------------------------------------------------------------------------------------------------ whole jobs


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda ps: b"".join(gzip.compress(p, compresslevel=6) for p in ps), id="gzip-members"),
        pytest.param(
            lambda ps: (
                b"".join(bgzf_member(p[i : i + 60_000]) for p in ps for i in range(0, max(len(p), 1), 60_000))
                + bgzf_member(b"")
            ),
            id="bgzf",
        ),
        pytest.param(lambda ps: cli(["gzip", "-c", "-n"], ps), id="gzip-cli"),
        pytest.param(lambda ps: cli(["zstd", "-c", "-q"], ps), id="zstd-cli"),
        pytest.param(
            lambda ps: b"".join(zstandard.ZstdCompressor(level=3).compress(p) for p in ps), id="zstd-frames"
        ),
    ],
)
def test_a_sharded_job_over_members_or_frames_reads_what_one_pass_reads(moto_s3, make):
    content = text(1)
    body = make(pieces(content, 2))
    report = run_job(moto_s3, "logs.gz", body, 6)
    report.raise_for_status()
    assert report.result["shards"] > 2  # cut at member or frame starts, not refused
    assert report.result["lines"] == expected(content)
