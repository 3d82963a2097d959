"""The table of reader formats, and the one place every reader is built.

:data:`FORMATS` maps a format's name to its :class:`~recurse_lambda.s3.Reader` class. The name is also how a
handler asks for it: ``run.s3.reader(name, bucket, key, start, **opts)`` over one object,
``run.shard.reader(name, start, **opts)`` over a shard's ranges; the built-in formats also have a method of
that name on both (``run.s3.lines(...)``, ``run.shard.csv(...)``).

Adding a format is one file and one line: write ``s3/_myformat.py`` with a ``Reader`` subclass whose constructor
is ``(source, start=0, *, end=None, **options)`` (``end`` makes a shard: the records that begin before it) and
whose ``parse()`` yields blocks, then add it to :data:`FORMATS` below (code outside the library calls
:func:`register_format` instead). Every reader, from ``run.s3`` or from a shard, is built by :func:`open_reader`,
so a layer under all formats (decompressing the object, say) is added there, once.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._compressed import CompressionOption, plan
from ._csv import CsvReader
from ._jsonl import JsonLinesReader
from ._lines import LineReader
from ._prefetch import ByteSource
from ._readers import ChunkReader, Reader

__all__ = ["FORMATS", "open_reader", "reader_class", "register_format"]

R = TypeVar("R", bound=Reader[Any])

#: Format name → reader class. The name is the ``run.s3`` / ``run.shard`` method that builds it.
FORMATS: dict[str, type[Reader[Any]]] = {
    "chunks": ChunkReader,  # raw bytes, exactly the range asked for
    "lines": LineReader,
    "csv": CsvReader,
    "jsonl": JsonLinesReader,
}


def register_format(name: str, reader: type[Reader[Any]]) -> None:
    """Add a format from outside the library: ``run.s3.reader(name, ...)`` and ``run.shard.reader(name)`` build it."""
    if not name.isidentifier():
        raise ValueError(f"a format name must be an identifier, not {name!r}")
    if not (isinstance(reader, type) and issubclass(reader, Reader)):
        raise TypeError(f"a format's reader must be a Reader subclass, not {reader!r}")
    if FORMATS.get(name, reader) is not reader:
        raise ValueError(f"format {name!r} is already {FORMATS[name].__name__}")
    FORMATS[name] = reader


def reader_class(name: str) -> type[Reader[Any]]:
    """The reader class registered as ``name``."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown reader format {name!r}; the formats are {sorted(FORMATS)}") from None


def open_reader(
    reader: type[R],
    source: ByteSource,
    start: int | dict[str, Any] = 0,
    *,
    compression: CompressionOption = "auto",
    **opts: Any,
) -> R:
    """A ``reader`` over ``source`` from ``start``: how ``run.s3`` and shards build every reader.

    ``compression``: ``"auto"`` (gzip or zstd if the object's first bytes say so), ``"gzip"``, ``"zstd"``, or
    None (the bytes as stored). A compressed object is read decompressed: offsets count decompressed bytes, and
    ``start`` is 0 or a ``batch.cursor`` (a dict); see ``s3/_compressed.py``.
    """
    offset, kind, cursor = plan(source, start, compression, shard=opts.get("end") is not None)
    built = reader(source, offset, **opts)
    if kind is not None:
        built.decompress(kind, cursor)
    return built
