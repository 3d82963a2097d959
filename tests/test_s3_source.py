"""PinnedSource and S3Helpers on moto (and on a tiny fake client where S3 must answer what moto cannot)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from recurse_lambda.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3Error,
)
from recurse_lambda.s3._csv import CsvReader
from recurse_lambda.s3._helpers import S3Helpers
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._source import PinnedSource

BUCKET = "source-bucket"
KEY = "data/file.txt"
BODY = b"".join(b"line %d\n" % i for i in range(1000))


class Calls:
    """Every S3 call the client makes, with its parameters, in order."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("provide-client-params.s3.*", self._on_params)

    def _on_params(self, params: dict[str, Any], event_name: str, **_: Any) -> None:
        self.calls.append((event_name.rsplit(".", 1)[-1], dict(params)))

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


@pytest.fixture
def s3(moto_s3: Any) -> Iterator[Any]:
    moto_s3.create_bucket(Bucket=BUCKET)
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODY)
    yield moto_s3


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FakeClient:
    """Answers HEAD/GET with given errors: for S3 answers moto does not give (bare 404s, 403s)."""

    def __init__(
        self,
        head: ClientError | None = None,
        get: ClientError | None = None,
        head_bucket: ClientError | None = None,
    ) -> None:
        self._head, self._get, self._head_bucket = head, get, head_bucket
        self.calls: list[str] = []

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("head_object")
        if self._head is not None:
            raise self._head
        return {"ETag": '"abc"', "ContentLength": 10}

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("get_object")
        assert self._get is not None
        raise self._get

    def head_bucket(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("head_bucket")
        if self._head_bucket is not None:
            raise self._head_bucket
        return {}


# -- pinning -----------------------------------------------------------------------------------------------


def test_first_open_heads_once_and_records_the_pin(s3: Any) -> None:
    calls = Calls(s3)
    pins: dict[str, dict[str, Any]] = {}
    source = PinnedSource(s3, BUCKET, KEY, pins=pins)
    etag = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
    assert pins == {f"{BUCKET}/{KEY}": {"etag": etag, "version_id": None, "size": len(BODY)}}
    assert (source.bucket, source.key, source.etag, source.version_id, source.size) == (
        BUCKET,
        KEY,
        etag,
        None,
        len(BODY),
    )
    assert [name for name, _ in calls.calls] == ["HeadObject", "HeadObject"]  # ours, then the test's


def test_a_recorded_pin_is_trusted_without_a_request(s3: Any) -> None:
    pins = {f"{BUCKET}/{KEY}": {"etag": '"pinned"', "version_id": None, "size": 123}}
    calls = Calls(s3)
    source = PinnedSource(s3, BUCKET, KEY, pins=pins)
    assert (source.etag, source.size) == ('"pinned"', 123)
    assert calls.calls == []


def test_every_read_sends_if_match_and_a_range(s3: Any) -> None:
    source = PinnedSource(s3, BUCKET, KEY, pins={})
    calls = Calls(s3)
    assert source.read(5, 12) == BODY[5:12]
    assert source.read(len(BODY) - 3, len(BODY) + 100) == BODY[-3:]  # clamped to the size
    gets = calls.named("GetObject")
    assert [(g["Range"], g["IfMatch"]) for g in gets] == [
        ("bytes=5-11", source.etag),
        (f"bytes={len(BODY) - 3}-{len(BODY) - 1}", source.etag),
    ]
    assert all("VersionId" not in g for g in gets)


def test_an_empty_read_makes_no_request(s3: Any) -> None:
    source = PinnedSource(s3, BUCKET, KEY, pins={})
    calls = Calls(s3)
    assert source.read(len(BODY), len(BODY) + 10) == b""
    assert source.read(7, 7) == b""
    assert calls.calls == []


def test_a_pin_without_size_is_completed_by_a_conditional_head(s3: Any) -> None:
    etag = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
    pins: dict[str, dict[str, Any]] = {f"{BUCKET}/{KEY}": {"etag": etag, "version_id": None, "size": None}}
    calls = Calls(s3)
    source = PinnedSource(s3, BUCKET, KEY, pins=pins)
    assert calls.calls == []
    assert source.size == len(BODY)
    assert pins[f"{BUCKET}/{KEY}"]["size"] == len(BODY)
    assert calls.named("HeadObject") == [{"Bucket": BUCKET, "Key": KEY, "IfMatch": etag}]


def test_a_pin_without_size_on_a_changed_object_fails_clearly(s3: Any) -> None:
    pins: dict[str, dict[str, Any]] = {f"{BUCKET}/{KEY}": {"etag": '"old"', "version_id": None, "size": None}}
    source = PinnedSource(s3, BUCKET, KEY, pins=pins)
    with pytest.raises(ObjectChangedError) as info:
        _ = source.size
    assert info.value.expected_etag == '"old"'
    assert info.value.current_etag == s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]


# -- the object changes ------------------------------------------------------------------------------------


def test_object_overwritten_mid_read_raises_object_changed_with_both_etags(s3: Any) -> None:
    pins: dict[str, dict[str, Any]] = {}
    reader = LineReader(PinnedSource(s3, BUCKET, KEY, pins=pins), range_size=1000, encoding=None, prefetch=0)
    batches = reader.batches()
    first = next(batches)
    assert first.records[0] == b"line 0"
    old = pins[f"{BUCKET}/{KEY}"]["etag"]
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODY.replace(b"line", b"LINE"))
    new = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
    assert new != old
    with pytest.raises(ObjectChangedError) as info:
        next(batches)
    error = info.value
    assert (error.bucket, error.key, error.expected_etag, error.current_etag) == (BUCKET, KEY, old, new)
    assert f"s3://{BUCKET}/{KEY}" in str(error) and old in str(error) and new in str(error)
    assert isinstance(error.__cause__, ClientError)


def test_a_later_hop_with_the_old_pin_fails_before_reading_new_bytes(s3: Any) -> None:
    pins: dict[str, dict[str, Any]] = {}
    PinnedSource(s3, BUCKET, KEY, pins=pins)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"other content\n")
    next_hop = PinnedSource(s3, BUCKET, KEY, pins=dict(pins))
    with pytest.raises(ObjectChangedError):
        next_hop.read(0, 5)


def test_object_changed_when_the_current_etag_cannot_be_learned() -> None:
    client = FakeClient(get=client_error("PreconditionFailed", 412, "GetObject"))
    pins = {"b/k": {"etag": '"e"', "version_id": None, "size": 10}}
    source = PinnedSource(client, "b", "k", pins=pins)
    client._head = client_error("403", 403, "HeadObject")
    with pytest.raises(ObjectChangedError) as info:
        source.read(0, 5)
    assert info.value.current_etag is None
    assert "unknown" in str(info.value)


def test_versioned_bucket_pins_the_version_and_keeps_reading_it(s3: Any) -> None:
    s3.create_bucket(Bucket="versioned-bucket")
    s3.put_bucket_versioning(Bucket="versioned-bucket", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="versioned-bucket", Key=KEY, Body=b"first version\n")
    pins: dict[str, dict[str, Any]] = {}
    source = PinnedSource(s3, "versioned-bucket", KEY, pins=pins)
    assert source.version_id is not None
    s3.put_object(Bucket="versioned-bucket", Key=KEY, Body=b"second version, longer\n")
    calls = Calls(s3)
    assert source.read(0, 100) == b"first version\n"
    assert calls.named("GetObject")[0]["VersionId"] == source.version_id


# -- missing, denied ---------------------------------------------------------------------------------------


def test_missing_key(s3: Any) -> None:
    with pytest.raises(ObjectNotFoundError, match=f"s3://{BUCKET}/nope"):
        PinnedSource(s3, BUCKET, "nope", pins={})


def test_missing_bucket(s3: Any) -> None:
    with pytest.raises(BucketNotFoundError, match="s3://no-such-bucket/k"):
        PinnedSource(s3, "no-such-bucket", "k", pins={})


def test_key_deleted_after_pinning(s3: Any) -> None:
    source = PinnedSource(s3, BUCKET, KEY, pins={})
    s3.delete_object(Bucket=BUCKET, Key=KEY)
    with pytest.raises(ObjectNotFoundError) as info:
        source.read(0, 10)
    assert isinstance(info.value.__cause__, ClientError)


def test_bare_404_on_head_is_told_apart_by_a_bucket_head() -> None:
    # Real S3 answers HEAD with a bodiless 404 for a missing bucket and a missing key alike.
    missing_bucket = FakeClient(
        head=client_error("404", 404, "HeadObject"), head_bucket=client_error("404", 404, "HeadBucket")
    )
    with pytest.raises(BucketNotFoundError):
        PinnedSource(missing_bucket, "b", "k", pins={})
    missing_key = FakeClient(head=client_error("404", 404, "HeadObject"))
    with pytest.raises(ObjectNotFoundError):
        PinnedSource(missing_key, "b", "k", pins={})
    assert missing_key.calls == ["head_object", "head_bucket"]


@pytest.mark.parametrize(("code", "status"), [("403", 403), ("AccessDenied", 403)])
def test_access_denied(code: str, status: int) -> None:
    with pytest.raises(AccessDeniedError, match="s3://b/k"):
        PinnedSource(FakeClient(head=client_error(code, status, "HeadObject")), "b", "k", pins={})
    source = PinnedSource(FakeClient(get=client_error(code, status, "GetObject")), "b", "k", pins={})
    with pytest.raises(AccessDeniedError):
        source.read(0, 4)


def test_other_errors_are_s3_errors_naming_the_object() -> None:
    source = PinnedSource(FakeClient(get=client_error("SlowDown", 503, "GetObject")), "b", "k", pins={})
    with pytest.raises(S3Error, match=r"s3://b/k.*SlowDown"):
        source.read(0, 4)


# -- multipart ETags ---------------------------------------------------------------------------------------


def test_multipart_object_reads_fine(s3: Any) -> None:
    part1 = b"".join(b"row %07d\n" % i for i in range(5 * 1024 * 1024 // 12 + 1))
    part2 = b"tail row 1\ntail row 2"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")
    parts = []
    for number, body in enumerate([part1, part2], start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key="multi", UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multi", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    pins: dict[str, dict[str, Any]] = {}
    source = PinnedSource(s3, BUCKET, "multi", pins=pins)
    assert source.etag.strip('"').endswith("-2")
    lines = [
        line for batch in LineReader(source, range_size=1 << 20, encoding=None).batches() for line in batch
    ]
    assert lines == (part1 + part2).split(b"\n")


# -- S3Helpers ---------------------------------------------------------------------------------------------


class FakeCache:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, str]] = []

    def get(self, client: Any, bucket: str, key: str) -> bytes:
        self.calls.append((client, bucket, key))
        return b"from cache"


def test_helpers_create_the_client_lazily_and_once(s3: Any) -> None:
    made: list[Any] = []

    def getter() -> Any:
        made.append(s3)
        return s3

    helpers = S3Helpers(getter, {})
    assert made == []
    helpers.open(BUCKET, KEY)
    helpers.open(BUCKET, KEY)
    assert made == [s3]


def test_helpers_readers_share_the_chain_pins(s3: Any) -> None:
    pins: dict[str, dict[str, Any]] = {}
    helpers = S3Helpers(lambda: s3, pins)
    reader = helpers.lines(BUCKET, KEY, start=7, encoding=None)
    assert next(iter(reader)) == b"line 1"
    reader.close()
    assert list(pins) == [f"{BUCKET}/{KEY}"]
    s3.put_object(Bucket=BUCKET, Key="t.csv", Body=b"a,b\n1,2\n")
    assert [row for row in helpers.csv(BUCKET, "t.csv")] == [{"a": "1", "b": "2"}]
    assert isinstance(helpers.csv(BUCKET, "t.csv"), CsvReader)
    s3.put_object(Bucket=BUCKET, Key="t.jsonl", Body=b'{"x": 1}\n')
    assert list(helpers.jsonl(BUCKET, "t.jsonl")) == [{"x": 1}]
    assert b"".join(helpers.chunks(BUCKET, KEY, chunk_size=100)) == BODY
    assert sorted(pins) == [f"{BUCKET}/{KEY}", f"{BUCKET}/t.csv", f"{BUCKET}/t.jsonl"]


def test_helpers_get_goes_through_the_cache(s3: Any) -> None:
    cache = FakeCache()
    assert S3Helpers(lambda: s3, {}, cache=cache).get(BUCKET, KEY) == b"from cache"
    assert cache.calls == [(s3, BUCKET, KEY)]


def test_helpers_get_without_cache_is_a_plain_get(s3: Any) -> None:
    helpers = S3Helpers(lambda: s3, {})
    assert helpers.get(BUCKET, KEY) == BODY
    with pytest.raises(ObjectNotFoundError, match=f"s3://{BUCKET}/missing"):
        helpers.get(BUCKET, "missing")
    with pytest.raises(BucketNotFoundError):
        helpers.get("no-such-bucket", "k")


class _ShrunkClient:
    """Answers every ranged GET with 416, as a server that checks the range before IfMatch does."""

    def __init__(self, etag_now: str) -> None:
        self.etag_now = etag_now

    def get_object(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InvalidRange", "Message": "unsatisfiable"}}, "GetObject")

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"ETag": self.etag_now, "ContentLength": 3}


def test_a_416_on_a_range_within_the_pinned_size_means_the_object_changed() -> None:
    pins = {"b/k": {"etag": '"old"', "version_id": None, "size": 100}}
    source = PinnedSource(_ShrunkClient('"new"'), "b", "k", pins=pins)
    with pytest.raises(ObjectChangedError, match='pinned ETag "old", now "new"'):
        source.read(50, 60)
    same = PinnedSource(_ShrunkClient('"old"'), "b", "k", pins=pins)
    with pytest.raises(S3Error) as info:  # unchanged object: a plain error, not a change
        same.read(50, 60)
    assert not isinstance(info.value, ObjectChangedError)


class _BrokenConnection:
    def head_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def test_transport_errors_become_s3_errors_naming_the_object() -> None:
    with pytest.raises(S3Error, match="s3://b/k") as info:
        PinnedSource(_BrokenConnection(), "b", "k", pins={})
    assert not isinstance(info.value, ObjectChangedError)


class _ReplacingClient:
    """An adversarial S3: the body of a ranged GET replaces the object, then breaks off mid-read, as a server
    does when the file it streams is swapped under it. ``replace_with=None`` deletes the object instead;
    ``replace=False`` breaks the body with the object unchanged."""

    def __init__(self, *, replace: bool = True, replace_with: bytes | None = b"new") -> None:
        self.etag = '"old"'
        self.exists = True
        self.replace, self.replace_with = replace, replace_with
        self.heads: list[dict[str, Any]] = []

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.heads.append(kwargs)
        if not self.exists:
            raise client_error("404", 404, "HeadObject")
        if "IfMatch" in kwargs and kwargs["IfMatch"] != self.etag:
            raise client_error("PreconditionFailed", 412, "HeadObject")
        return {"ETag": self.etag, "ContentLength": 100}

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["IfMatch"] == self.etag  # the object is still the pinned one when the GET starts
        return {"ETag": self.etag, "Body": _BreakingBody(self)}


class _BreakingBody:
    def __init__(self, client: _ReplacingClient) -> None:
        self.client = client
        self.closed = False

    def read(self) -> bytes:
        from botocore.exceptions import ResponseStreamingError
        from urllib3.exceptions import ProtocolError

        if self.client.replace:
            if self.client.replace_with is None:
                self.client.exists = False
            else:
                self.client.etag = '"new"'
        cut = ProtocolError("Connection broken: IncompleteRead(0 bytes read, 10 more expected)")
        raise ResponseStreamingError(error=cut)

    def close(self) -> None:
        self.closed = True


def test_a_body_cut_while_the_object_is_replaced_is_an_object_change() -> None:
    client = _ReplacingClient()
    source = PinnedSource(client, "b", "k", pins={})
    with pytest.raises(ObjectChangedError) as info:
        source.read(10, 20)
    assert (info.value.expected_etag, info.value.current_etag) == ('"old"', '"new"')
    assert client.heads[1]["IfMatch"] == '"old"'  # the pin was checked, conditionally


def test_a_body_cut_while_the_object_is_deleted_is_a_missing_object() -> None:
    source = PinnedSource(_ReplacingClient(replace_with=None), "b", "k", pins={})
    with pytest.raises(ObjectNotFoundError, match="s3://b/k"):
        source.read(10, 20)


def test_a_body_cut_with_the_object_unchanged_stays_transient() -> None:
    source = PinnedSource(_ReplacingClient(replace=False), "b", "k", pins={})
    with pytest.raises(S3Error, match="s3://b/k") as info:
        source.read(10, 20)
    assert not isinstance(info.value, (ObjectChangedError, ObjectNotFoundError))


def test_a_raw_urllib3_error_from_the_body_is_checked_too() -> None:
    from urllib3.exceptions import ProtocolError

    class RawBody(_BreakingBody):
        def read(self) -> bytes:
            self.client.etag = '"new"'
            raise ProtocolError("Connection broken")

    client = _ReplacingClient()
    client.get_object = lambda **kw: {"Body": RawBody(client)}  # type: ignore[method-assign]
    with pytest.raises(ObjectChangedError):
        PinnedSource(client, "b", "k", pins={}).read(0, 5)


def test_a_get_answered_with_another_etag_is_an_object_change() -> None:
    client = _ReplacingClient()
    source = PinnedSource(client, "b", "k", pins={})
    client.etag = '"new"'
    client.get_object = lambda **kw: {"ETag": '"new"', "Body": _BreakingBody(client)}  # type: ignore[method-assign]
    with pytest.raises(ObjectChangedError, match='now "new"'):
        source.read(0, 5)
