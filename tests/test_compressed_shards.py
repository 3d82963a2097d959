"""Shards over compressed objects (issue 12, item 6), and DecompressionError's place in the error tree."""

from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess
import zlib
from collections.abc import Generator, Iterator
from typing import Any

import boto3
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from pydantic import BaseModel

import recurse_lambda
from recurse_lambda import (
    ConfigurationError,
    DecompressionError,
    InMemoryLedger,
    RecurseLambdaError,
    Run,
    Shards,
    recursive,
    s3,
)
from recurse_lambda.config import PERMANENT_ERRORS
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.s3 import _gzip_points
from recurse_lambda.shards import split
from recurse_lambda.shards.plan import ObjectInfo, Part, plan_shards


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


def test_the_shards_hand_off_in_mid_member_and_resume_from_dict_cursors(moto_s3):
    content = text(3)
    report = run_job(moto_s3, "hops.gz", b"".join(gzip.compress(p) for p in pieces(content, 4)), 3)
    report.raise_for_status()
    assert report.result["lines"] == expected(content)
    hops = [r for r in report.rows if r.chain_id != report.chain_id]
    assert len(hops) > 2 * report.result["shards"]  # each shard ran several hops


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (gzip.compress(b"one member\n" * 50_000), ["a single member", "bgzip", "concatenated"]),
        (
            zstandard.ZstdCompressor().compress(b"one frame\n" * 50_000),
            ["a single frame", "seekable", "concatenated"],
        ),
    ],
    ids=["gzip", "zstd"],
)
def test_a_single_member_or_frame_object_is_refused_saying_how_to_write_one_that_shards(moto_s3, body, words):
    report = run_job(moto_s3, "one.bin", body, 4)
    assert report.status == "FAILED"
    assert "ConfigurationError" in report.error
    for word in words:
        assert word in report.error


def test_a_false_member_start_fails_the_job_never_a_wrong_result(moto_s3):
    """A gzip member stored verbatim (level 0) inside another looks like a member start, and decompresses."""
    inner = gzip.compress(b"inner\n" * 2000)
    content = b"before\n" * 20_000 + inner + b"\nafter\n" * 20_000
    body = gzip.compress(content, compresslevel=0) + gzip.compress(b"tail\n")
    report = run_job(moto_s3, "false.gz", body, 4)
    assert report.status == "FAILED"
    assert "DecompressionError" in report.error and "not a gzip member boundary" in report.error


def test_a_prefix_of_single_member_objects_is_cut_at_object_ends(moto_s3):
    moto_s3.create_bucket(Bucket="data")
    bodies = [text(10 + i, 400) + b"\n" for i in range(4)]
    for i, body in enumerate(bodies):
        moto_s3.put_object(Bucket="data", Key=f"in/{i}.gz", Body=gzip.compress(body))
    moto_s3.put_object(Bucket="data", Key="in/9.txt", Body=b"plain\r\nlines\n")
    clock = VirtualClock()
    simulator = Simulator(
        seen_handler(clock, 7), clock=clock, timeout=60.0, s3_client=lambda: moto_s3, ledger=InMemoryLedger()
    )
    report = simulator.run({"bucket": "data", "prefix": "in/"})
    report.raise_for_status()
    assert report.result["lines"] == expected(b"".join(bodies) + b"plain\r\nlines\n")


def test_shards_compression_none_splits_stored_bytes_without_looking(moto_s3):
    clock = VirtualClock()
    handler = seen_handler(clock, 3, compression=None)
    moto_s3.create_bucket(Bucket="data")
    moto_s3.put_object(Bucket="data", Key="n.txt", Body=b"1\n22\n333\n" * 1000)
    simulator = Simulator(
        handler, clock=clock, timeout=60.0, s3_client=lambda: moto_s3, ledger=InMemoryLedger()
    )
    report = simulator.run({"bucket": "data", "key": "n.txt"})
    report.raise_for_status()
    assert report.result["lines"] == expected(b"1\n22\n333\n" * 1000)
    with pytest.raises(ConfigurationError, match="compression"):
        Shards(count=2, reduce=list, compression="gzip")


def test_a_part_keeps_its_compression_in_the_plan_and_old_plans_still_load():
    part = Part("b", "k", "e", 100, 10, 50, None, "zstd")
    assert Part.from_json(part.to_json()) == part
    plain = Part("b", "k", "e", 100, 10, 50)
    assert "compression" not in plain.to_json()  # plans of plain objects are as before
    assert Part.from_json(plain.to_json()) == plain


def test_candidate_starts_are_found_near_the_cut_and_checked():
    members = [gzip.compress(b"%d\n" % i * 3000) for i in range(5)]
    body = b"".join(members)
    starts = [sum(map(len, members[:i])) for i in range(5)]
    read = lambda a, b: body[a:b]  # noqa: E731
    assert split.find_start("gzip", read, 1, len(body)) == starts[1]
    assert split.find_start("gzip", read, starts[2], len(body)) == starts[2]
    assert split.find_start("gzip", read, starts[4] + 1, len(body)) is None
    garbage = b"\x1f\x8b\x08\x00" + bytes(random.Random(5).randrange(256) for _ in range(5000))
    assert split.find_start("gzip", lambda a, b: garbage[a:b], 0, len(garbage)) is None
    frames = [zstandard.ZstdCompressor().compress(b"%d\n" % i * 3000) for i in range(3)]
    zbody = b"".join(frames)
    assert split.find_start("zstd", lambda a, b: zbody[a:b], 1, len(zbody)) == len(frames[0])


# ------------------------------------------------------------------------------------------------ the property


@pytest.fixture(scope="module")
def moto_s3_session() -> Iterator[Any]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="data")
            yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@settings(max_examples=20, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["", "a", "é€", "z" * 5000]), st.sampled_from(["\n", "\r\n"])), max_size=60
    ),
    final=st.booleans(),
    sizes=st.lists(st.sampled_from([0, 300, 2000, 12_000]), min_size=1, max_size=8).filter(any),
    kind=st.sampled_from(["gzip", "zstd"]),
    count=st.integers(2, 7),
    seed=st.integers(0, 1000),
    error=st.sampled_from([0.0, 0.2]),
)
def test_sharded_records_equal_a_one_pass_read_whatever_the_members_and_faults(
    moto_s3_session, lines, final, sizes, kind, count, seed, error
):
    content = "".join(body + end for body, end in lines).encode()
    if not final:
        content += b"no newline"
    cuts, i, k = [], 0, 0
    while i < len(content) or not cuts:  # a size of 0 is an empty member, put between the others
        n = sizes[k % len(sizes)]
        cuts.append(content[i : i + n])
        i, k = i + n, k + 1
        if k > 4 * len(sizes) and i == 0:
            break
    compress = gzip.compress if kind == "gzip" else zstandard.ZstdCompressor().compress
    body = b"".join(compress(c) for c in cuts)
    key = f"prop/{kind}-{seed}-{len(body)}-{count}"
    report = run_job(moto_s3_session, key, body, count, faults=FaultPlan(error=error), seed=seed)
    if report.status == "SUCCEEDED":
        assert report.result["lines"] == expected(content)
    else:  # a single member or frame is refused; injected errors can exhaust a hop's attempts
        assert report.error and ("ConfigurationError" in report.error or error > 0)


def test_the_cuts_of_a_compressed_object_are_looked_at_concurrently() -> None:
    # Each cut costs a ranged GET at planning: they run several at a time, not one after another.
    import threading
    import time

    members = [gzip.compress(b"line %d\n" % i * 2000, mtime=0) for i in range(16)]
    body = b"".join(members)
    obj = ObjectInfo("b", "k.gz", "e", len(body))
    lock, active, most = threading.Lock(), [0], [0]

    def read(o: Any, a: int, b: int) -> bytes:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return body[a:b]

    shards = plan_shards([obj], 8, read=read)
    assert len(shards) == 8 and most[0] > 1
    starts = {sum(map(len, members[:i])) for i in range(len(members))}
    assert all(p.start in starts for parts in shards for p in parts)  # cut at member starts only
    assert "".join(gzip.decompress(body[p.start : p.end]).decode() for parts in shards for p in parts) == (
        gzip.decompress(body).decode()
    )


def test_the_objects_a_prefix_job_cuts_inside_are_looked_at_concurrently() -> None:
    import threading
    import time

    objects = [ObjectInfo("b", f"log-{i}.txt", "e", 1000) for i in range(12)]
    lock, active, most, asked = threading.Lock(), [0], [0], []

    def read(o: Any, a: int, b: int) -> bytes:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
            asked.append((o.key, a, b))
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return b"plain text\n"[a:b]

    shards = plan_shards(objects, 7, read=read)
    assert len(shards) == 7 and most[0] > 1
    assert len(asked) == 6 and all((a, b) == (0, 4) for _, a, b in asked)  # the first 4 bytes of each
