"""What a shard's handler reads: ``run.shard``, readers of any format over the shard's byte ranges.

A shard does not know the formats: it asks a reader factory (``run.s3``, an :class:`~recurse_lambda.s3.S3Helpers`)
for ``reader(format, bucket, key, start, end=...)`` over each of its parts, so every format in
:data:`recurse_lambda.s3.FORMATS` reads a shard, and this layer imports nothing from ``s3`` at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..s3 import Batch
    from .plan import Part

__all__ = ["ReaderFactory", "Shard", "ShardReader"]


class ReaderFactory(Protocol):
    """Builds a reader of a registered format over one object (``S3Helpers`` is one)."""

    def reader(self, format: str, bucket: str, key: str, start: int = 0, **opts: Any) -> Any: ...


class Shard:
    """What a shard's handler gets as ``run.shard``: its place in the job and readers over its bytes.

    Offsets (``start=`` and ``batch.end``) count bytes from the beginning of the shard, across its parts, so a
    shard's cursor is one integer whether it covers part of one object or pieces of several.
    """

    def __init__(
        self, job_id: str, index: int, count: int, parts: Sequence[Part], s3: Callable[[], ReaderFactory]
    ) -> None:
        self.job_id = job_id
        self.index = index
        self.count = count
        self.parts = tuple(parts)
        self._s3 = s3

    @property
    def size(self) -> int:
        """Bytes in the shard's ranges (its records may end a little past them)."""
        return sum(p.end - p.start for p in self.parts)

    def __repr__(self) -> str:
        return f"Shard({self.index + 1} of {self.count} of job {self.job_id!r}, {len(self.parts)} part(s))"

    def reader(self, format: str, start: int = 0, **opts: Any) -> ShardReader:
        """The records of ``format`` (a name in :data:`~recurse_lambda.s3.FORMATS`) that begin in the shard's ranges."""

        def open_part(part: Part, local: int) -> Any:
            return self._s3().reader(format, part.bucket, part.key, local, end=part.end, **opts)

        return ShardReader(open_part, self.parts, start)

    def lines(self, start: int = 0, **opts: Any) -> ShardReader:
        """The lines that begin in the shard's ranges; ``opts`` as for :class:`~recurse_lambda.s3.LineReader`."""
        return self.reader("lines", start, **opts)

    def jsonl(self, start: int = 0, **opts: Any) -> ShardReader:
        """The JSON Lines records that begin in the shard's ranges."""
        return self.reader("jsonl", start, **opts)

    def csv(self, start: int = 0, **opts: Any) -> ShardReader:
        """The CSV records that begin in the shard's ranges; each record must be one line (see ``CsvReader``).

        Each part's header row is read from its object's start; pass ``header=`` to skip that read when every
        object has the same header.
        """
        return self.reader("csv", start, **opts)

    def chunks(self, start: int = 0, **opts: Any) -> ShardReader:
        """The shard's raw bytes, exactly its ranges."""
        return self.reader("chunks", start, **opts)


class ShardReader:
    """Batches over a shard's parts in order, with offsets counted from the shard's beginning."""

    def __init__(self, open_part: Callable[[Part, int], Any], parts: Sequence[Part], start: int = 0) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, not {start}")
        self._open = open_part
        self._parts = tuple(parts)
        self.start = start
        #: The shard offset of the next unread record (``start``, then the ``end`` of the last batch).
        self.position = start

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from batch.records

    def batches(
        self, records: int | None = None, *, max_bytes: int | None = None
    ) -> Generator[Batch[Any], None, None]:
        """As a single reader's ``batches``; a batch never spans two parts."""
        base = 0
        for part in self._parts:
            length = part.end - part.start
            if self.position >= base + length:
                base += length
                continue
            local = part.start + max(0, self.position - base)
            reader = self._open(part, local)
            inner = reader.batches(records, max_bytes=max_bytes)
            try:
                for b in inner:
                    # The record that straddles the part's end is the part's last: past it, resume at the next
                    # part (a local offset past the end would collide with the next part's shard offsets).
                    end = base + length if b.end >= part.end else base + b.end - part.start
                    start = base + max(0, b.start - part.start)
                    self.position = end
                    yield dataclasses.replace(b, start=start, end=end)
            finally:
                inner.close()
                reader.close()
            base += length
            self.position = max(self.position, base)
