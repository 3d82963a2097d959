"""Large S3 objects: ETag-pinned sources, resumable readers with prefetch, and the warm-container cache."""

from ._cache import CacheStats, S3Cache
from ._csv import CsvReader
from ._helpers import S3Helpers
from ._jsonl import JsonLinesReader
from ._lines import LineReader
from ._prefetch import ByteSource
from ._readers import Batch, ChunkReader, MalformedRecordError
from ._source import PinnedSource

__all__ = [
    "Batch",
    "ByteSource",
    "CacheStats",
    "ChunkReader",
    "CsvReader",
    "JsonLinesReader",
    "LineReader",
    "MalformedRecordError",
    "PinnedSource",
    "S3Cache",
    "S3Helpers",
]
