"""Chains over gzip and zstd objects under random faults: the records equal a one-pass ``gzip``/``zstandard`` read.

Random content (LF and CRLF, empty lines, lines longer than a range, multi-byte UTF-8), random compression
(Python's ``gzip`` at any level, one member or several, empty members; ``zstandard`` frames, empty frames; and
files written by the ``gzip`` and ``zstd`` command-line tools, concatenated for several members or frames),
random hop points (each batch costs a random amount of virtual time) and random fault schedules (duplicates,
crashes at random moments and at named points, recycled containers). A line_count-like handler keeps
``batch.cursor`` in its state; a SUCCEEDED chain's records are the one-pass read's, and a FAILED chain's last
committed state is an exact prefix of them.

The gzip access points inside a member are made every few KiB here (``spacing``) instead of every MiB, so that
the hops of these small objects resume inside members, not only at their starts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.local import FaultPlan, VirtualClock
from recurse_lambda.s3 import LineReader
from recurse_lambda.s3._decompress import DecompressedStream, in_member_points
from recurse_lambda.s3._formats import open_reader
from tests.conftest import simulate

zstandard = pytest.importorskip("zstandard")

GZIP = shutil.which("gzip")
ZSTD = shutil.which("zstd")
RANGE = 4096  # stored bytes per ranged read: members, frames and long lines span several
SPACING = 4096  # decompressed bytes between gzip access points inside a member (1 MiB by default)
CHUNK = 8192  # decompressed bytes per chunk at most (256 KiB by default)
POINTS = (
    "after_claim",
    "before_checkpoint",
    "after_checkpoint",
    "before_handoff",
    "after_handoff",
    "safe_point",
)


@pytest.fixture(autouse=True, scope="module")
def small_access_points() -> Iterator[None]:
    """Access points and chunks a few KiB apart, for every stream the readers open in this module."""
    with pytest.MonkeyPatch.context() as mp:
        defaults = dict(DecompressedStream.__init__.__kwdefaults__ or {})
        mp.setattr(
            DecompressedStream.__init__,
            "__kwdefaults__",
            {**defaults, "spacing": SPACING, "chunk_size": CHUNK},
        )
        yield


class Mem:
    """The stored object, in memory (``size`` and ranged ``read``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]


class Counted(BaseModel):
    cursor: int | dict[str, Any] = 0  # batch.cursor: where the next hop resumes
    offset: int = 0  # batch.end: decompressed offset of the next unread line
    lines: int = 0
    digest: int = 0  # sum of mix(i, line i): equal digests mean equal records, in the same order


def mix(i: int, record: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little") + record, digest_size=8).digest(), "little")


def digest(records: list[bytes]) -> int:
    return sum(mix(i, r) for i, r in enumerate(records)) % 2**64


def chain(
    clock: VirtualClock,
    data: bytes,
    costs: list[float],
    records: int,
    prefetch: int,
    starts: list[Any] | None = None,
) -> Any:
    @recursive(state=Counted)
    def handler(event: dict[str, Any], state: Counted, run: Run) -> Generator[None, None, dict[str, Any]]:
        if starts is not None:
            starts.append(state.cursor)
        reader = open_reader(
            LineReader, Mem(data), state.cursor, encoding=None, range_size=RANGE, prefetch=prefetch
        )
        for batch in reader.batches(records):
            for record in batch.records:
                state.digest = (state.digest + mix(state.lines, record)) % 2**64
                state.lines += 1
            state.cursor, state.offset = batch.cursor, batch.end
            clock.advance(costs[state.lines % len(costs)])  # where hops end: random, the same on a retry
            yield
        return {
            "lines": state.lines,
            "digest": state.digest,
            "bytes": reader.position,
            "c": reader.compression,
        }

    return handler


# -- content and compression -------------------------------------------------------------------------------

line = st.one_of(
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=20).map(lambda t: t.replace("\n", "").encode()),  # multi-byte UTF-8, cut by the ranges
    st.just(b""),
    st.integers(RANGE, 3 * RANGE).map(lambda n: (b"long \xc3\xa9 " * n)[:n]),  # longer than a range
)


@st.composite
def contents(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(line, max_size=80))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    body = b"".join(a + b for a, b in zip(lines, ends, strict=True))
    if draw(st.booleans()) and body:
        body = body[: -len(ends[-1])]  # no final newline
    if draw(st.integers(0, 4)) == 0:  # sometimes a few thousand short lines: several DEFLATE blocks
        body += b"".join(
            b"%d \xce\xb3 %x\r\n" % (i, i * 2654435761 % 2**32) for i in range(draw(st.integers(0, 6000)))
        )
    return body


def parts_of(content: bytes, cuts: list[int], empties: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(content) + 1) for c in cuts}), len(content)]
    parts = [content[a:b] for a, b in itertools.pairwise(bounds)]
    for at in empties:
        parts.insert(at % (len(parts) + 1), b"")
    return parts


def with_tool(tool: str, args: list[str], parts: list[bytes]) -> bytes:
    """Each part compressed by a file-writing command-line tool, the outputs concatenated."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, part in enumerate(parts):
            path = Path(tmp) / f"part{i}.txt"
            path.write_bytes(part)
            out.append(subprocess.run([tool, *args, str(path)], check=True, capture_output=True).stdout)
    return b"".join(out)


@st.composite
def stored(draw: st.DrawFn, content: bytes) -> tuple[str, bytes]:
    """``(compression, stored bytes)``: content compressed in one of the ways described above."""
    way = draw(st.sampled_from(["gzip", "zstd", "gzip-cli", "zstd-cli"]))
    several = draw(st.booleans())
    cuts = draw(st.lists(st.integers(0, 10**6), max_size=4)) if several else []
    empties = draw(st.lists(st.integers(0, 10), max_size=2)) if several else []
    parts = parts_of(content, cuts, empties)
    level = draw(st.integers(1, 9))
    if way == "gzip":
        levels = draw(st.lists(st.integers(0, 9), min_size=len(parts), max_size=len(parts)))
        return "gzip", b"".join(gzip.compress(p, lv, mtime=0) for p, lv in zip(parts, levels, strict=True))
    if way == "zstd":
        c = zstandard.ZstdCompressor(level=draw(st.integers(1, 19)), write_checksum=draw(st.booleans()))
        return "zstd", b"".join(c.compress(p) for p in parts)
    if way == "gzip-cli":
        if GZIP is None:
            pytest.skip("no gzip command")
        return "gzip", with_tool(GZIP, ["-c", f"-{level}", *draw(st.sampled_from([[], ["-n"]]))], parts)
    if ZSTD is None:
        pytest.skip("no zstd command")
    return "zstd", with_tool(
        ZSTD, ["-q", "-c", f"-{level}", *draw(st.sampled_from([[], ["--no-check"]]))], parts
    )


def one_pass(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        with gzip.open(io.BytesIO(data)) as f:
            return f.read()
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


def lines_of(content: bytes) -> tuple[list[bytes], list[int]]:
    """The one-pass read's lines and where each ends (its terminator included)."""
    pieces = content.split(b"\n")
    last = pieces.pop()
    ends, pos = [], 0
    for piece in pieces:
        pos += len(piece) + 1
        ends.append(pos)
    if last:
        pieces.append(last)
        ends.append(len(content))
    return [
        p.removesuffix(b"\r") if i < len(ends) - (1 if last else 0) else p for i, p in enumerate(pieces)
    ], ends


faults = st.builds(
    FaultPlan,
    crash=st.sampled_from([0.0, 0.1, 0.25]),
    duplicate=st.sampled_from([0.0, 0.3, 0.6]),
    recycle=st.sampled_from([0.0, 0.5, 1.0]),
    crash_at=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 8)), max_size=2).map(tuple),
)


@pytest.mark.skipif(not in_member_points(), reason="no shared zlib: no access points inside a member")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    content=contents(),
    data=st.data(),
    records=st.integers(1, 40),
    costs=st.lists(st.sampled_from([0.0, 0.05, 0.2, 0.45]), min_size=1, max_size=8),
    prefetch=st.integers(0, 2),
    plan=faults,
    seed=st.integers(0, 2**32 - 1),
)
def test_a_chain_over_a_compressed_object_reads_what_one_pass_reads(
    content: bytes,
    data: st.DataObject,
    records: int,
    costs: list[float],
    prefetch: int,
    plan: FaultPlan,
    seed: int,
) -> None:
    kind, obj = data.draw(stored(content))
    assert one_pass(kind, obj) == content  # the tools and libraries agree on what the object holds
    expected, ends = lines_of(content)
    clock = VirtualClock()
    sim = simulate(
        chain(clock, obj, costs, records, prefetch), timeout=1.0, clock=clock, faults=plan, seed=seed
    )
    report = sim.run({"object": seed})
    assert report.status in ("SUCCEEDED", "FAILED"), report.timeline()
    if report.status == "SUCCEEDED":
        assert report.result == {
            "lines": len(expected),
            "digest": digest(expected),
            "bytes": len(content),
            "c": kind,
        }
    else:  # Lambda gave up after its retries: the last committed state is an exact prefix
        state = Counted.model_validate(report.last_state)
        assert state.digest == digest(expected[: state.lines])
        assert state.offset == (ends[state.lines - 1] if state.lines else 0)
        assert isinstance(state.cursor, dict) or state.lines == 0


def test_the_property_resumes_inside_members_and_frames() -> None:
    """The module's settings do what they are for: a small single-member gzip object read in hops resumes at a
    point inside its member, and a cursor in a later zstd frame points at that frame, not at the start."""
    content = b"".join(b"%d \xce\xb3 %x\r\n" % (i, i * 2654435761 % 2**32) for i in range(6000))
    clock = VirtualClock()
    obj = gzip.compress(content, 6)
    cursors: list[Any] = []
    sim = simulate(chain(clock, obj, [0.2], 200, 0, cursors), timeout=1.0, clock=clock)
    report = sim.run({"object": 0}).raise_for_status()
    assert report.hops >= 3 and report.result["bytes"] == len(content)
    assert any(c["in"] > 0 and "win" in c for c in cursors[1:]), cursors  # inside the one member

    frames = [content[i : i + 20_000] for i in range(0, len(content), 20_000)]
    obj = b"".join(zstandard.ZstdCompressor().compress(f) for f in frames)
    cursors = []
    sim = simulate(chain(clock, obj, [0.2], 200, 0, cursors), timeout=1.0, clock=clock)
    report = sim.run({"object": 1}).raise_for_status()
    assert any(c["in"] > 0 for c in cursors[1:]), cursors  # at a later frame's start
    assert report.result["lines"] == 6000 and report.result["bytes"] == len(content)
