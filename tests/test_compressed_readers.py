"""The readers over gzip and zstd objects: records equal a one-pass read, resumed from ``batch.cursor``."""

from __future__ import annotations

import gzip
import itertools
import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda.errors import ConfigurationError, DecompressionError
from recurse_lambda.s3 import ChunkReader, JsonLinesReader, LineReader
from recurse_lambda.s3._formats import open_reader

zstandard = pytest.importorskip("zstandard")


class Mem:
    """An in-memory object (``size`` and ranged ``read``), counting the reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        return self.data[start:end]


def gzip_members(parts: list[bytes], levels: list[int]) -> bytes:
    return b"".join(gzip.compress(p, compresslevel=lv, mtime=0) for p, lv in zip(parts, levels, strict=True))


def zstd_frames(parts: list[bytes], level: int) -> bytes:
    c = zstandard.ZstdCompressor(level=level)
    return b"".join(c.compress(p) for p in parts)


def split(content: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(content)) for c in cuts})
    bounds = [0, *points, len(content)]
    return [content[a:b] for a, b in itertools.pairwise(bounds)]


def one_pass_lines(content: bytes) -> list[bytes]:
    """The contract: a line's content excludes its \\n and one \\r before it; a last line without \\n keeps its
    \\r (it has no terminator), and counts if it is not empty."""
    *ended, last = content.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in ended] + ([last] if last else [])


line = st.one_of(
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=20).map(lambda t: t.replace("\n", "").encode()),
    st.integers(0, 70_000).map(lambda n: b"x" * n),  # longer than the ranges below
)


def read_in_hops(data: bytes, hop_batches: list[int], records: int, **opts: Any) -> tuple[list[bytes], int]:
    """Lines read by a chain of readers, each stopping after a few batches and resumed from batch.cursor."""
    got: list[bytes] = []
    start: int | dict[str, Any] = 0
    hops = 0
    for hop in [*hop_batches, 10**9]:
        hops += 1
        reader = open_reader(LineReader, Mem(data), start, encoding=None, **opts)
        done = True
        for k, batch in enumerate(reader.batches(records)):
            got.extend(batch.records)
            start = json.loads(json.dumps(batch.cursor))  # through the state's JSON
            if k + 1 >= hop:
                done = reader.done
                break
        reader.close()
        if done:
            break
    return got, hops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line, max_size=60),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(0, 200_000), max_size=4),
    empty_members=st.integers(0, 2),
    levels=st.lists(st.integers(1, 9), min_size=8, max_size=8),
    kind=st.sampled_from(["gzip", "zstd"]),
    hop_batches=st.lists(st.integers(1, 3), max_size=6),
    records=st.integers(1, 7),
)
def test_lines_resumed_from_cursors_equal_a_one_pass_read(
    lines: list[bytes],
    crlf: bool,
    cuts: list[int],
    empty_members: int,
    levels: list[int],
    kind: str,
    hop_batches: list[int],
    records: int,
) -> None:
    content = (b"\r\n" if crlf else b"\n").join(lines)
    parts = split(content, cuts) + [b""] * empty_members
    if kind == "gzip":
        data = gzip_members(parts, (levels * len(parts))[: len(parts)])
        assert gzip.decompress(data) == content
    else:
        data = zstd_frames(parts, levels[0])
    got, _ = read_in_hops(data, hop_batches, records, range_size=16 * 1024, prefetch=1)
    assert got == one_pass_lines(content)


def test_a_single_gzip_member_resumes_inside_it_from_the_cursor() -> None:
    content = b"".join(b"%08d some text to compress %d\n" % (i, i * i) for i in range(200_000))
    data = gzip.compress(content, 6)
    source = Mem(data)
    reader = open_reader(LineReader, source, 0, encoding=None)
    batches = reader.batches(1000)
    for _ in range(150):
        batch = next(batches)
    batches.close()
    cursor = batch.cursor
    assert isinstance(cursor, dict) and cursor["c"] == "gzip" and cursor["in"] > 0  # not the member start
    assert batch.end == content.index(b"%08d " % 150_000)
    resumed = open_reader(LineReader, Mem(data), cursor, encoding=None)
    rest = list(resumed)
    assert rest == one_pass_lines(content[batch.end :])


def test_plain_objects_keep_int_cursors_and_read_nothing_more() -> None:
    content = b"".join(b"line %d\n" % i for i in range(1000))
    source = Mem(content)
    reader = open_reader(LineReader, source, 0, encoding=None, range_size=4096, prefetch=0)
    batch = next(reader.batches(10))
    reader.close()
    assert batch.cursor == batch.end == content.index(b"line 10\n")
    assert source.reads[0] == (0, 4096)  # detection used the first range: no extra request
    later = Mem(content)
    assert list(open_reader(LineReader, later, batch.end, encoding=None)) == one_pass_lines(content)[10:]
    assert all(start > 0 for start, _ in later.reads)


def test_an_int_offset_into_a_compressed_object_is_refused_clearly() -> None:
    data = gzip.compress(b"a\nb\n")
    with pytest.raises(ConfigurationError, match=r"batch\.cursor"):
        open_reader(LineReader, Mem(data), 2, compression="gzip")
    with pytest.raises(
        DecompressionError, match="not a gzip member boundary"
    ):  # a shard ends at a member start
        list(open_reader(LineReader, Mem(data), 0, end=2, compression="gzip"))


def test_compression_none_reads_the_stored_bytes() -> None:
    data = gzip.compress(b"a\nb\n", mtime=0)
    assert b"".join(open_reader(ChunkReader, Mem(data), 0, compression=None)) == data


def test_jsonl_and_chunks_over_zstd() -> None:
    rows = [{"i": i, "s": "é" * (i % 5)} for i in range(5000)]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    data = zstd_frames(split(content, [10_000, 50_000]), 3)
    assert list(open_reader(JsonLinesReader, Mem(data), 0)) == rows
    assert b"".join(open_reader(ChunkReader, Mem(data), 0)) == content
    assert zlib.crc32(b"".join(open_reader(ChunkReader, Mem(data), 0, compression="zstd"))) == zlib.crc32(
        content
    )


class Pinned(Mem):
    """A source with a pin that notes facts, as PinnedSource does (the pin is committed with the chain)."""

    def __init__(self, data: bytes, pin: dict[str, Any]) -> None:
        super().__init__(data)
        self.pin = pin

    def note(self, name: str, value: Any = None) -> Any:
        if value is not None:
            self.pin[name] = value
        return self.pin.get(name)


def test_a_later_hop_resuming_a_compressed_object_from_an_int_offset_is_refused_not_misread() -> None:
    # The README's pattern (start=batch.end) with compression="auto": hop 0 detects gzip and notes it in the pin;
    # a later hop given the int offset must refuse (it would otherwise read stored bytes at a decompressed offset).
    data = gzip.compress(b"".join(b"line %d\n" % i for i in range(1000)))
    pin: dict[str, Any] = {}
    reader = open_reader(LineReader, Pinned(data, pin), 0, encoding=None)
    first = next(iter(reader.batches(10)))
    assert first.records[0] == b"line 0" and pin["compression"] == "gzip"
    with pytest.raises(ConfigurationError, match=r"batch\.cursor"):
        list(open_reader(LineReader, Pinned(data, pin), first.end, encoding=None).batches(10))
    # A plain object's pin notes nothing: int offsets resume as before.
    plain = b"".join(b"line %d\n" % i for i in range(100))
    plain_pin: dict[str, Any] = {}
    got = next(iter(open_reader(LineReader, Pinned(plain, plain_pin), 0, encoding=None).batches(10)))
    assert "compression" not in plain_pin
    rest = next(iter(open_reader(LineReader, Pinned(plain, plain_pin), got.end, encoding=None).batches(1)))
    assert rest.records == [b"line 10"]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_chunks_of_a_compressed_object_with_an_end_are_refused(compression: str) -> None:
    from recurse_lambda.errors import ConfigurationError

    data = gzip.compress(b"x" * 1000) if compression == "gzip" else zstd_frames([b"x" * 1000], 3)
    reader = open_reader(ChunkReader, Mem(data), 0, end=10, compression=compression)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot end at end="):
        list(reader.batches())
    whole = open_reader(ChunkReader, Mem(data), 0, compression=compression)  # type: ignore[arg-type]
    assert b"".join(b"".join(b.records) for b in whole.batches()) == b"x" * 1000
