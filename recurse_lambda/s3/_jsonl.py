"""JSON Lines: one JSON value per line, resumable at any line start."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

from ._compressed import CompressionOption, DecompressedRanges
from ._decompress import Cursor
from ._lines import LineReader
from ._prefetch import ByteSource
from ._readers import DEFAULT_PREFETCH, DEFAULT_RANGE_SIZE, ListBlock, MalformedRecordError, Reader

__all__ = ["JsonLinesReader"]

_JSON_WHITESPACE = b" \t\r\n"  # RFC 8259's whitespace; bytes.isspace() also accepts \x0b and \x0c


class JsonLinesReader(Reader[Any]):
    """One decoded JSON value per line; blank lines are ignored. ``end`` makes a shard, as for ``LineReader``.

    Blank means empty or JSON whitespace only (space, tab, CR, LF); a line of form feeds or vertical tabs is
    handed to ``loads`` like any other, so it is malformed.

    A malformed line raises :class:`MalformedRecordError` (after the records before it are delivered) with
    ``on_error="raise"``; with ``"skip"`` it is passed over and listed in :attr:`skipped` as
    ``(offset, reason)``. ``loads`` may be a faster parser that takes ``bytes`` (``orjson.loads``).
    """

    def __init__(
        self,
        source: ByteSource,
        start: int = 0,
        *,
        end: int | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        loads: Callable[[bytes], Any] = json.loads,
        range_size: int = DEFAULT_RANGE_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        super().__init__(source, start, end=end, range_size=range_size, prefetch=prefetch)
        self.on_error = on_error
        self._loads = loads
        self._lines = LineReader(
            source, start, end=end, range_size=range_size, encoding=None, prefetch=prefetch
        )

    @property
    def skipped(self) -> list[tuple[int, str]]:
        """Malformed lines passed over so far, as ``(offset, reason)``, up to :attr:`position`.

        A line after the last delivered batch is reported by the reader that delivers past it (the next hop),
        so counting ``skipped`` into the chain's state counts each bad line once.
        """
        return self._skipped

    def close(self) -> None:
        super().close()
        self._lines.close()

    def decompress(self, compression: CompressionOption, cursor: Cursor | None = None) -> None:
        super().decompress(compression, cursor)
        self._lines.decompress(compression, cursor)

    @property
    def decompressed_ranges(self) -> DecompressedRanges | None:
        return self._lines.decompressed_ranges

    @property
    def stop(self) -> int | None:
        return self._lines.stop

    def parse(self) -> Iterator[ListBlock[Any]]:
        bucket, key = getattr(self.source, "bucket", None), getattr(self.source, "key", None)
        loads = self._loads
        for lines in self._lines.parse():
            bounds = lines.bounds()
            records: list[Any] = []
            starts: list[int] = []
            ends: list[int] = []
            block = ListBlock(records, starts, ends, lines.start, lines.end)
            for k, line in enumerate(lines.records):
                if not line or (line.isspace() and not line.strip(_JSON_WHITESPACE)):
                    continue  # blank: JSON whitespace only (\x0b and \x0c are not, so they fail in loads)
                try:
                    value = loads(line)
                except (ValueError, RecursionError) as exc:
                    if self.on_error == "skip":
                        block.skipped.append((bounds[k], str(exc)))
                        continue
                    block.error = MalformedRecordError(str(exc), offset=bounds[k], bucket=bucket, key=key)
                    block.error.__cause__ = exc
                    break
                records.append(value)
                starts.append(bounds[k])
                ends.append(bounds[k + 1])
            if lines.error is not None and block.error is None:
                block.error = lines.error
            yield block
            if block.error is not None:
                return
