"""A decompressed byte stream over a :class:`ByteSource`, resumable from a small JSON cursor.

:class:`DecompressedStream` yields :class:`Chunk` objects: decompressed bytes, their offset in the decompressed
content, and a :class:`Cursor` valid at the chunk's first byte (``chunk.cursor.advance(k)`` is valid at byte
``k`` of it). A cursor is an access point plus a number of decompressed bytes to skip after it; reopening a
stream with it decompresses from the access point, never from the object's start:

- gzip: points at every member start (multi-member files, BGZF, empty members) and, inside a member, at the
  first DEFLATE block boundary after every ``spacing`` bytes of output (zran.c's technique, in
  ``_gzip_points``); such a point carries the member's last 32 KiB of output, compressed, in the cursor.
- zstd: points at every frame start (``_zstd_frames``); inside a single frame, resuming decompresses the frame
  from its start again.
- plain bytes: every offset is a point.

The compressed bytes are read through a :class:`RangeFetcher` (ranged GETs prefetched); memory holds the
ranges in flight, one chunk and a 32 KiB window, whatever the object's size or the length of its lines.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from ._gzip_points import WINDOW, DecompressionError, GzipEngine, Point, libz
from ._prefetch import AUTO_PREFETCH, AUTO_RANGE_SIZE, ByteSource, RangeFetcher
from ._zstd_frames import ZSTD_MAGIC, ZstdEngine, is_skippable

__all__ = [
    "CHUNK_SIZE",
    "SPACING",
    "Chunk",
    "Compression",
    "Cursor",
    "DecompressedStream",
    "DecompressionError",
    "detect",
    "in_member_points",
]

Compression = Literal["gzip", "zstd"] | None
#: Decompressed bytes per chunk, at most.
CHUNK_SIZE = 256 * 1024
#: Decompressed bytes between two access points inside a gzip member (at the next block boundary after it):
#: the most a resume decompresses only to skip it, and the number of 32 KiB windows kept (one at a time).
SPACING = 1024 * 1024
_VERSION = 1


class Ranges(Protocol):
    """Ranges of the compressed object already being fetched, from its start (a reader's sniffed fetcher)."""

    def __next__(self) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


def detect(head: bytes) -> Compression:
    """The compression the first bytes of an object show: gzip (``1f 8b``), zstd (``28 b5 2f fd``) or None."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 4:
        magic = int.from_bytes(head[:4], "little")
        if magic == ZSTD_MAGIC or is_skippable(magic):
            return "zstd"
    return None


def in_member_points() -> bool:
    """Whether gzip access points inside a member can be made here (the system's zlib loads through ctypes)."""
    return libz() is not None


@dataclass(frozen=True)
class Cursor:
    """Where a stream resumes: decompression starts at ``point`` and ``skip`` decompressed bytes are dropped."""

    compression: Compression
    point: Point
    skip: int = 0

    @property
    def offset(self) -> int:
        """The decompressed offset this cursor resumes at."""
        return self.point.out + self.skip

    def advance(self, n: int) -> Cursor:
        """The cursor ``n`` decompressed bytes further (for a position inside a chunk)."""
        return replace(self, skip=self.skip + n)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form: a few integers, plus ~10-25 KB for a point inside a gzip member."""
        p = self.point
        d: dict[str, Any] = {
            "v": _VERSION,
            "c": self.compression,
            "in": p.in_,
            "out": p.out,
            "skip": self.skip,
        }
        if p.window is not None:
            d["bits"], d["crc"], d["mlen"] = p.bits, p.crc, p.mlen
            d["win"] = base64.b64encode(zlib.compress(p.window, 9)).decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cursor:
        if d.get("v") != _VERSION or d.get("c") not in ("gzip", "zstd", None):
            raise ValueError(f"not a decompression cursor: {d!r}")
        window = None
        if "win" in d:
            window = zlib.decompress(base64.b64decode(d["win"]))
            if len(window) > WINDOW or not 0 <= d["bits"] < 8:
                raise ValueError("malformed decompression cursor")
        point = Point(
            int(d["in"]),
            int(d["out"]),
            int(d.get("bits", 0)),
            window,
            int(d.get("crc", 0)),
            int(d.get("mlen", 0)),
        )
        if point.in_ < 0 or point.out < 0 or int(d["skip"]) < 0:
            raise ValueError("malformed decompression cursor")
        return cls(d["c"], point, int(d["skip"]))


@dataclass(frozen=True)
class Chunk:
    """Decompressed bytes at ``offset``; ``cursor`` resumes at ``data[0]``."""

    data: bytes
    offset: int
    cursor: Cursor


class _Input:
    """The compressed bytes from ``start`` on, a range at a time: ``buf[i:]`` is not consumed yet."""

    def __init__(
        self, source: ByteSource, start: int, range_size: int, prefetch: int, ranges: Ranges | None = None
    ) -> None:
        self._fetcher: Ranges = (
            ranges
            if ranges is not None
            else RangeFetcher(source, start, range_size=range_size, prefetch=prefetch)
        )
        self.buf = b""
        self.i = 0
        self._base = start

    @property
    def pos(self) -> int:
        return self._base + self.i

    def fill(self) -> bool:
        """Make ``buf[i:]`` non-empty; False at the end of the object."""
        while self.i >= len(self.buf):
            try:
                self._base, self.buf = next(self._fetcher)
            except StopIteration:
                self._base, self.buf, self.i = self.pos, b"", 0
                return False
            self.i = 0
        return True

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer at the end of the object)."""
        if self.fill() and len(self.buf) - self.i >= n:
            self.i += n
            return self.buf[self.i - n : self.i]
        parts, want = [], n
        while want and self.fill():
            part = self.buf[self.i : self.i + want]
            self.i += len(part)
            want -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Pass ``n`` bytes (fewer at the end), holding one range at a time; the number passed."""
        done = 0
        while done < n and self.fill():
            step = min(n - done, len(self.buf) - self.i)
            self.i += step
            done += step
        return done

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer at the end) without consuming them."""
        while len(self.buf) - self.i < n:
            rest, base = self.buf[self.i :], self.pos
            try:
                _, data = next(self._fetcher)
            except StopIteration:
                break
            self.buf, self.i, self._base = rest + data, 0, base
        return self.buf[self.i : self.i + n]

    def close(self) -> None:
        self._fetcher.close()


class _PlainEngine:
    def __init__(self, inp: _Input, *, chunk_size: int) -> None:
        self._inp = inp
        self._chunk = chunk_size
        self.point = Point(0, 0)

    def run(self, start: Point) -> Iterator[tuple[Point, int, bytes]]:
        self.point = start
        while True:
            offset = self._inp.pos
            data = self._inp.take(self._chunk)
            if not data:
                return
            point, self.point = Point(offset, offset), Point(offset + len(data), offset + len(data))
            yield point, offset, data


class DecompressedStream:
    """The decompressed content of ``source``, from its start or from a :class:`Cursor` (or its dict form).

    ``compression``: ``"auto"`` (from the first bytes; a cursor's own compression when resuming), ``"gzip"``,
    ``"zstd"`` or None (the bytes as stored). ``spacing``: gzip bytes between access points inside a member
    (None: at member starts only). ``ranges``: the object's ranges from byte 0 when a fetcher already reads them
    (the reader that detected the compression from its first range), used instead of new GETs. Iterating yields :class:`Chunk` objects; :meth:`cursor` is where the
    stream stands (after the last chunk given); :attr:`decompressed` counts the bytes decompressed, those
    skipped to reach the cursor included. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        source: ByteSource,
        cursor: Cursor | dict[str, Any] | None = None,
        *,
        compression: Literal["auto", "gzip", "zstd"] | None = "auto",
        range_size: int = AUTO_RANGE_SIZE,
        prefetch: int = AUTO_PREFETCH,
        chunk_size: int = CHUNK_SIZE,
        spacing: int | None = SPACING,
        ranges: Ranges | None = None,
    ) -> None:
        if compression not in ("auto", "gzip", "zstd", None):
            raise ValueError(f"compression must be 'auto', 'gzip', 'zstd' or None, not {compression!r}")
        if chunk_size < 1 or (spacing is not None and spacing < 1):
            raise ValueError("chunk_size and spacing must be >= 1")
        if isinstance(cursor, dict):
            cursor = Cursor.from_dict(cursor)
        if cursor is not None and compression != "auto" and compression != cursor.compression:
            raise ValueError(f"the cursor is for {cursor.compression!r} data, not {compression!r}")
        if ranges is not None and cursor is not None:
            raise ValueError("ranges already fetched are the object's from its start: not with a cursor")
        point = cursor.point if cursor is not None else Point(0, 0)
        self._inp = _Input(source, point.in_ - (1 if point.bits else 0), range_size, prefetch, ranges)
        if cursor is not None:
            self.compression: Compression = cursor.compression
        elif compression == "auto":
            self.compression = detect(self._inp.peek(4))
        else:
            self.compression = compression
        self._start = cursor if cursor is not None else Cursor(self.compression, point)
        self._engine: GzipEngine | ZstdEngine | _PlainEngine
        if self.compression == "gzip":
            self._engine = GzipEngine(self._inp, chunk_size=chunk_size, spacing=spacing)
        elif self.compression == "zstd":
            self._engine = ZstdEngine(self._inp, chunk_size=chunk_size)
        else:
            self._engine = _PlainEngine(self._inp, chunk_size=chunk_size)
        self._at = self._start
        self.decompressed = 0
        self._started = False

    def __iter__(self) -> Iterator[Chunk]:
        if self._started:
            raise RuntimeError("a DecompressedStream is iterated once")
        self._started = True
        target = self._start.offset
        try:
            for point, offset, data in self._engine.run(self._start.point):
                self.decompressed += len(data)
                end = offset + len(data)
                if end <= target:
                    continue
                if offset < target:
                    data, offset = data[target - offset :], target
                self._at = self._cursor_at(end, point)
                yield Chunk(data, offset, Cursor(self.compression, point, offset - point.out))
        finally:
            self.close()

    def _cursor_at(self, offset: int, fallback: Point) -> Cursor:
        latest = self._engine.point  # the point the engine reached, if it is not past `offset`
        point = latest if latest.out <= offset else fallback
        return Cursor(self.compression, point, offset - point.out)

    def cursor(self) -> Cursor:
        """The cursor after the last chunk given (the start cursor before any)."""
        return self._at

    def close(self) -> None:
        self._inp.close()

    def __enter__(self) -> DecompressedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
