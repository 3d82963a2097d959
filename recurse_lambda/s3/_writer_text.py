"""Text on top of the byte writer: lines, CSV rows and JSON Lines records, encoded once, in order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ._writer import S3Writer

__all__ = ["CsvWriter", "JsonLinesWriter", "TextWriter"]


class TextWriter:
    """Strings to an :class:`S3Writer`, encoded with ``encoding`` (UTF-8 by default)."""

    def __init__(self, writer: S3Writer, encoding: str = "utf-8", newline: str = "\n") -> None:
        self.writer = writer
        self.encoding = encoding
        self.newline = newline

    def write(self, text: str) -> int:
        return self.writer.write(text.encode(self.encoding))

    def write_line(self, line: str) -> int:
        """``line`` and the newline."""
        return self.write(line + self.newline)

    def write_lines(self, lines: Iterable[str]) -> int:
        """Every line, each with the newline, in one write."""
        return self.write("".join(line + self.newline for line in lines))

    def complete(self) -> dict[str, Any]:
        return self.writer.complete()


class JsonLinesWriter(TextWriter):
    """One compact JSON document per line: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``."""

    def __init__(self, writer: S3Writer, **dumps: Any) -> None:
        super().__init__(writer)
        self.dumps = {"ensure_ascii": False, "separators": (",", ":"), **dumps}

    def write_record(self, value: Any) -> int:
        return self.write_line(json.dumps(value, **self.dumps))

    def write_records(self, values: Iterable[Any]) -> int:
        return self.write_lines(json.dumps(v, **self.dumps) for v in values)


class CsvWriter(TextWriter):
    """CSV rows (the :mod:`csv` module's quoting, CRLF endings by default); ``header`` is written by the first
    writer of the output only: a later hop passes the same header and nothing is written twice."""

    def __init__(
        self, writer: S3Writer, header: Sequence[Any] | None = None, encoding: str = "utf-8", **fmt: Any
    ) -> None:
        super().__init__(writer, encoding)
        self.fmt = fmt
        if header is not None and writer.state.size == 0 and not writer.state.done:
            self.write_row(header)

    def write_row(self, row: Sequence[Any]) -> int:
        return self.write_rows([row])

    def write_rows(self, rows: Iterable[Sequence[Any]]) -> int:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, **self.fmt).writerows(rows)
        return self.write(buffer.getvalue())
