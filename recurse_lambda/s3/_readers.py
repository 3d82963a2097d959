"""Resumable readers: records out of a byte source, in batches that say where to resume.

Every reader starts at a byte offset and yields :class:`Batch` objects. ``batch.end`` is the offset of the next
unread record: store it in the cursor, and a reader started there in the next hop continues exactly after the
batch. Parsing works on whole ranges (``range_size`` bytes) with the next ones prefetched, so memory stays flat
whatever the object's size (except for a single record longer than a range, which is held whole).

The readers only need ``source.size`` and ``source.read(start, end)`` (see :class:`ByteSource`), so they run
over a :class:`PinnedSource` in production and over an in-memory fake in tests.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat
from operator import add
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from ..errors import ConfigurationError, MalformedRecordError
from ._compressed import CompressionOption, DecompressedRanges, Decompressing, Prepended, sniff
from ._decompress import Cursor
from ._prefetch import AUTO_PREFETCH, AUTO_RANGE_SIZE, ByteSource, RangeFetcher, _describe, check_window
from ._shard_ranges import CompressedShard, ShardRanges

if TYPE_CHECKING:
    from ._aiter import ABatches

__all__ = [
    "DEFAULT_RANGE_SIZE",
    "Batch",
    "Block",
    "ByteSource",
    "ChunkReader",
    "ListBlock",
    "MalformedRecordError",
    "Reader",
]

T = TypeVar("T")

# 8 MiB ranges (a 1 MiB first one) and a prefetch depth that adapts to S3's latency: see RangeFetcher.
DEFAULT_RANGE_SIZE = AUTO_RANGE_SIZE
DEFAULT_PREFETCH = AUTO_PREFETCH


@dataclass(slots=True)
class Batch(Generic[T]):
    """Consecutive records; ``start`` is the offset of the first, ``end`` the offset after the last.

    ``cursor`` is what the next reader resumes from (``start=batch.cursor``): ``end`` itself for an object read
    as stored; for a compressed one (offsets then count decompressed bytes), a small dict.
    """

    records: list[T]
    start: int
    end: int
    resume: Cursor | None = field(default=None, repr=False, compare=False)

    @property
    def cursor(self) -> int | dict[str, Any]:
        """Where a reader resumes after this batch: pass it as ``start=`` (JSON-serialisable)."""
        return self.end if self.resume is None else self.resume.to_dict()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[T]:
        return iter(self.records)

    @property
    def nbytes(self) -> int:
        """Bytes of the object this batch covers."""
        return self.end - self.start


class Block(Generic[T]):
    """Records parsed from one stretch of the object, with a way to find each record's byte offsets.

    ``error`` is raised once the records before it have been delivered; ``skipped`` lists the records a
    lenient reader passed over, as ``(offset, reason)``.
    """

    __slots__ = ("end", "error", "records", "skipped", "start")

    def __init__(self, records: list[T], start: int, end: int) -> None:
        self.records = records
        self.start = start
        self.end = end
        self.error: BaseException | None = None
        self.skipped: list[tuple[int, str]] = []

    def start_of(self, i: int) -> int:
        """The offset where record ``i`` starts."""
        raise NotImplementedError

    def end_of(self, j: int) -> int:
        """The offset right after record ``j - 1`` (``j >= 1``)."""
        raise NotImplementedError

    def fit(self, i: int, hi: int, limit: int) -> int:
        """The largest ``j`` in ``[i, hi]`` such that records ``i .. j-1`` end at or before ``limit``."""
        raise NotImplementedError


class _UniformBlock(Block[T]):
    """Contiguous records whose sizes are ``len(sized[k]) + sep`` bytes (lines and their terminators).

    Offsets are computed only where a batch boundary falls, and at C speed (``sum(map(len, ...))``): a
    per-record offset list would cost more than splitting the range did.
    """

    __slots__ = ("_bounds", "_ci", "_co", "_sep", "_sized")

    def __init__(
        self, records: list[T], start: int, end: int, sized: list[bytes] | list[str], sep: int
    ) -> None:
        super().__init__(records, start, end)
        self._sized = sized
        self._sep = sep
        self._bounds: list[int] | None = None
        self._ci = 0  # a cursor: record index and its start offset, as batches move forward
        self._co = start

    def bounds(self) -> list[int]:
        """``bounds[k]`` is where record ``k`` starts; ``bounds[len(records)]`` is the end."""
        if self._bounds is None:
            sizes = map(add, map(len, self._sized), repeat(self._sep))
            self._bounds = list(accumulate(sizes, initial=self.start))
        return self._bounds

    def start_of(self, i: int) -> int:
        return self.end_of(i) if i else self.start

    def end_of(self, j: int) -> int:
        if j == len(self.records):
            return self.end
        if self._bounds is not None:
            return self._bounds[j]
        if j < self._ci:
            self._ci, self._co = 0, self.start
        self._co += sum(map(len, self._sized[self._ci : j])) + self._sep * (j - self._ci)
        self._ci = j
        return self._co

    def fit(self, i: int, hi: int, limit: int) -> int:
        return bisect_right(self.bounds(), limit, i + 1, hi + 1) - 1


class ListBlock(Block[T]):
    """Records with explicit start and end offsets (there may be gaps: blank or skipped lines)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, records: list[T], starts: list[int], ends: list[int], start: int, end: int) -> None:
        super().__init__(records, start, end)
        self._starts = starts
        self._ends = ends

    def start_of(self, i: int) -> int:
        return self._starts[i]

    def end_of(self, j: int) -> int:
        return self._ends[j - 1]

    def fit(self, i: int, hi: int, limit: int) -> int:
        return bisect_right(self._ends, limit, i, hi)


class Reader(Decompressing, Generic[T]):
    """The base of every reader: batching, the cursor, shards (``end``) and the reader's lifetime.

    A format subclasses it and implements :meth:`parse`, which yields :class:`Block` objects (records with a way
    to find their byte offsets; :class:`ListBlock` takes explicit offsets). Bytes come from
    ``self._record_ranges()`` (``(offset, data)`` ranges from the first record on, cut at the end of the shard
    when there is one) or ``self._ranges()``; :attr:`stop` reports where a shard's records end. Register the
    class in :data:`recurse_lambda.s3.FORMATS` (see ``s3/_formats.py``) and ``run.s3.reader(name, ...)`` and
    ``run.shard.reader(name)`` build it.
    """

    def __init__(
        self, source: ByteSource, start: int, *, end: int | None, range_size: int, prefetch: int
    ) -> None:
        check_window(start, range_size, prefetch)
        if end is not None and end < 0:
            raise ValueError(f"end must be >= 0, not {end}")
        self.source = source
        self.start = start
        #: Where the shard ends, or None to read to the end of the object.
        self.end = end
        #: The offset of the next unread record: ``start``, then the ``end`` of the last batch delivered (with
        #: ``end``, once done: the start of the first record at or after ``end``).
        self.position = start
        self._shard: ShardRanges | CompressedShard | None = None
        self._range_size = range_size
        self._prefetch = prefetch
        self._fetcher: RangeFetcher | Prepended | None = None
        self._blocks: Iterator[Block[T]] | None = None
        self._block: Block[T] | None = None
        self._index = 0
        self._skipped: list[tuple[int, str]] = []
        self._unreported: deque[tuple[int, str]] = deque()
        self._done = False
        self._closed = False
        self.compression: CompressionOption = None  # see Decompressing
        self._resume_at: Cursor | None = None
        self._decompressed: DecompressedRanges | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, position={self.position})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop any background fetch and release the ranges held; the reader cannot be read afterwards."""
        self._closed = True
        self._block = None
        self._blocks = None
        if self._fetcher is not None:
            self._fetcher.close()
        if self._decompressed is not None:
            self._decompressed.close()

    @property
    def done(self) -> bool:
        """Whether the reader has delivered its last record."""
        return self._done

    def __iter__(self) -> Iterator[T]:
        for batch in self.batches():
            yield from batch.records

    def batches(
        self, records: int | None = None, *, max_bytes: int | None = None
    ) -> Generator[Batch[T], None, None]:
        """Batches of at most ``records`` records and/or ``max_bytes`` bytes (always at least one record).

        With neither, a batch holds what one parsing step produced (a range, or a piece of about 256 KiB of
        one). The reader is closed when the generator ends or is closed; ``batch.end`` is where a new reader
        resumes.
        """
        if records is not None and records < 1:
            raise ValueError(f"records must be >= 1, not {records}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if self._closed and not self._done:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._batches(records, max_bytes)

    def abatches(
        self, records: int | None = None, *, max_bytes: int | None = None, depth: int = 2
    ) -> ABatches[Batch[T]]:
        """:meth:`batches` as an async iterator for async handlers: the blocking reads run on a thread, at
        most ``depth`` batches ahead; use it in ``async with`` (closing it stops the thread and the reader)."""
        from ._aiter import abatches  # asyncio is imported only by async handlers

        return abatches(self, records, max_bytes=max_bytes, depth=depth)

    def _ranges(
        self, start: int | None = None, range_size: int | None = None
    ) -> RangeFetcher | Prepended | DecompressedRanges:
        """The reader's range fetcher (prefetching), or with ``start`` a one-off one without prefetch (over a
        compressed object: the decompressed content, a one-off one only from 0)."""
        if self.compression == "auto" and start is None and self._fetcher is None:
            self.compression, self._fetcher = sniff(self._new_fetcher())
            note = getattr(self.source, "note", None)  # a later hop's int start is then refused, not misread
            if self.compression is not None and note is not None:
                note("compression", self.compression)
        if self.compression is not None and self.compression != "auto":
            if start is not None:
                if start != 0:
                    raise ValueError("a compressed object is read again only from its start")
                return DecompressedRanges(self.source, None, self.compression, prefetch=0)
            if (
                self._decompressed is None
            ):  # from the sniffed ranges, if any (handed over: none fetched twice)
                ranges, self._fetcher = self._fetcher, None
                self._decompressed = DecompressedRanges(
                    self.source,
                    self._resume_at,
                    self.compression,
                    range_size=self._range_size,
                    prefetch=self._prefetch,
                    ranges=ranges,
                )
            return self._decompressed
        if start is not None:
            return RangeFetcher(self.source, start, range_size=range_size or self._range_size, prefetch=0)
        if self._fetcher is None:
            self._fetcher = self._new_fetcher()
        return self._fetcher

    def _new_fetcher(self) -> RangeFetcher:
        if self.end is None:
            return RangeFetcher(self.source, self.start, range_size=self._range_size, prefetch=self._prefetch)
        # From byte start - 1, which tells whether start begins a record, in the same request. Ranges past
        # `end` are fetched only while the record straddling it is unfinished.
        return RangeFetcher(
            self.source,
            max(self.start - 1, 0),
            range_size=self._range_size,
            prefetch=self._prefetch,
            horizon=self.end,
        )

    def _record_ranges(self) -> tuple[int, Iterable[tuple[int, bytes]]]:
        """Where the records begin and the ranges holding them: with ``end``, only the shard's records."""
        if self.end is None:
            return self.start, self._ranges()
        if self.compression in ("gzip", "zstd") and self._resume_at is not None:  # see CompressedShard
            shard = CompressedShard(
                self.source, self._resume_at, self.end, range_size=self._range_size, prefetch=self._prefetch
            )
            self._shard = self._decompressed = shard
            return shard.begin, shard
        size = self.source.size
        if self.start > size:
            raise ValueError(f"start {self.start} is past the end of {_describe(self.source)} ({size})")
        end = min(self.end, size)
        if self.start >= end:  # also a reader resumed after a record that straddled `end`: nothing to read
            return self.start, ()
        self._shard = ShardRanges(self._ranges(), self.start, end)
        return self._shard.begin, self._shard

    @property
    def stop(self) -> int | None:
        """With ``end``, once the records are exhausted: the first record start at or after ``end``."""
        return None if self._shard is None else self._shard.stop

    def parse(self) -> Iterator[Block[T]]:
        """The records, block by block, from ``start`` on (called once, by the first batch)."""
        raise NotImplementedError

    def _next_block(self) -> Block[T] | None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")
        if self._blocks is None:
            self._blocks = self.parse()
        block = next(self._blocks, None)
        if block is not None and block.skipped:
            self._unreported.extend(block.skipped)
        return block

    def _deliver(self, parts: list[list[T]], first: int, last: int) -> Batch[T]:
        records = parts[0] if len(parts) == 1 else list(chain.from_iterable(parts))
        self.position = last
        while self._unreported and self._unreported[0][0] < last:
            self._skipped.append(self._unreported.popleft())
        decoded = self.decompressed_ranges
        if decoded is not None:
            return Batch(records, first, last, decoded.cursor_at(last))
        return Batch(records, first, last)

    def _batches(self, limit: int | None, max_bytes: int | None) -> Generator[Batch[T], None, None]:
        if self._done:
            return
        whole_blocks = limit is None and max_bytes is None
        parts: list[list[T]] = []
        count = first = last = 0
        try:
            while True:
                block = self._block
                if block is None or self._index >= len(block.records):
                    if block is not None and block.error is not None:
                        if parts:
                            yield self._deliver(parts, first, last)
                        raise block.error
                    block = self._next_block()
                    if block is None:
                        if parts:
                            yield self._deliver(parts, first, last)
                        self._done = True
                        stop = self.stop
                        if stop is not None:  # past blank or skipped lines, and with no record at all
                            self.position = stop
                        self._skipped.extend(self._unreported)
                        self._unreported.clear()
                        return
                    self._block, self._index = block, 0
                    continue
                i, n = self._index, len(block.records)
                hi = n if limit is None else min(n, i + limit - count)
                if not parts:
                    first = block.start_of(i)
                j = hi
                if max_bytes is not None:
                    j = block.fit(i, hi, first + max_bytes)
                    if j == i:
                        if parts:  # the next record would overflow this batch: it opens the next one
                            batch = self._deliver(parts, first, last)
                            parts, count = [], 0
                            yield batch
                            continue
                        j = i + 1  # a single record larger than max_bytes still makes a batch
                parts.append(block.records if i == 0 and j == n else block.records[i:j])
                count += j - i
                last = block.end_of(j)
                self._index = j
                full = whole_blocks or count == limit or j < hi
                if max_bytes is not None and last - first >= max_bytes:
                    full = True
                if full:
                    batch = self._deliver(parts, first, last)
                    parts, count = [], 0
                    yield batch
        finally:
            self.close()


class ChunkReader(Reader[bytes]):
    """Raw bytes in chunks of ``chunk_size`` (the last may be shorter), from any offset.

    With ``end``, exactly the bytes ``[start, end)`` (clamped to the size): chunks are not records, so there
    is no alignment.
    """

    def __init__(
        self,
        source: ByteSource,
        start: int = 0,
        *,
        end: int | None = None,
        chunk_size: int = DEFAULT_RANGE_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(source, start, end=end, range_size=chunk_size, prefetch=prefetch)
        if end is not None and end < start:
            raise ValueError(f"end ({end}) must be >= start ({start})")

    def _new_fetcher(self) -> RangeFetcher:
        # int(): chunks are all chunk_size bytes, so the automatic size's smaller first range does not apply.
        size = int(self._range_size)
        return RangeFetcher(self.source, self.start, range_size=size, prefetch=self._prefetch, end=self.end)

    def parse(self) -> Iterator[Block[bytes]]:
        if self.end is not None and self.compression in ("gzip", "zstd"):
            raise ConfigurationError("chunks of a compressed object cannot end at end=: read it whole")
        for offset, data in self._ranges():
            end = offset + len(data)
            yield ListBlock([data], [offset], [end], offset, end)
