"""What a shard's handler reads: ``run.shard``, readers of any format over the shard's byte ranges.

A shard does not know the formats: it asks a reader factory (``run.s3``, an :class:`~recurse_lambda.s3.S3Helpers`)
for ``reader(format, bucket, key, start, end=...)`` over each of its parts, so every format in
:data:`recurse_lambda.s3.FORMATS` reads a shard, and this layer imports nothing from ``s3`` at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..s3 import Batch
    from .plan import Part

__all__ = ["ReaderFactory", "Shard", "ShardReader"]


class ReaderFactory(Protocol):
    """Builds a reader of a registered format over one object (``S3Helpers`` is one)."""

    def reader(
        self, format: str, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any
    ) -> Any: ...


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

    def reader(self, format: str, start: int | dict[str, Any] = 0, **opts: Any) -> ShardReader:
        """The records of ``format`` (a name in :data:`~recurse_lambda.s3.FORMATS`) that begin in the shard's ranges.

        ``start``: 0, or a ``batch.cursor`` (``batch.end`` too while the shard has met no compressed object).
        """

        def open_part(part: Part, local: int | dict[str, Any]) -> Any:
            s3 = self._s3()
            if part.compression is not None:  # member (frame) starts: see s3/_shard_ranges.CompressedShard
                asked = opts.get("compression", "auto")
                if asked not in ("auto", part.compression) or format == "chunks":
                    raise ConfigurationError(
                        f"s3://{part.bucket}/{part.key} was split as {part.compression} data: a shard of it "
                        f"reads its records decompressed (not {format} with compression={asked!r})"
                    )
                at = local if isinstance(local, dict) else part.start
                return s3.reader(
                    format,
                    part.bucket,
                    part.key,
                    at,
                    **{**opts, "end": part.end, "compression": part.compression},
                )
            if part.start == 0 and part.end == part.size:  # a whole object: read as run.s3 would ("auto")
                return s3.reader(format, part.bucket, part.key, local, **opts)
            return s3.reader(format, part.bucket, part.key, local, end=part.end, **opts)

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


class _ShardCursor:
    """A shard's ``batch.cursor`` once offsets are no longer stored bytes: the part, its offset, its cursor."""

    def __init__(self, part: int, base: int, at: int, inner: int | dict[str, Any]) -> None:
        self._dict = {"part": part, "base": base, "at": at, "cursor": inner}

    def to_dict(self) -> dict[str, Any]:
        return dict(self._dict)


class ShardReader:
    """Batches over a shard's parts in order, with offsets counted from the shard's beginning.

    Offsets count stored bytes until a compressed object is met; from there on they count its decompressed bytes
    (an object split at member or frame starts, or a whole one), and ``batch.cursor`` is a dict.
    """

    def __init__(
        self,
        open_part: Callable[[Part, int | dict[str, Any]], Any],
        parts: Sequence[Part],
        start: int | dict[str, Any] = 0,
    ) -> None:
        self._open = open_part
        self._parts = tuple(parts)
        self._resume: dict[str, Any] | None = None
        if isinstance(start, dict):
            try:
                self._resume = {k: start[k] for k in ("part", "base", "at", "cursor")}
                at = int(start["at"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"start={start!r} is not a shard's batch.cursor") from exc
        else:
            at = start
        if at < 0:
            raise ValueError(f"start must be >= 0, not {start}")
        self.start = at
        #: The shard offset of the next unread record (``start``, then the ``end`` of the last batch).
        self.position = at

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from batch.records

    def batches(
        self, records: int | None = None, *, max_bytes: int | None = None
    ) -> Generator[Batch[Any], None, None]:
        """As a single reader's ``batches``; a batch never spans two parts."""
        base, first, local = 0, 0, None
        decoded = self._resume is not None  # offsets past stored bytes: cursors are dicts
        if self._resume is not None:
            first, base, local = int(self._resume["part"]), int(self._resume["base"]), self._resume["cursor"]
        for index in range(first, len(self._parts)):
            part = self._parts[index]
            length = part.end - part.start
            if local is None:
                if not decoded and self.position >= base + length:
                    base += length
                    continue
                local = part.start + max(0, self.position - base) if not decoded else part.start
            reader = self._open(part, local)
            local = None
            inner = reader.batches(records, max_bytes=max_bytes)
            try:
                for b in inner:
                    plain = b.resume is None  # a compressed object's batches carry a decompression cursor
                    decoded = decoded or not plain
                    if plain:
                        # The record that straddles the part's end is the part's last: past it, resume at the
                        # next part (a local offset past the end would collide with the next part's offsets).
                        end = base + length if b.end >= part.end else base + b.end - part.start
                        start = base + max(0, b.start - part.start)
                    else:  # decompressed offsets, from the part's first member (0 for a whole object)
                        end, start = base + b.end, base + b.start
                    self.position = end
                    if decoded:
                        cursor = _ShardCursor(index, base, end, b.cursor)
                        yield dataclasses.replace(b, start=start, end=end, resume=cast(Any, cursor))
                    else:
                        yield dataclasses.replace(b, start=start, end=end)
            finally:
                inner.close()
                reader.close()
            base += length if reader.compression in (None, "auto") else reader.position
            self.position = max(self.position, base)
