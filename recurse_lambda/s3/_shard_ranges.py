"""A shard of an object: the ranges holding the records (lines) that begin in ``[start, end)``.

A record begins at ``p`` when ``p == 0`` or byte ``p - 1`` is ``\\n``. A shard aligns itself: it skips to the first
record beginning at or after ``start``, and finishes the record that straddles ``end``. So shards cut anywhere
read every record of the object exactly once between them, and a ``batch.end`` (a record start) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from ..errors import ConfigurationError, DecompressionError
from ._compressed import DecompressedRanges
from ._decompress import Cursor, DecompressedStream
from ._gzip_points import Point
from ._prefetch import ByteSource, _describe

__all__ = ["CompressedShard", "ShardRanges"]


def after_first_newline(ranges: Iterable[tuple[int, bytes]], at: int) -> tuple[int, tuple[int, bytes] | None]:
    """Where the first record beginning after a ``\\n`` in ``ranges`` begins (``at`` if ``ranges`` hold none from
    ``at`` on: the only record there began before), and the rest of the range it begins in (None if that range
    ends there)."""
    for offset, data in ranges:
        newline = data.find(b"\n")
        if newline >= 0:
            begin = offset + newline + 1
            return begin, ((begin, data[newline + 1 :]) if begin < offset + len(data) else None)
        at = offset + len(data)
    return at, None


class ShardRanges:
    """``(offset, data)`` ranges from :attr:`begin`, cut just after the last record beginning before ``end``.

    ``ranges`` must start at ``start - 1`` (or 0): reading byte ``start - 1`` in the first range tells whether
    ``start`` begins a record without a request of its own. ``0 <= start < end <= size``. The records' start
    is found when the shard is made (reading as far as the line that straddles ``start`` goes); :attr:`stop`,
    the first record start at or after ``end`` (or the size), is known once the ranges are exhausted.
    """

    __slots__ = ("_end", "_first", "_ranges", "begin", "stop")

    def __init__(self, ranges: Iterator[tuple[int, bytes]], start: int, end: int) -> None:
        self._ranges = ranges
        self._end = end
        self._first: tuple[int, bytes] | None = None  # the rest of the range where the records begin
        self.stop: int | None = None
        self.begin, self._first = (0, None) if start == 0 else after_first_newline(self._ranges, start)
        if self.begin >= end:  # no record begins in the shard: `begin` is also the first one after it
            self.stop = self.begin

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self.stop is not None:
            return
        last = self._end - 1  # the record holding this byte is the shard's last
        ranges = chain((self._first,), self._ranges) if self._first is not None else self._ranges
        self._first = None
        at = self.begin
        for offset, data in ranges:
            at = offset + len(data)
            if at > last:
                newline = data.find(b"\n", max(last - offset, 0))
                if newline >= 0:
                    # Nothing is pending past this range: the fetcher fetches past `end` only when asked.
                    self.stop = offset + newline + 1
                    yield offset, data if newline + 1 == len(data) else data[: newline + 1]
                    return
            yield offset, data
        self.stop = at


class _Upto:
    """A view of ``source`` that ends at byte ``end``: a shard's own members or frames, and nothing past them."""

    def __init__(self, source: ByteSource, end: int) -> None:
        self._source = source
        self.size = min(end, source.size)

    def read(self, start: int, end: int) -> bytes:
        return self._source.read(start, min(end, self.size))

    def __getattr__(self, name: str) -> Any:  # bucket, key, note: the object's
        return getattr(self._source, name)


class CompressedShard(DecompressedRanges):
    """A shard of a gzip or zstd object: the records that begin in the decompressed content of its members.

    The shard's stored range ``[cursor.point.in_, end)`` runs from one member (or frame) start to the next
    (see ``shards/split.py``); decompressed offsets count from its start. Its content ``[0, X)`` is read through
    a view of the object that ends at ``end``, so a member that straddles ``end`` is truncated: ``end`` is not a
    boundary, and the shard fails with a :class:`DecompressionError` instead of reading a wrong cut.

    As the previous shard cannot tell the content's last byte before ``0``, the shard owns the records that begin
    in ``(0, X]`` (the first shard: ``[0, X]``): it skips through the first newline at or after 0 and reads on
    past ``X``, into the next members, through the first newline at or after ``X``. A cursor past ``X`` is a
    cursor from the next member's start (only the straddling record is read there).
    """

    def __init__(
        self, source: ByteSource, cursor: Cursor, end: int, *, range_size: int, prefetch: int
    ) -> None:
        point, kind = cursor.point, cursor.compression
        self._source, self._kind, self._end = source, kind, end
        self._sizes = (range_size, prefetch)
        self.boundary: int | None = None  # X, once the shard's own members are read
        self.stop: int | None = None
        if point.in_ == end and point.window is None:
            self.boundary = point.out
            super().__init__(source, cursor, kind, range_size=range_size, prefetch=prefetch)
        elif point.in_ < end:
            super().__init__(_Upto(source, end), cursor, kind, range_size=range_size, prefetch=prefetch)
        else:
            raise ConfigurationError(
                f"cursor {cursor.to_dict()} is not a cursor of this shard (ending at {end})"
            )
        self._raw = self._chunks_from()
        self._first: tuple[int, bytes] | None = None
        p = cursor.offset
        self.begin, self._first = after_first_newline(self._raw, 0) if p == 0 and point.in_ > 0 else (p, None)
        if self.boundary is not None and self.begin > self.boundary:
            self.stop = self.begin  # no record begins in (0, X] (or the cursor is the shard's end)

    def _chunks_from(self) -> Iterator[tuple[int, bytes]]:
        if self.boundary is None:
            try:
                for chunk in self.stream:
                    self._marks.append((chunk.offset, chunk.cursor))
                    yield chunk.offset, chunk.data
            except DecompressionError as exc:
                if not any(w in str(exc) for w in ("truncated", "no gzip member", "no zstd frame")):
                    raise  # corrupt data, not cut short by the view
                raise DecompressionError(
                    f"{_describe(self._source)}: the shard's stored range ends at byte {self._end}, which is not "
                    f"a {self._kind} {'member' if self._kind == 'gzip' else 'frame'} boundary (the start "
                    f"found there when the job was split was a false one): {exc}. Split it into fewer shards, "
                    "or read it with one chain"
                ) from exc
            self.boundary = self.stream.cursor().offset
            self.stream.close()
            if self._end >= self._source.size:
                return
            start = Cursor(self._kind, Point(self._end, self.boundary))
            range_size, prefetch = self._sizes
            self.stream = DecompressedStream(
                self._source, start, compression=self._kind, range_size=range_size, prefetch=prefetch
            )
        x = self.boundary
        for chunk in self.stream:  # past X: cursors from the next member's start
            self._marks.append((chunk.offset, Cursor(self._kind, Point(self._end, x), chunk.offset - x)))
            yield chunk.offset, chunk.data

    def __next__(self) -> tuple[int, bytes]:
        raise TypeError("iterate a CompressedShard with iter()")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self.stop is not None:
            return
        ranges = chain((self._first,), self._raw) if self._first is not None else self._raw
        self._first = None
        at = self.begin
        for offset, data in ranges:
            at = offset + len(data)
            x = self.boundary
            if x is not None and at > x:
                newline = data.find(b"\n", max(x - offset, 0))
                if newline >= 0:
                    self.stop = offset + newline + 1
                    yield offset, data if newline + 1 == len(data) else data[: newline + 1]
                    return
            yield offset, data
        self.stop = at

    def close(self) -> None:
        self.stream.close()
