"""Spilled envelopes on S3: continuations larger than an asynchronous invoke payload."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from ..config import DEFAULT_SPILL_PREFIX
from ..errors import EnvelopeError, HandOffError


class S3SpillStore:
    """Stores envelope bodies under ``s3://bucket/prefix``; give the prefix a lifecycle expiry rule."""

    def __init__(self, client_getter: Callable[[], Any], bucket: str, prefix: str = DEFAULT_SPILL_PREFIX):
        self._get_client = client_getter
        self.bucket = bucket
        self.prefix = prefix

    def _s3(self) -> Any:
        return self._get_client()

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        full = f"{self.prefix}{key}"
        try:
            self._s3().put_object(Bucket=self.bucket, Key=full, Body=body, ContentType="application/json")
        except ClientError as exc:
            raise HandOffError(f"could not spill the envelope to s3://{self.bucket}/{full}: {exc}") from exc
        return {"bucket": self.bucket, "key": full}

    def get(self, ref: Mapping[str, Any]) -> bytes:
        try:
            body: bytes = self._s3().get_object(Bucket=ref["bucket"], Key=ref["key"])["Body"].read()
        except ClientError as exc:
            url = f"s3://{ref['bucket']}/{ref['key']}"
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
                # Gone for good (expired by the lifecycle rule?): the chain cannot continue from it.
                raise EnvelopeError(f"the spilled envelope body {url} is gone") from exc
            raise HandOffError(f"could not load the spilled envelope {url}: {exc}") from exc  # retried
        return body
