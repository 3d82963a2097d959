"""S3Cache against a real S3-compatible server: 304s that really carry no body."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from recurse_lambda.errors import BucketNotFoundError, ObjectNotFoundError
from recurse_lambda.s3._cache import CacheStats, S3Cache

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class Wire:
    """GetObject responses as the HTTP layer saw them: status, and body length for non-streamed answers."""

    def __init__(self, client: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.error_body_bytes: list[int] = []
        client.meta.events.register("provide-client-params.s3.GetObject", self._on_params)
        client.meta.events.register("after-call.s3.GetObject", self._on_response)

    def _on_params(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append(dict(params))

    def _on_response(self, http_response: Any, **_: Any) -> None:
        self.statuses.append(http_response.status_code)
        if http_response.status_code != 200:  # a 200's body is still unread: leave it to the cache
            self.error_body_bytes.append(len(http_response.content))


def test_cold_then_revalidated_304_then_refresh_after_a_change(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    v1, v2 = os.urandom(2 * MiB), os.urandom(3 * MiB)
    etag1 = client.put_object(Bucket=juicefs_bucket, Key="data/table.bin", Body=v1)["ETag"]
    wire = Wire(client)
    cache = S3Cache()

    assert cache.get(client, juicefs_bucket, "data/table.bin") == v1  # cold
    assert cache.stats == CacheStats(misses=1, bytes_downloaded=len(v1))

    assert cache.get(client, juicefs_bucket, "data/table.bin") == v1  # warm
    assert wire.sent[1]["IfNoneMatch"] == etag1
    assert wire.statuses == [200, 304]
    assert wire.error_body_bytes == [0]  # the 304 carried no body
    assert cache.stats.bytes_downloaded == len(v1)
    assert cache.stats.bytes_saved == len(v1)

    etag2 = client.put_object(Bucket=juicefs_bucket, Key="data/table.bin", Body=v2)["ETag"]
    assert etag2 != etag1
    assert cache.get(client, juicefs_bucket, "data/table.bin") == v2  # changed: the 200 replaces the entry
    assert wire.statuses[2] == 200
    assert cache.get(client, juicefs_bucket, "data/table.bin") == v2
    assert wire.sent[3]["IfNoneMatch"] == etag2
    assert wire.statuses[3] == 304
    assert cache.stats == CacheStats(
        hits=2, revalidations=3, misses=2, bytes_downloaded=len(v1) + len(v2), bytes_saved=len(v1) + len(v2)
    )


def test_tmp_tier_survives_a_reset_and_revalidates(
    juicefs_s3: Any, juicefs_bucket: str, tmp_path: Path
) -> None:
    client = juicefs_s3.client()
    data = os.urandom(12 * MiB)
    client.put_object(Bucket=juicefs_bucket, Key="model.bin", Body=data)
    wire = Wire(client)

    assert S3Cache(max_bytes=MiB, tmp_dir=str(tmp_path)).get(client, juicefs_bucket, "model.bin") == data
    after_reset = S3Cache(max_bytes=MiB, tmp_dir=str(tmp_path))
    assert after_reset.get(client, juicefs_bucket, "model.bin") == data
    assert wire.statuses == [200, 304]
    assert after_reset.stats == CacheStats(hits=1, revalidations=1, bytes_saved=len(data))


def test_multipart_etag_is_revalidated_as_an_opaque_string(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    upload = client.create_multipart_upload(Bucket=juicefs_bucket, Key="multi")
    done = []
    for number, part in enumerate(parts, start=1):
        etag = client.upload_part(
            Bucket=juicefs_bucket, Key="multi", UploadId=upload["UploadId"], PartNumber=number, Body=part
        )["ETag"]
        done.append({"ETag": etag, "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=juicefs_bucket, Key="multi", UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    wire = Wire(client)
    cache = S3Cache()
    assert cache.get(client, juicefs_bucket, "multi") == b"".join(parts)
    assert cache.get(client, juicefs_bucket, "multi") == b"".join(parts)
    assert wire.sent[1]["IfNoneMatch"].strip('"').endswith("-2")
    assert wire.statuses == [200, 304]


def test_missing_object_and_bucket(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    cache = S3Cache()
    with pytest.raises(ObjectNotFoundError, match=f"s3://{juicefs_bucket}/absent"):
        cache.get(client, juicefs_bucket, "absent")
    with pytest.raises(BucketNotFoundError, match="s3://no-such-bucket-here/k"):
        cache.get(client, "no-such-bucket-here", "k")


def test_gateway_answers_conditional_gets_like_s3(juicefs_s3: Any, juicefs_bucket: str) -> None:
    # The contract the cache and the pinned readers rely on: 304 without a body, 412 on a wrong IfMatch.
    client = juicefs_s3.client()
    etag = client.put_object(Bucket=juicefs_bucket, Key="k", Body=b"0123456789")["ETag"]
    assert etag.strip('"')  # --keep-etag: without it the gateway returns no ETag
    with pytest.raises(ClientError) as not_modified:
        client.get_object(Bucket=juicefs_bucket, Key="k", IfNoneMatch=etag)
    assert not_modified.value.response["Error"]["Code"] == "304"
    with pytest.raises(ClientError) as failed:
        client.get_object(Bucket=juicefs_bucket, Key="k", IfMatch='"0000"', Range="bytes=0-3")
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    ranged = client.get_object(Bucket=juicefs_bucket, Key="k", IfMatch=etag, Range="bytes=2-5")
    assert ranged["Body"].read() == b"2345"
