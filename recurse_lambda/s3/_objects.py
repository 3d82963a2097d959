"""The objects a sharded job splits: one HEAD, or a listing of a prefix (no body is read)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ObjectNotFoundError, S3Error
from ..shards.plan import ObjectInfo, SourceRef
from ._source import raise_s3_error

__all__ = ["list_objects"]


def list_objects(client: Any, ref: SourceRef) -> list[ObjectInfo]:
    """``ref``'s object, or every object under its prefix in key order, with the ETag to pin each to."""
    try:
        if ref.key is not None:
            try:
                head = client.head_object(Bucket=ref.bucket, Key=ref.key)
            except ClientError as exc:
                raise_s3_error(exc, ref.bucket, ref.key, "inspect", client=client)
            return [
                ObjectInfo(
                    ref.bucket, ref.key, str(head["ETag"]), int(head["ContentLength"]), head.get("VersionId")
                )
            ]
        objects: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Prefix": ref.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = client.list_objects_v2(**kwargs)
            except ClientError as exc:
                raise_s3_error(exc, ref.bucket, str(ref.prefix), "list", client=client)
            objects.extend(
                ObjectInfo(ref.bucket, str(o["Key"]), str(o["ETag"]), int(o["Size"]))
                for o in page.get("Contents", ())
            )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
    except BotoCoreError as exc:  # connection trouble: transient, the split is retried
        raise S3Error(f"cannot list the objects of {ref}: {exc}") from exc
    if not objects:
        raise ObjectNotFoundError(f"no object under s3://{ref.bucket}/{ref.prefix}")
    return sorted(objects, key=lambda o: o.key)
