"""The S3 lookup behind :func:`recurse_lambda.keys.s3_object`: one HEAD for the ETag of ``{"bucket", "key"}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..s3._source import raise_s3_error
from . import clients

__all__ = ["head_etag"]


def head_etag(client: Any = None) -> Callable[[str, str], str]:
    """``(bucket, key) -> ETag`` by a HEAD request with ``client`` (a boto3 S3 client, a zero-argument function
    returning one, or None: the process's S3 client, created on first use). Errors are the library's S3 errors
    (:class:`~recurse_lambda.ObjectNotFoundError`, :class:`~recurse_lambda.BucketNotFoundError`, ...)."""

    def etag_of(bucket: str, key: str) -> str:
        if client is None:
            s3 = clients.client("s3")
        else:
            s3 = client if hasattr(client, "head_object") else client()
        try:
            return str(s3.head_object(Bucket=bucket, Key=key)["ETag"])
        except ClientError as exc:
            raise_s3_error(exc, bucket, key, "read the ETag of", client=s3)

    return etag_of
