"""A resumable listing of a prefix: ``ListObjectsV2`` pages whose cursor is ``StartAfter`` (the last key seen).

``StartAfter`` is a key, valid as long as the bucket exists, so a cursor can wait hours between hops; a
continuation token is an opaque, server-side thing not meant to be kept (the ListObjectsV2 API reference:
"StartAfter is where you want Amazon S3 to start listing from. Amazon S3 starts listing after this specified
key", https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html). General purpose buckets list in
UTF-8 binary order of the keys; directory buckets (S3 Express One Zone) do not list in order, and this cursor is
not for them. Each page is at most 1,000 keys, so memory stays flat however many keys there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import S3Error
from ._source import raise_s3_error

__all__ = ["KeyBatch", "KeyLister", "KeyRecord", "make_keys"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One object: its key, size, ETag without quotes, last-modified time (ISO 8601) and storage class."""

    key: str
    size: int
    etag: str
    last_modified: str
    storage_class: str


@dataclass(frozen=True, slots=True)
class KeyBatch:
    """Consecutive objects in listing order; ``end`` (the last key) is the cursor to resume after."""

    records: list[KeyRecord]
    end: str

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(self.records)


class KeyLister:
    """Every object under ``prefix`` after the key ``start_after``, one ``ListObjectsV2`` page per batch."""

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", start_after: str = "", page_size: int = 1000
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size is 1 to 1000 (ListObjectsV2 returns at most 1,000 keys)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.start_after = start_after
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"KeyLister(s3://{self.bucket}/{self.prefix}, start_after={self.start_after!r})"

    def batches(self) -> Iterator[KeyBatch]:
        cursor = self.start_after
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": self.page_size}
            if cursor:
                kwargs["StartAfter"] = cursor
            try:
                page = self.client.list_objects_v2(**kwargs)
            except ClientError as exc:
                raise_s3_error(exc, self.bucket, self.prefix, "list", client=self.client)
            except BotoCoreError as exc:
                raise S3Error(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc
            records = [_record(o) for o in page.get("Contents", ())]
            if records:
                cursor = records[-1].key
                yield KeyBatch(records, cursor)
            if not page.get("IsTruncated") or not records:
                return

    def __iter__(self) -> Iterator[KeyRecord]:
        for batch in self.batches():
            yield from batch.records


def _record(o: dict[str, Any]) -> KeyRecord:
    modified = o.get("LastModified")
    return KeyRecord(
        key=str(o["Key"]),
        size=int(o.get("Size", 0)),
        etag=str(o.get("ETag", "")).strip('"'),
        last_modified=modified.isoformat() if isinstance(modified, datetime) else str(modified or ""),
        storage_class=str(o.get("StorageClass", "STANDARD")),
    )


def make_keys(
    client_getter: Callable[[], Any], bucket: str, prefix: str = "", start_after: str = "", **opts: Any
) -> KeyLister:
    """The lister ``run.s3.keys`` returns (``opts``: ``page_size``)."""
    return KeyLister(client_getter(), bucket, prefix, start_after, **opts)
