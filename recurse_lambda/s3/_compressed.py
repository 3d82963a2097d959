"""The readers' range source when the object is compressed: the decompressed content, with resume cursors.

:func:`open_reader` asks :func:`plan` how to read an object: as stored (``start`` an int offset, as always),
or decompressed (gzip or zstd, detected from the first bytes by default). A decompressed reader parses
:class:`DecompressedRanges` (``(offset, data)`` over the decompressed content, like a ``RangeFetcher`` over the
stored bytes), which remembers the cursor of each chunk it gave until the reader has delivered past it: a
batch's ``cursor`` is the :class:`~recurse_lambda.s3._decompress.Cursor` at its ``end``, in dict form.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

from ..errors import ConfigurationError
from ._decompress import Compression, Cursor, DecompressedStream, Ranges, detect
from ._gzip_points import Point
from ._prefetch import AUTO_PREFETCH, AUTO_RANGE_SIZE, ByteSource, RangeFetcher

__all__ = ["CompressionOption", "DecompressedRanges", "Decompressing", "Prepended", "plan", "sniff"]

CompressionOption = Literal["auto", "gzip", "zstd"] | None


def plan(
    source: ByteSource, start: int | dict[str, Any], compression: CompressionOption, *, shard: bool
) -> tuple[int, CompressionOption, Cursor | None]:
    """``(offset, compression, cursor)``: where a reader over ``source`` starts and what it decompresses.

    ``start`` is an int offset or a cursor dict (``batch.cursor`` of a compressed object). An int past 0 over a
    compressed object is refused with a :class:`ConfigurationError` saying what to do. A shard (``end`` given)
    of a compressed object, with its compression given, starts at the stored offset ``start`` (a member or frame
    start, where decompressed offsets count from 0) or at a cursor; with ``"auto"``, a shard is read as stored.
    ``"auto"`` is returned for a reader that detects the compression from its first range.
    """
    if compression not in ("auto", "gzip", "zstd", None):
        raise ValueError(f"compression must be 'auto', 'gzip', 'zstd' or None, not {compression!r}")
    if isinstance(start, dict):
        try:
            cursor = Cursor.from_dict(start)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"start={start!r} is not a reader cursor (batch.cursor)") from exc
        if compression != "auto" and compression != cursor.compression:
            raise ConfigurationError(f"the cursor is for {cursor.compression!r} data, not {compression!r}")
        if shard and cursor.compression is None:
            raise ConfigurationError("a shard's start is an int offset, not a decompression cursor")
        return cursor.offset, cursor.compression, cursor
    if compression == "auto" and isinstance(start, int) and start > 0:
        note = getattr(source, "note", None)
        noted = note("compression") if note is not None else None
        if noted in ("gzip", "zstd"):  # an earlier hop found the object compressed (its pin says so)
            compression = noted
    if compression == "auto":
        # From the first range the reader fetches anyway (no extra request); an int offset past 0 (a later hop
        # of a plain object) or a shard is read as stored without looking at the object's start.
        return start, ("auto" if start == 0 and not shard else None), None
    if compression is None:
        return start, None, None
    name = _describe(source)
    if shard:  # `start` and `end` are member (or frame) starts: see _shard_ranges.CompressedShard
        return 0, compression, Cursor(compression, Point(start, 0))
    if start != 0:
        raise ConfigurationError(
            f"{name} is {compression}-compressed: resume from batch.cursor (a dict), not from the int offset "
            f"{start} (batch.end counts decompressed bytes, which cannot be reached without a cursor)"
        )
    return 0, compression, None


def _describe(source: ByteSource) -> str:
    bucket, key = getattr(source, "bucket", None), getattr(source, "key", None)
    return f"s3://{bucket}/{key}" if bucket and key else "the object"


class DecompressedRanges:
    """``(offset, data)`` chunks of the decompressed content, and the cursor at any offset not yet delivered."""

    def __init__(
        self,
        source: ByteSource,
        cursor: Cursor | None,
        compression: Compression,
        *,
        range_size: int = AUTO_RANGE_SIZE,
        prefetch: int = AUTO_PREFETCH,
        ranges: Ranges | None = None,
    ) -> None:
        self.stream = DecompressedStream(
            source, cursor, compression=compression, range_size=range_size, prefetch=prefetch, ranges=ranges
        )
        self._chunks = iter(self.stream)
        # (offset, cursor) of the chunks given whose bytes the reader may still deliver a batch end in.
        self._marks: deque[tuple[int, Cursor]] = deque()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self

    def __next__(self) -> tuple[int, bytes]:
        chunk = next(self._chunks)
        self._marks.append((chunk.offset, chunk.cursor))
        return chunk.offset, chunk.data

    def cursor_at(self, offset: int) -> Cursor:
        """The cursor at decompressed ``offset`` (at or after the last one asked for, within the chunks given);
        the chunks before it are forgotten."""
        marks = self._marks
        while len(marks) > 1 and marks[1][0] <= offset:
            marks.popleft()
        if not marks:
            return self.stream.cursor()  # nothing given yet: the start
        if marks[0][0] > offset:
            raise ValueError(f"offset {offset} is before the chunks still remembered")
        at, cursor = marks[0]
        return cursor.advance(offset - at)

    def close(self) -> None:
        self.stream.close()


class Prepended:
    """A range fetcher with the range already taken from it given first again (after detection)."""

    def __init__(self, first: tuple[int, bytes], rest: RangeFetcher) -> None:
        self._first: tuple[int, bytes] | None = first
        self._rest = rest

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self

    def __next__(self) -> tuple[int, bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._rest)

    def close(self) -> None:
        self._first = None
        self._rest.close()


def sniff(fetcher: RangeFetcher) -> tuple[Compression, Prepended | RangeFetcher]:
    """The compression the first range of ``fetcher`` shows, and the ranges from that one on: the stored bytes
    of a plain object, or what a compressed one is decompressed from (no range is fetched twice)."""
    first = next(fetcher, None)
    kind = detect(first[1][:4]) if first is not None else None
    return kind, fetcher if first is None else Prepended(first, fetcher)


_ORIGIN = Point(0, 0)


class Decompressing:
    """The part of :class:`~recurse_lambda.s3.Reader` that reads a compressed object decompressed."""

    #: What the reader decompresses (``"gzip"``, ``"zstd"``; ``"auto"`` until the first range tells), or None.
    compression: CompressionOption
    position: int
    _resume_at: Cursor | None
    _decompressed: DecompressedRanges | None
    _fetcher: Any
    _blocks: Any

    def decompress(self, compression: CompressionOption, cursor: Cursor | None = None) -> None:
        """Read the decompressed content (from ``cursor``, else from the start): :func:`open_reader` calls it.

        ``"auto"`` (from offset 0 only): the first range fetched tells; a plain object is then read as stored.
        """
        if self._fetcher is not None or self._blocks is not None:
            raise ValueError("decompress() is called before reading")
        self.compression = compression
        self._resume_at = cursor

    @property
    def cursor(self) -> int | dict[str, Any]:
        """Where a reader resumes to continue after the last batch delivered (``batch.cursor``)."""
        decoded = self.decompressed_ranges
        if decoded is not None:
            return decoded.cursor_at(self.position).to_dict()
        if self.compression is None or self.compression == "auto":
            return self.position
        return (self._resume_at or Cursor(self.compression, _ORIGIN)).to_dict()

    @property
    def decompressed_ranges(self) -> DecompressedRanges | None:
        """The decompressed content being parsed (a reader over another reader's ranges returns that one's)."""
        return self._decompressed
