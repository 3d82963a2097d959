"""Large S3 objects: ETag-pinned sources, resumable readers with prefetch, and the warm-container cache.

Readers share one base, :class:`Reader`; :data:`FORMATS` is the table of formats (see ``s3/_formats.py``).
"""

from ._cache import CacheStats, S3Cache
from ._csv import CsvReader
from ._formats import FORMATS, register_format
from ._helpers import S3Helpers
from ._jsonl import JsonLinesReader
from ._lines import LineReader
from ._objects import list_objects
from ._prefetch import ByteSource
from ._readers import Batch, Block, ChunkReader, ListBlock, MalformedRecordError, Reader
from ._source import PinnedSource

__all__ = [
    "FORMATS",
    "Batch",
    "Block",
    "ByteSource",
    "CacheStats",
    "ChunkReader",
    "CsvReader",
    "JsonLinesReader",
    "LineReader",
    "ListBlock",
    "MalformedRecordError",
    "PinnedSource",
    "Reader",
    "S3Cache",
    "S3Helpers",
    "list_objects",
    "register_format",
]
