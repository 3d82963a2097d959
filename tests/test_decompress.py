"""The decompression engine (s3/_decompress.py): resuming at any cursor gives exactly a one-pass read.

Each property builds random content (CRLF, empty lines, long lines, multi-byte UTF-8), compresses it with random
settings (levels, memory levels, flushes that end DEFLATE blocks off byte boundaries, several members, empty
members, several zstd frames, skippable frames), reads it once, then reopens at random cursors (through their
JSON form): what follows each cursor must equal the one-pass decompression by ``gzip``/``zstandard`` from there.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda.s3._decompress import (
    Chunk,
    Cursor,
    DecompressedStream,
    DecompressionError,
    _Input,
    detect,
    in_member_points,
)
from recurse_lambda.s3._gzip_points import GzipEngine, Point

zstandard = pytest.importorskip("zstandard")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Mem:
    """An in-memory ByteSource; with ``most`` it answers at most that many bytes per read."""

    def __init__(self, data: bytes, most: int | None = None) -> None:
        self.data = data
        self.most = most

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        if self.most is not None:
            end = min(end, start + self.most)
        return self.data[start:end]


_WORDS = ["a", "hello", "été", "日本語", "😀", ",", " ", "\r\n", "\n", "\n\n", "x" * 300, "0123456789"]


@st.composite
def contents(draw: Any) -> bytes:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.sampled_from([0, 1, 10, 1000, 20_000, 60_000]))
    rng = random.Random(seed)
    text = "".join(rng.choice(_WORDS) for _ in range(n))
    if draw(st.booleans()):  # a line longer than every range and chunk
        text += "long" * draw(st.integers(0, 10_000))
    return text.encode()


def gzip_members(rng: random.Random, raw: bytes, members: int, empty: bool) -> bytes:
    """``raw`` as gzip members with random levels, memory levels and block-ending flushes."""
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(members - 1))
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = []
    for part in parts:
        if empty and rng.random() < 0.3:
            out.append(gzip.compress(b""))
        c = zlib.compressobj(rng.randrange(10), zlib.DEFLATED, 31, rng.randrange(1, 10))
        pos = 0
        while pos < len(part):
            step = rng.randrange(1, 40_000)
            out.append(c.compress(part[pos : pos + step]))
            out.append(
                c.flush(rng.choice([zlib.Z_NO_FLUSH, zlib.Z_BLOCK, zlib.Z_PARTIAL_FLUSH, zlib.Z_SYNC_FLUSH]))
            )
            pos += step
        out.append(c.flush())
    return b"".join(out)


def zstd_frames(rng: random.Random, raw: bytes, frames: int, skippable: bool) -> bytes:
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(frames - 1))
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        if skippable and rng.random() < 0.3:
            payload = rng.randbytes(rng.randrange(20))
            out.append(struct.pack("<II", 0x184D2A50 + rng.randrange(16), len(payload)) + payload)
        cctx = zstandard.ZstdCompressor(
            level=rng.choice([-5, 1, 3, 9, 19]),
            write_checksum=rng.random() < 0.5,
            write_content_size=rng.random() < 0.5,
        )
        if rng.random() < 0.5:
            out.append(cctx.compress(raw[a:b]))
        else:  # streamed: no content size, blocks as the data came
            w = cctx.compressobj()
            out.append(w.compress(raw[a:b]) + w.flush())
    return b"".join(out)


def read_all(data: bytes, cursor: Any = None, **kw: Any) -> tuple[list[Chunk], DecompressedStream]:
    stream = DecompressedStream(Mem(data, kw.pop("most", None)), cursor, **kw)
    with stream:
        return list(stream), stream


def check_resumes(data: bytes, raw: bytes, rng: random.Random, **kw: Any) -> list[Chunk]:
    chunks, stream = read_all(data, **kw)
    assert b"".join(c.data for c in chunks) == raw
    assert all(0 < len(c.data) <= kw.get("chunk_size", 256 * 1024) for c in chunks)
    assert stream.cursor().offset == len(raw)
    cursors = [stream.cursor(), Cursor(stream.compression, Point(0, 0))]
    for chunk in rng.sample(chunks, min(6, len(chunks))):
        cursors.append(chunk.cursor.advance(rng.randrange(len(chunk.data))))
    for cursor in cursors:
        wire = json.loads(json.dumps(cursor.to_dict()))
        again, resumed = read_all(data, wire, **{k: v for k, v in kw.items() if k != "compression"})
        assert b"".join(c.data for c in again) == raw[cursor.offset :]
        # The work of a resume: from the cursor's point, never from an earlier one.
        assert resumed.decompressed == len(raw) - cursor.point.out
        assert resumed.cursor().offset == len(raw)
    return chunks


@SETTINGS
@given(
    raw=contents(),
    seed=st.integers(0, 2**32 - 1),
    members=st.integers(1, 4),
    empty=st.booleans(),
    chunk_size=st.sampled_from([100, 4096, 65536]),
    range_size=st.sampled_from([7, 1000, 65536]),
    spacing=st.sampled_from([None, 1, 5000, 65536]),
    most=st.sampled_from([None, 500]),
)
def test_gzip_resumes_anywhere(
    raw: bytes,
    seed: int,
    members: int,
    empty: bool,
    chunk_size: int,
    range_size: int,
    spacing: int | None,
    most: int | None,
) -> None:
    rng = random.Random(seed)
    data = gzip_members(rng, raw, members, empty)
    assert gzip.decompress(data) == raw
    check_resumes(
        data, raw, rng, chunk_size=chunk_size, range_size=range_size, spacing=spacing, most=most, prefetch=0
    )


@SETTINGS
@given(
    raw=contents(),
    seed=st.integers(0, 2**32 - 1),
    frames=st.integers(1, 4),
    skippable=st.booleans(),
    chunk_size=st.sampled_from([7, 4096, 65536]),
    range_size=st.sampled_from([7, 1000, 65536]),
)
def test_zstd_resumes_anywhere(
    raw: bytes, seed: int, frames: int, skippable: bool, chunk_size: int, range_size: int
) -> None:
    rng = random.Random(seed)
    data = zstd_frames(rng, raw, frames, skippable)
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    assert reader.read() == raw
    chunks = check_resumes(data, raw, rng, chunk_size=chunk_size, range_size=range_size, prefetch=0)
    # Frame starts are points: a frame's chunks all resume from that frame's start.
    assert len({c.cursor.point.in_ for c in chunks}) <= frames


def test_in_member_points_resume_without_the_member_start() -> None:
    assert in_member_points()
    rng = random.Random(5)
    raw = "".join(rng.choice(_WORDS) for _ in range(400_000)).encode()
    data = gzip.compress(raw, 6)
    chunks, _ = read_all(data, spacing=64 * 1024, chunk_size=64 * 1024)
    points = {c.cursor.point for c in chunks}
    assert len(points) > 10 and all(p.window is not None for p in points if p.out)
    assert any(p.bits for p in points)  # block boundaries off byte boundaries are exercised
    for chunk in chunks[len(chunks) // 2 :: 7]:
        again, resumed = read_all(data, chunk.cursor.to_dict())
        assert b"".join(c.data for c in again) == raw[chunk.offset :]
        assert resumed.decompressed - (len(raw) - chunk.offset) < 64 * 1024 + 2 * 1024 * 1024
        size = len(json.dumps(chunk.cursor.to_dict()))
        assert size < 48 * 1024


@SETTINGS
@given(raw=contents(), seed=st.integers(0, 2**32 - 1))
def test_standard_library_zlib_resumes_points_made_by_libz(raw: bytes, seed: int) -> None:
    """Without the system's zlib, a point inside a member is resumed by zran's empty-block preface."""
    rng = random.Random(seed)
    data = gzip_members(rng, raw, 1, False)
    chunks, _ = read_all(data, spacing=1, chunk_size=4096)
    for chunk in rng.sample(chunks, min(5, len(chunks))):
        point = chunk.cursor.point
        inp = _Input(Mem(data), point.in_ - (1 if point.bits else 0), 1000, 0)
        engine = GzipEngine(inp, chunk_size=1000, spacing=None, native=False)
        out = b"".join(d for _, off, d in engine.run(point))
        assert out == raw[point.out :]


def test_detection_and_forcing() -> None:
    raw = b"line\n" * 100
    assert detect(gzip.compress(raw)[:4]) == "gzip"
    assert detect(zstandard.ZstdCompressor().compress(raw)[:4]) == "zstd"
    assert detect(raw[:4]) is None and detect(b"") is None
    for data in (gzip.compress(raw), zstandard.ZstdCompressor().compress(raw), raw):
        chunks, stream = read_all(data)
        assert b"".join(c.data for c in chunks) == raw
    chunks, stream = read_all(gzip.compress(raw), compression=None)
    assert b"".join(c.data for c in chunks) == gzip.compress(raw) and stream.compression is None
    with pytest.raises(DecompressionError):
        read_all(raw, compression="gzip")
    with pytest.raises(DecompressionError):
        read_all(raw, compression="zstd")
    cursor = read_all(gzip.compress(raw))[1].cursor()
    with pytest.raises(ValueError, match="cursor is for 'gzip'"):
        DecompressedStream(Mem(raw), cursor, compression="zstd")
    assert read_all(b"")[0] == []


def test_corrupt_truncated_and_padded_gzip() -> None:
    raw = bytes(range(256)) * 400
    data = gzip.compress(raw)
    with pytest.raises(DecompressionError, match="truncated"):
        read_all(data[:-10])
    bad = bytearray(data)
    bad[-8] ^= 1  # the CRC-32
    with pytest.raises(DecompressionError, match="CRC"):
        read_all(bytes(bad))
    with pytest.raises(DecompressionError):
        read_all(data + b"garbage")
    padded = data + b"\0" * 1000 + gzip.compress(b"more") + b"\0" * 10
    assert b"".join(c.data for c in read_all(padded)[0]) == raw + b"more"
    zdata = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    with pytest.raises(DecompressionError):
        read_all(zdata[:-3])


def test_gzip_header_fields_and_bgzf() -> None:
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = b"payload\n" * 1000
    deflated = body.compress(raw) + body.flush()
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw))
    extra = b"BC" + struct.pack("<HH", 2, 0)  # BGZF's subfield (its value is not checked)
    header = b"\x1f\x8b\x08" + bytes([4 | 8 | 16 | 2]) + b"\0" * 6
    header += struct.pack("<H", len(extra)) + extra + b"name.txt\0" + b"a comment\0"
    header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    data = (header + deflated + trailer) * 3 + gzip.compress(b"")
    assert gzip.decompress(data) == raw * 3
    chunks, _ = read_all(data, chunk_size=1000)
    assert b"".join(c.data for c in chunks) == raw * 3
    assert len({c.cursor.point.in_ for c in chunks}) == 3  # one point per member
    check_resumes(data, raw * 3, random.Random(1), chunk_size=1000)


def test_flat_memory_on_highly_compressed_data() -> None:
    raw_size = 64 * 1024 * 1024
    gz = gzip.compress(b"\0" * raw_size, 9)
    zs = zstandard.ZstdCompressor().compress(b"\0" * raw_size)
    for data in (gz, zs):
        total = 0
        with DecompressedStream(Mem(data), chunk_size=1024 * 1024, range_size=4096, prefetch=0) as stream:
            for chunk in stream:
                assert len(chunk.data) <= 1024 * 1024
                total += len(chunk.data)
        assert total == raw_size


@pytest.mark.skipif(not (shutil.which("gzip") and shutil.which("zstd")), reason="gzip and zstd CLIs")
@pytest.mark.parametrize(
    "command",
    [
        ["gzip", "-c", "-1"],
        ["gzip", "-c", "-9"],
        ["gzip", "-c", "--rsyncable"],
        ["zstd", "-q", "-c", "-3"],
        ["zstd", "-q", "-c", "-19", "--no-check"],
        ["zstd", "-q", "-c", "--rsyncable"],
    ],
)
def test_files_from_the_command_line_tools(tmp_path: Path, command: list[str]) -> None:
    rng = random.Random(3)
    pieces = ["".join(rng.choice(_WORDS) for _ in range(n)).encode() for n in (50_000, 0, 3000)]
    data = b""
    for i, piece in enumerate(pieces):  # several members / frames, one of them empty, each named
        path = tmp_path / f"part{i}.txt"
        path.write_bytes(piece)
        data += subprocess.run([*command, str(path)], check=True, capture_output=True).stdout
    raw = b"".join(pieces)
    check_resumes(data, raw, rng, chunk_size=8192, spacing=16 * 1024, range_size=5000)
