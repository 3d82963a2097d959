"""CSV records, resumable at any record start, quoted fields with newlines included.

Physical lines are split like a file opened with ``newline=""`` (``\\n``, ``\\r\\n`` or ``\\r``) and fed to the
standard ``csv`` module one at a time; the bytes it has pulled when a record is complete give that record's end,
so a quoted field spanning lines (or ranges) ends the record where the csv module says it ends.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from ._lines import check_encoding, iter_regions
from ._prefetch import ByteSource
from ._readers import DEFAULT_PREFETCH, DEFAULT_RANGE_SIZE, ListBlock, MalformedRecordError, Reader

__all__ = ["CsvReader"]

_HEADER_RANGE = 64 * 1024

_SPANS_LINES = (
    "a CSV record spans more than one line (a quoted or escaped newline) in a shard (end=): a shard finds its "
    "first record at a line start, which is only sound when every record is one line. Read this object in one "
    "chain (without end=, without Shards)"
)
_BARE_CR = (
    "a CSV record ends with a bare CR (\\r without \\n) in a shard (end=): a shard finds records at LF line "
    "ends only. Read this object in one chain (without end=, without Shards)"
)


class _BadBytes(Exception):
    """Undecodable bytes in a line; becomes a MalformedRecordError at the start of the record."""


class _Feed:
    """The csv module's input: decoded physical lines, counting the bytes handed out."""

    __slots__ = ("_codec", "_errors", "_lines", "bare_cr", "consumed", "pulls", "raised", "regions")

    def __init__(
        self, ranges: Iterable[tuple[int, bytes]], start: int, codec: str, bom: bool, errors: str
    ) -> None:
        self.consumed = start
        self.regions = 0
        #: Lines asked for, the end of the input included: a record that took more than one spans lines.
        self.pulls = 0
        #: Whether the last line handed out ended with a CR not followed by LF.
        self.bare_cr = False
        #: The last exception the feed itself raised, told apart from the csv module's own errors.
        self.raised: BaseException | None = None
        self._codec = codec
        self._errors = errors
        self._lines = self._physical(ranges, start, bom)

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        self.pulls += 1
        try:
            raw = next(self._lines)
        except StopIteration:
            raise
        except BaseException as exc:
            self.raised = exc
            raise
        try:
            text = raw.decode(self._codec, self._errors)
        except UnicodeDecodeError as exc:
            raise _BadBytes(
                f"bytes not valid {self._codec} at byte {self.consumed + exc.start} ({exc.reason})"
            ) from exc
        self.consumed += len(raw)
        self.bare_cr = raw.endswith(b"\r")
        return text

    def _physical(self, ranges: Iterable[tuple[int, bytes]], start: int, bom: bool) -> Iterator[bytes]:
        for offset, data, cut, _final in iter_regions(ranges, start):
            self.regions += 1
            region = data if cut == len(data) else data[:cut]
            lines = region.splitlines(keepends=True)  # bytes split on \n, \r\n and \r only, as newline=""
            if bom and offset == 0 and region.startswith(b"\xef\xbb\xbf"):
                self.consumed += 3
                lines[0] = lines[0][3:]
            yield from lines


class CsvReader(Reader[Any]):
    """CSV records from byte offset ``start`` (0 or a ``batch.end``), as dicts when there is a header.

    With ``has_header`` and no ``header``, the header row is read: from the records at ``start == 0``, or from
    the start of the object otherwise (an extra small read). Keep :attr:`header` in the chain's state and pass
    it back as ``header=`` when resuming to skip that read. With ``header`` given and ``has_header`` true,
    the file's own header row is skipped at ``start == 0``. Without any header, records are lists (blank lines
    give ``[]``, as with ``csv.reader``); dict rows follow ``csv.DictReader`` (``restkey``, ``restval``, blank
    lines skipped). Dialect options (``delimiter``, ``quotechar``, ``escapechar``, ``doublequote``,
    ``skipinitialspace``, ``quoting``, ``strict``) go to the csv module; ``quotechar=None`` without ``quoting``
    means ``QUOTE_NONE``, as with ``csv.reader``. A record the csv module rejects (the header row included,
    and a non-numeric unquoted field under ``QUOTE_NONNUMERIC``) raises :class:`MalformedRecordError` with
    its offset, after the records before it are delivered.

    With ``end``, the reader is a shard, as for :class:`LineReader`: the records that begin at a line start in
    ``[start, end)``. That is sound only when every record (the header row included) is one line, so a shard
    checks it: a record that spans lines (a quoted or escaped newline, or a quote left open at the shard's end)
    raises :class:`MalformedRecordError` at its offset. The shard that holds such a record's first line sees it
    span lines whatever the cut points, so a sharded job over such a file fails rather than read records from
    a wrong start. The header row is read from the object's start when ``start`` is past it.
    """

    def __init__(
        self,
        source: ByteSource,
        start: int = 0,
        *,
        header: list[str] | None = None,
        has_header: bool = True,
        encoding: str = "utf-8",
        errors: str = "strict",
        restkey: str | None = None,
        restval: Any = None,
        dialect: str | csv.Dialect | type[csv.Dialect] = "excel",
        range_size: int = DEFAULT_RANGE_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
        end: int | None = None,
        **fmtparams: Any,
    ) -> None:
        super().__init__(source, start, end=end, range_size=range_size, prefetch=prefetch)
        self._codec, self._bom = check_encoding(encoding)
        self._errors = errors
        self._header = list(header) if header is not None else None
        self._has_header = has_header
        self._restkey = restkey
        self._restval = restval
        self._dialect = dialect
        if "quotechar" in fmtparams and fmtparams["quotechar"] is None and "quoting" not in fmtparams:
            fmtparams["quoting"] = csv.QUOTE_NONE  # what csv.reader infers, whatever the dialect
        self._fmtparams = fmtparams
        csv.reader([], dialect, **fmtparams)  # reject bad dialect options now, not at the first read
        self._feed: _Feed | None = None
        self._rows: Iterator[list[str]] | None = None

    @property
    def header(self) -> list[str] | None:
        """The column names (read now if needed), or None without a header (or for an empty object)."""
        if self._header is None and self._has_header and not self._closed:
            self._open()
        return self._header

    def _open(self) -> tuple[_Feed, Iterator[list[str]]]:
        if self._feed is not None and self._rows is not None:
            return self._feed, self._rows
        begin, ranges = self._record_ranges()
        feed = self._new_feed(ranges, begin)
        rows = csv.reader(feed, self._dialect, **self._fmtparams)
        if self._has_header and begin == 0:
            first = self._header_row(feed, rows)
            if self._header is None:
                self._header = first
            self.position = feed.consumed
        elif self._has_header and self._header is None:
            self._header = self._read_header()
        self._feed, self._rows = feed, rows
        return feed, rows

    def _new_feed(self, ranges: Iterable[tuple[int, bytes]], start: int) -> _Feed:
        return _Feed(ranges, start, self._codec, self._bom, self._errors)

    def _read_header(self) -> list[str] | None:
        ranges = self._ranges(0, min(self._range_size, _HEADER_RANGE))
        try:
            feed = self._new_feed(ranges, 0)
            return self._header_row(feed, csv.reader(feed, self._dialect, **self._fmtparams))
        finally:
            ranges.close()

    def _header_row(self, feed: _Feed, rows: Iterator[list[str]]) -> list[str] | None:
        """The first row, or None for an empty object; a malformed one is a MalformedRecordError at 0."""
        try:
            row = next(rows, None)
        except (csv.Error, _BadBytes, ValueError) as exc:
            if exc is feed.raised:
                raise
            raise self._malformed(exc, 0, feed.pulls) from (exc.__cause__ or exc)
        if row is not None and self._not_one_line(feed, feed.pulls):
            raise self._malformed(None, 0, feed.pulls, feed.bare_cr)
        return row

    def _not_one_line(self, feed: _Feed, pulls: int) -> bool:
        """In a shard, whether the record just read (from ``pulls`` lines) is not one LF-ended line."""
        return self.end is not None and (pulls > 1 or feed.bare_cr)

    def _malformed(
        self, exc: BaseException | None, offset: int, pulls: int = 1, bare_cr: bool = False
    ) -> MalformedRecordError:
        if self.end is not None and pulls > 1:
            message = _SPANS_LINES
        elif exc is None:
            message = _BARE_CR if bare_cr else _SPANS_LINES
        elif isinstance(exc, (csv.Error, _BadBytes)):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        return MalformedRecordError(
            message,
            offset=offset,
            bucket=getattr(self.source, "bucket", None),
            key=getattr(self.source, "key", None),
        )

    def _as_dict(self, row: list[str], header: list[str]) -> dict[Any, Any]:
        record: dict[Any, Any] = dict(zip(header, row, strict=False))
        if len(row) > len(header):
            record[self._restkey] = row[len(header) :]
        elif len(row) < len(header):
            for name in header[len(row) :]:
                record[name] = self._restval
        return record

    def parse(self) -> Iterator[ListBlock[Any]]:
        feed, rows = self._open()
        header = self._header
        records: list[Any] = []
        starts: list[int] = []
        ends: list[int] = []
        block_start, region = feed.consumed, feed.regions
        while True:
            at, pulls = feed.consumed, feed.pulls
            try:
                row = next(rows)
            except StopIteration:
                break
            except (csv.Error, _BadBytes, ValueError) as exc:
                if exc is feed.raised:  # the source's own error (a failed read), not a malformed record
                    raise
                block = ListBlock(records, starts, ends, block_start, at)
                block.error = self._malformed(exc, at, feed.pulls - pulls)
                block.error.__cause__ = exc.__cause__ or exc
                yield block
                return
            if self._not_one_line(feed, feed.pulls - pulls):
                block = ListBlock(records, starts, ends, block_start, at)
                block.error = self._malformed(None, at, feed.pulls - pulls, feed.bare_cr)
                yield block
                return
            if header is not None:
                if not row:
                    continue
                records.append(self._as_dict(row, header))
            else:
                records.append(row)
            starts.append(at)
            ends.append(feed.consumed)
            if feed.regions != region:  # a block per parsed piece: batches() without sizes follows them
                yield ListBlock(records, starts, ends, block_start, feed.consumed)
                records, starts, ends = [], [], []
                block_start, region = feed.consumed, feed.regions
        yield ListBlock(records, starts, ends, block_start, feed.consumed)
