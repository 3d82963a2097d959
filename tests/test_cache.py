"""S3Cache on moto (and on a small fake S3 where a failure must be injected)."""

from __future__ import annotations

import dataclasses
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ResponseStreamingError
from moto import mock_aws

from recurse_lambda.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigurationError,
    ObjectNotFoundError,
    S3Error,
)
from recurse_lambda.s3._cache import CacheStats, S3Cache

BUCKET = "cache-bucket"


# -- helpers -----------------------------------------------------------------------------------------------


class Recorder:
    """Every GetObject the client sends: its parameters and the HTTP status that came back."""

    def __init__(self, client: Any) -> None:
        self.params: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        client.meta.events.register("provide-client-params.s3.GetObject", self._on_params)
        client.meta.events.register("after-call.s3.GetObject", self._on_response)

    def _on_params(self, params: dict[str, Any], **_: Any) -> None:
        self.params.append(dict(params))

    def _on_response(self, http_response: Any, **_: Any) -> None:
        self.statuses.append(http_response.status_code)

    @property
    def conditional(self) -> list[bool]:
        return ["IfNoneMatch" in p for p in self.params]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeBody:
    """A response body; raises mid-stream after ``fail_after`` bytes, like a reset connection."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._buf = io.BytesIO(data)
        self._fail_after = fail_after
        self.reads: list[int | None] = []

    def read(self, amt: int | None = None) -> bytes:
        self.reads.append(amt)
        if self._fail_after is not None and self._buf.tell() >= self._fail_after:
            raise ResponseStreamingError(error="connection reset by peer")
        return self._buf.read(amt if amt is not None else -1)

    def close(self) -> None:
        pass


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


class FakeS3:
    """Just enough GetObject for the cache: ETags, IfNoneMatch, errors, and bodies that can fail."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str | None, bytes]] = {}
        self.fail_after: int | None = None
        self.error: ClientError | None = None
        self.calls: list[dict[str, Any]] = []
        self.bodies: list[FakeBody] = []

    def put(self, key: str, data: bytes, etag: str | None = "auto") -> None:
        if etag == "auto":
            etag = f'"{abs(hash(data)):x}-{len(self.calls)}"'
        self.objects[key] = (etag, data)

    def get_object(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        if params["Key"] not in self.objects:
            raise _client_error("NoSuchKey", 404)
        etag, data = self.objects[params["Key"]]
        if etag is not None and params.get("IfNoneMatch") == etag:
            raise _client_error("304", 304)
        body = FakeBody(data, self.fail_after)
        self.bodies.append(body)
        response: dict[str, Any] = {"ContentLength": len(data), "Body": body}
        if etag is not None:
            response["ETag"] = etag
        return response


def entry_files(tmp_dir: Path) -> list[Path]:
    return sorted(p for p in tmp_dir.iterdir() if p.name.startswith("rlc-"))


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put(client: Any, key: str, data: bytes) -> str:
    etag: str = client.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
    return etag


# -- memory tier -------------------------------------------------------------------------------------------


def test_miss_then_revalidated_hit_sends_if_none_match_and_gets_no_body(s3: Any) -> None:
    etag = put(s3, "table.json", b"x" * 1000)
    calls = Recorder(s3)
    cache = S3Cache()

    assert cache.get(s3, BUCKET, "table.json") == b"x" * 1000
    assert cache.stats == CacheStats(misses=1, bytes_downloaded=1000)

    assert cache.get(s3, BUCKET, "table.json") == b"x" * 1000
    assert calls.params[1]["IfNoneMatch"] == etag
    assert calls.statuses == [200, 304]
    assert cache.stats == CacheStats(
        hits=1, revalidations=1, misses=1, bytes_downloaded=1000, bytes_saved=1000
    )


def test_changed_object_replaces_the_entry(s3: Any) -> None:
    put(s3, "k", b"version one")
    calls = Recorder(s3)
    cache = S3Cache()
    assert cache.get(s3, BUCKET, "k") == b"version one"

    etag2 = put(s3, "k", b"version two, longer")
    assert cache.get(s3, BUCKET, "k") == b"version two, longer"
    assert calls.statuses == [200, 200]

    assert cache.get(s3, BUCKET, "k") == b"version two, longer"
    assert calls.params[2]["IfNoneMatch"] == etag2
    assert calls.statuses[2] == 304
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.revalidations) == (1, 2, 2)
    assert cache.memory_bytes == len(b"version two, longer")


def test_memory_is_bounded_by_bytes_and_evicts_least_recently_used(s3: Any) -> None:
    for name in "abc":
        put(s3, name, name.encode() * 100)
    calls = Recorder(s3)
    cache = S3Cache(max_bytes=250)

    cache.get(s3, BUCKET, "a")
    cache.get(s3, BUCKET, "b")
    cache.get(s3, BUCKET, "a")  # a is now the most recently used
    cache.get(s3, BUCKET, "c")  # evicts b, not a
    assert cache.memory_bytes == 200

    calls.params.clear()
    assert cache.get(s3, BUCKET, "a") == b"a" * 100
    assert cache.get(s3, BUCKET, "b") == b"b" * 100
    assert calls.conditional == [True, False]  # a was revalidated, b downloaded again


def test_object_larger_than_memory_without_tmp_is_returned_uncached(s3: Any) -> None:
    put(s3, "big", b"z" * 500)
    calls = Recorder(s3)
    cache = S3Cache(max_bytes=100)
    assert cache.get(s3, BUCKET, "big") == b"z" * 500
    assert cache.get(s3, BUCKET, "big") == b"z" * 500
    assert calls.conditional == [False, False]
    assert cache.memory_bytes == 0
    assert cache.stats.misses == 2


def test_version_ids_are_separate_entries(s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=BUCKET, Key="k", Body=b"one")
    v2 = s3.put_object(Bucket=BUCKET, Key="k", Body=b"two")
    calls = Recorder(s3)
    cache = S3Cache()

    assert cache.get(s3, BUCKET, "k", version_id=v1["VersionId"]) == b"one"
    assert cache.get(s3, BUCKET, "k", version_id=v2["VersionId"]) == b"two"
    assert cache.get(s3, BUCKET, "k") == b"two"
    assert cache.stats.misses == 3

    assert cache.get(s3, BUCKET, "k", version_id=v1["VersionId"]) == b"one"
    assert calls.params[3]["VersionId"] == v1["VersionId"]
    assert calls.params[3]["IfNoneMatch"] == v1["ETag"]
    assert calls.statuses[3] == 304


def test_fresh_window_skips_revalidation_using_the_injected_clock(s3: Any) -> None:
    put(s3, "cfg", b"settings")
    calls = Recorder(s3)
    clock = FakeClock()
    cache = S3Cache(fresh_for=10.0, clock=clock)

    cache.get(s3, BUCKET, "cfg")
    clock.sleep(9.0)
    assert cache.get(s3, BUCKET, "cfg") == b"settings"
    assert len(calls.params) == 1  # fresh: no request at all
    assert cache.stats.hits == 1 and cache.stats.bytes_saved == len(b"settings")

    clock.sleep(2.0)  # 11 s after the download: stale
    assert cache.get(s3, BUCKET, "cfg") == b"settings"
    assert calls.conditional == [False, True]

    clock.sleep(5.0)  # the 304 restarted the window
    cache.get(s3, BUCKET, "cfg")
    assert len(calls.params) == 2


def test_missing_object_and_bucket_map_to_library_errors(s3: Any) -> None:
    cache = S3Cache()
    with pytest.raises(ObjectNotFoundError, match=f"s3://{BUCKET}/nope") as info:
        cache.get(s3, BUCKET, "nope")
    assert isinstance(info.value.__cause__, ClientError)
    with pytest.raises(BucketNotFoundError, match="s3://no-such-bucket/k"):
        cache.get(s3, "no-such-bucket", "k")


def test_object_deleted_after_caching_raises_and_drops_the_entry(s3: Any) -> None:
    put(s3, "k", b"data")
    calls = Recorder(s3)
    cache = S3Cache()
    cache.get(s3, BUCKET, "k")
    s3.delete_object(Bucket=BUCKET, Key="k")
    with pytest.raises(ObjectNotFoundError, match=f"s3://{BUCKET}/k"):
        cache.get(s3, BUCKET, "k")
    assert cache.memory_bytes == 0
    put(s3, "k", b"data")
    cache.get(s3, BUCKET, "k")
    assert calls.conditional == [False, True, False]


def test_access_denied_maps_to_access_denied_error() -> None:
    fake = FakeS3()
    fake.error = _client_error("AccessDenied", 403)
    with pytest.raises(AccessDeniedError, match="s3://b/k"):
        S3Cache().get(fake, "b", "k")


def test_object_without_etag_is_never_cached() -> None:
    fake = FakeS3()
    fake.put("k", b"no etag here", etag=None)
    cache = S3Cache()
    assert cache.get(fake, "b", "k") == b"no etag here"
    assert cache.get(fake, "b", "k") == b"no etag here"
    assert ["IfNoneMatch" in c for c in fake.calls] == [False, False]
    assert cache.memory_bytes == 0


def test_etags_are_opaque_strings() -> None:
    fake = FakeS3()
    fake.put("k", b"kms", etag='"not-an-md5/with+odd=chars-3"')
    cache = S3Cache()
    cache.get(fake, "b", "k")
    cache.get(fake, "b", "k")
    assert fake.calls[1]["IfNoneMatch"] == '"not-an-md5/with+odd=chars-3"'
    assert cache.stats.hits == 1


def test_stats_is_a_frozen_snapshot(s3: Any) -> None:
    put(s3, "k", b"abc")
    cache = S3Cache()
    before = cache.stats
    cache.get(s3, BUCKET, "k")
    assert before == CacheStats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.hits = 5  # type: ignore[misc]


def test_clear_drops_both_tiers_and_counters(s3: Any, tmp_path: Path) -> None:
    put(s3, "small", b"s" * 10)
    put(s3, "big", b"b" * 300)
    cache = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    cache.get(s3, BUCKET, "small")
    cache.get(s3, BUCKET, "big")
    assert cache.memory_bytes == 10 and len(entry_files(tmp_path)) == 1
    cache.clear()
    assert cache.stats == CacheStats()
    assert cache.memory_bytes == 0 and cache.tmp_bytes == 0
    assert entry_files(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs", [{"max_bytes": -1}, {"tmp_max_bytes": -1}, {"fresh_for": -0.5}], ids=lambda k: next(iter(k))
)
def test_bad_configuration_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        S3Cache(**kwargs)


# -- tmp tier ----------------------------------------------------------------------------------------------


def test_large_object_goes_to_tmp_and_survives_a_runtime_reset(s3: Any, tmp_path: Path) -> None:
    etag = put(s3, "model.bin", os.urandom(5000))
    data = s3.get_object(Bucket=BUCKET, Key="model.bin")["Body"].read()
    calls = Recorder(s3)
    first = S3Cache(max_bytes=1000, tmp_dir=str(tmp_path))
    assert first.get(s3, BUCKET, "model.bin") == data
    assert first.memory_bytes == 0
    assert len(entry_files(tmp_path)) == 1

    # A runtime reset: memory is gone, /tmp is not.
    second = S3Cache(max_bytes=1000, tmp_dir=str(tmp_path))
    assert second.get(s3, BUCKET, "model.bin") == data
    assert calls.params[1]["IfNoneMatch"] == etag
    assert calls.statuses == [200, 304]
    assert second.stats == CacheStats(hits=1, revalidations=1, bytes_saved=5000)


def test_entry_evicted_from_memory_spills_to_tmp(s3: Any, tmp_path: Path) -> None:
    put(s3, "a", b"a" * 100)
    put(s3, "b", b"b" * 100)
    calls = Recorder(s3)
    cache = S3Cache(max_bytes=150, tmp_dir=str(tmp_path))
    cache.get(s3, BUCKET, "a")
    assert entry_files(tmp_path) == []  # small objects live in memory only...
    cache.get(s3, BUCKET, "b")
    assert len(entry_files(tmp_path)) == 1  # ...until evicted

    reset = S3Cache(max_bytes=150, tmp_dir=str(tmp_path))
    assert reset.get(s3, BUCKET, "a") == b"a" * 100
    assert calls.conditional == [False, False, True]
    assert calls.statuses[-1] == 304


def test_tmp_hit_that_fits_is_promoted_to_memory(s3: Any, tmp_path: Path) -> None:
    put(s3, "a", b"a" * 100)
    put(s3, "b", b"b" * 100)
    cache = S3Cache(max_bytes=150, tmp_dir=str(tmp_path))
    cache.get(s3, BUCKET, "a")
    cache.get(s3, BUCKET, "b")  # a spills
    assert cache.get(s3, BUCKET, "a") == b"a" * 100  # served from tmp, promoted (b spills)
    assert cache.memory_bytes == 100
    for f in entry_files(tmp_path):
        f.unlink()  # from here on, a can only be served from memory
    assert cache.get(s3, BUCKET, "a") == b"a" * 100
    assert cache.stats.hits == 2 and cache.stats.misses == 2


def test_tmp_tier_is_bounded_and_evicts_the_oldest(s3: Any, tmp_path: Path) -> None:
    for name in "abc":
        put(s3, name, name.encode() * 1000)
    cache = S3Cache(max_bytes=10, tmp_dir=str(tmp_path), tmp_max_bytes=2500)
    for name in "abc":
        cache.get(s3, BUCKET, name)
    assert len(entry_files(tmp_path)) == 2
    assert cache.tmp_bytes == sum(f.stat().st_size for f in entry_files(tmp_path)) <= 2500
    calls = Recorder(s3)
    cache.get(s3, BUCKET, "c")
    cache.get(s3, BUCKET, "a")  # the oldest, evicted
    assert calls.conditional == [True, False]


def test_a_new_cache_respects_a_smaller_tmp_bound(s3: Any, tmp_path: Path) -> None:
    for name in "abc":
        put(s3, name, name.encode() * 1000)
    big = S3Cache(max_bytes=10, tmp_dir=str(tmp_path), tmp_max_bytes=10_000)
    for name in "abc":
        big.get(s3, BUCKET, name)
    assert len(entry_files(tmp_path)) == 3
    small = S3Cache(max_bytes=10, tmp_dir=str(tmp_path), tmp_max_bytes=2500)
    assert len(entry_files(tmp_path)) == 2
    assert small.tmp_bytes <= 2500


def test_object_larger_than_the_tmp_bound_is_not_cached(s3: Any, tmp_path: Path) -> None:
    put(s3, "huge", b"h" * 5000)
    cache = S3Cache(max_bytes=10, tmp_dir=str(tmp_path), tmp_max_bytes=4000)
    assert cache.get(s3, BUCKET, "huge") == b"h" * 5000
    assert entry_files(tmp_path) == [] and cache.tmp_bytes == 0


@pytest.mark.parametrize("damage", ["truncate_body", "truncate_header", "empty", "garbage", "extra_bytes"])
def test_torn_or_unreadable_tmp_file_is_a_miss(s3: Any, tmp_path: Path, damage: str) -> None:
    data = os.urandom(4000)
    put(s3, "k", data)
    S3Cache(max_bytes=100, tmp_dir=str(tmp_path)).get(s3, BUCKET, "k")
    (path,) = entry_files(tmp_path)
    good_size = path.stat().st_size
    raw = path.read_bytes()
    damaged = {
        "truncate_body": raw[:-1000],
        "truncate_header": raw[:30],
        "empty": b"",
        "garbage": os.urandom(len(raw)),
        "extra_bytes": raw + b"junk",
    }[damage]
    path.write_bytes(damaged)

    calls = Recorder(s3)
    cache = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    assert cache.get(s3, BUCKET, "k") == data
    assert calls.conditional == [False]  # never trusted the damaged copy's ETag
    assert cache.stats.misses == 1
    assert path.stat().st_size == good_size  # rewritten whole
    assert cache.get(s3, BUCKET, "k") == data
    assert calls.statuses == [200, 304]


def test_file_for_another_object_is_a_miss(s3: Any, tmp_path: Path) -> None:
    put(s3, "one", b"1" * 500)
    put(s3, "two", b"2" * 500)
    cache = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    cache.get(s3, BUCKET, "one")
    (one,) = entry_files(tmp_path)
    cache.get(s3, BUCKET, "two")
    (two,) = [f for f in entry_files(tmp_path) if f != one]
    two.write_bytes(one.read_bytes())  # a name collision, or a file copied in by hand
    calls = Recorder(s3)
    reset = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    assert reset.get(s3, BUCKET, "two") == b"2" * 500
    assert calls.conditional == [False]


def test_large_bodies_stream_to_tmp_in_chunks(tmp_path: Path) -> None:
    fake = FakeS3()
    data = os.urandom(9 * 1024 * 1024)
    fake.put("k", data)
    cache = S3Cache(max_bytes=1024, tmp_dir=str(tmp_path))
    assert cache.get(fake, "b", "k") == data
    (body,) = fake.bodies
    assert None not in body.reads and len(body.reads) >= 3  # never one read of the whole body
    assert cache.stats.bytes_downloaded == len(data)


def test_failed_download_leaves_no_file(tmp_path: Path) -> None:
    fake = FakeS3()
    fake.put("k", os.urandom(50_000))
    fake.fail_after = 0  # the first read fails: nothing but the header could have been written
    cache = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    with pytest.raises(S3Error, match="s3://b/k") as info:
        cache.get(fake, "b", "k")
    assert isinstance(info.value.__cause__, ResponseStreamingError)
    assert list(tmp_path.iterdir()) == []
    assert cache.tmp_bytes == 0


def test_failed_download_mid_stream_leaves_the_old_entry_intact(tmp_path: Path) -> None:
    fake = FakeS3()
    old = os.urandom(10 * 1024 * 1024)
    fake.put("k", old)
    old_etag = fake.objects["k"][0]
    S3Cache(max_bytes=100, tmp_dir=str(tmp_path)).get(fake, "b", "k")
    (path,) = entry_files(tmp_path)
    before = path.read_bytes()

    fake.put("k", os.urandom(10 * 1024 * 1024))  # changed; its download dies after 5 MiB
    fake.fail_after = 5 * 1024 * 1024
    cache = S3Cache(max_bytes=100, tmp_dir=str(tmp_path))
    with pytest.raises(S3Error):
        cache.get(fake, "b", "k")
    assert list(tmp_path.iterdir()) == [path]  # no partial file beside it
    assert path.read_bytes() == before  # and the old one untouched

    fake.objects["k"] = (old_etag, old)  # the old version is current again: a 304 serves the old file
    fake.fail_after = None
    assert S3Cache(max_bytes=100, tmp_dir=str(tmp_path)).get(fake, "b", "k") == old
    assert fake.calls[-1]["IfNoneMatch"] == old_etag


def test_leftover_part_files_are_removed_and_other_files_kept(tmp_path: Path) -> None:
    # What a crash between the write and the os.replace leaves behind; tmp_dir may be /tmp itself.
    (tmp_path / ".rlc-0123.obj.deadbeef.part").write_bytes(b"half an object")
    (tmp_path / "someone-elses-file.txt").write_bytes(b"keep me")
    S3Cache(tmp_dir=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["someone-elses-file.txt"]


def test_spill_does_not_rewrite_an_entry_already_on_disk(s3: Any, tmp_path: Path) -> None:
    put(s3, "a", b"a" * 100)
    put(s3, "b", b"b" * 100)
    cache = S3Cache(max_bytes=150, tmp_dir=str(tmp_path))
    cache.get(s3, BUCKET, "a")
    cache.get(s3, BUCKET, "b")  # a spills
    (a_file,) = entry_files(tmp_path)
    inode = a_file.stat().st_ino
    cache.get(s3, BUCKET, "a")  # promoted from disk; b spills
    cache.get(s3, BUCKET, "b")  # promoted; a evicted again, but its file is current
    assert a_file.stat().st_ino == inode


def test_concurrent_gets_from_two_threads_are_consistent(tmp_path: Path) -> None:
    fake = FakeS3()
    blobs = {f"k{i}": os.urandom(200 + 37 * i) for i in range(12)}
    for key, data in blobs.items():
        fake.put(key, data)
    cache = S3Cache(max_bytes=1500, tmp_dir=str(tmp_path), tmp_max_bytes=3000)
    errors: list[BaseException] = []

    def worker(order: list[str]) -> None:
        try:
            for _ in range(20):
                for key in order:
                    assert cache.get(fake, "b", key) == blobs[key]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    keys = list(blobs)
    threads = [threading.Thread(target=worker, args=(o,)) for o in (keys, keys[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.memory_bytes <= 1500 and cache.tmp_bytes <= 3000
    assert cache.tmp_bytes == sum(f.stat().st_size for f in entry_files(tmp_path))


def test_unusable_tmp_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="tmp_dir"):
        S3Cache(tmp_dir=str(blocker / "sub"))
