"""``run.s3``: pinned sources and readers for a handler, over the container's client and cache."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from botocore.exceptions import ClientError

from ._csv import CsvReader
from ._formats import open_reader, reader_class
from ._jsonl import JsonLinesReader
from ._lines import LineReader
from ._listing import KeyLister, make_keys
from ._readers import ChunkReader, Reader
from ._source import PinnedSource, raise_s3_error
from ._writer import S3Writer, make_writer
from ._writer_state import WriterState

__all__ = ["S3Helpers"]


class S3Helpers:
    """Opens S3 objects pinned in the chain's ``pins`` and builds readers over them.

    The client comes from ``client_getter`` on first use (nothing touches the network before), so a handler
    that never reads S3 never creates one. ``get`` goes through the warm-container ``cache`` when there is one.
    """

    def __init__(
        self,
        client_getter: Callable[[], Any],
        pins: MutableMapping[str, dict[str, Any]],
        cache: Any | None = None,
        chain_id: str = "",
    ) -> None:
        self._client_getter = client_getter
        self.chain_id = chain_id  # names the writer's spilled tails and marks its outputs
        self._client: Any = None
        self.pins = pins
        self.cache = cache

    def __repr__(self) -> str:
        return f"S3Helpers(pins={sorted(self.pins)}, cache={self.cache!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_getter()
        return self._client

    def open(self, bucket: str, key: str) -> PinnedSource:
        """The object pinned to the ETag the chain first saw (HEADed now on the chain's first open)."""
        return PinnedSource(self.client, bucket, key, pins=self.pins)

    def reader(
        self, format: str, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any
    ) -> Reader[Any]:
        """A reader of any registered format (see :data:`~recurse_lambda.s3.FORMATS`) from ``start``."""
        return open_reader(reader_class(format), self.open(bucket, key), start, **opts)

    # The built-in formats, typed; each is FORMATS[<method name>].

    def lines(self, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any) -> LineReader:
        """A :class:`LineReader` from ``start``; ``opts`` as for it (``end``, ``encoding``, ``range_size``, ...)."""
        return open_reader(LineReader, self.open(bucket, key), start, **opts)

    def csv(self, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any) -> CsvReader:
        """A :class:`CsvReader` from ``start`` (to ``end=`` for a shard); pass the saved ``header=`` when resuming."""
        return open_reader(CsvReader, self.open(bucket, key), start, **opts)

    def jsonl(self, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any) -> JsonLinesReader:
        """A :class:`JsonLinesReader` from ``start`` (to ``end=`` for a shard)."""
        return open_reader(JsonLinesReader, self.open(bucket, key), start, **opts)

    def chunks(self, bucket: str, key: str, start: int | dict[str, Any] = 0, **opts: Any) -> ChunkReader:
        """A :class:`ChunkReader` of raw bytes from ``start`` (to ``end=``)."""
        return open_reader(ChunkReader, self.open(bucket, key), start, **opts)

    def writer(self, bucket: str, key: str, state: WriterState, **opts: Any) -> S3Writer:
        """An exactly-once writer of ``s3://bucket/key`` whose position lives in ``state`` (docs/outputs.md)."""
        return make_writer(lambda: self.client, bucket, key, state, chain_id=self.chain_id, **opts)

    def keys(self, bucket: str, prefix: str = "", start_after: str = "", **opts: Any) -> KeyLister:
        """Every object under ``prefix`` in S3's order, in batches whose end is the ``start_after`` cursor."""
        return make_keys(lambda: self.client, bucket, prefix, start_after, **opts)

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object: through the warm cache (revalidated by ETag) when there is one, else one GET."""
        client = self.client
        if self.cache is not None:
            return bytes(self.cache.get(client, bucket, key))
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise_s3_error(exc, bucket, key, "get", client=client)
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()
