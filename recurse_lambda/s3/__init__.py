"""Large S3 objects: ETag-pinned sources, resumable readers with prefetch, the exactly-once writer, the listing of a
prefix, the composition of a sharded job's pieces into one output, and the warm-container cache.

Readers share one base, :class:`Reader`; :data:`FORMATS` is the table of formats (see ``s3/_formats.py``).
"""

from ..errors import DecompressionError, OutputExistsError
from ._cache import CacheStats, S3Cache
from ._compose import compose_output, piece_key
from ._csv import CsvReader
from ._formats import FORMATS, register_format
from ._helpers import S3Helpers
from ._jsonl import JsonLinesReader
from ._lines import LineReader
from ._listing import KeyBatch, KeyLister, KeyRecord
from ._objects import list_objects
from ._prefetch import ByteSource
from ._readers import Batch, Block, ChunkReader, ListBlock, MalformedRecordError, Reader
from ._source import PinnedSource
from ._writer import S3Writer
from ._writer_state import WriterState, abort_upload
from ._writer_text import CsvWriter, JsonLinesWriter, TextWriter

__all__ = [
    "FORMATS",
    "Batch",
    "Block",
    "ByteSource",
    "CacheStats",
    "ChunkReader",
    "CsvReader",
    "CsvWriter",
    "DecompressionError",
    "JsonLinesReader",
    "JsonLinesWriter",
    "KeyBatch",
    "KeyLister",
    "KeyRecord",
    "LineReader",
    "ListBlock",
    "MalformedRecordError",
    "OutputExistsError",
    "PinnedSource",
    "Reader",
    "S3Cache",
    "S3Helpers",
    "S3Writer",
    "TextWriter",
    "WriterState",
    "abort_upload",
    "compose_output",
    "list_objects",
    "piece_key",
    "register_format",
]
