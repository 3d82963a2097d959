"""The warm-container S3 cache: bytes reused across hops, revalidated by ETag.

Two tiers. Memory holds small objects (LRU, bounded by bytes). An optional tier on local disk (``/tmp`` on
Lambda, see :mod:`._cache_disk`) holds objects too large for memory and those memory evicted; it survives a
runtime reset, which clears memory but keeps ``/tmp``. Every hit is revalidated with ``IfNoneMatch=etag``: S3
answers 304 without a body, so a warm hop pays one round trip instead of a download. ``fresh_for`` can skip
even that for a short window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError
from cachetools import LRUCache

from ..core.clock import Clock, SystemClock
from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigurationError,
    ObjectNotFoundError,
    S3Error,
)
from ._cache_disk import DiskTier, Ident, read_body

__all__ = ["CacheStats", "S3Cache"]

MiB = 1024 * 1024

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden", "403"})


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made (or cleared).

    ``hits``: served from cache (a 304 or a fresh entry). ``misses``: the body was downloaded (no entry, or
    the entry was stale). ``revalidations``: conditional GETs sent. ``bytes_saved``: bytes served from cache.
    """

    hits: int = 0
    revalidations: int = 0
    misses: int = 0
    bytes_downloaded: int = 0
    bytes_saved: int = 0


@dataclass
class _Entry:
    etag: str
    data: bytes
    validated_at: float


@dataclass
class _Candidate:
    """A cached entry found by a lookup; ``data`` for memory, ``file`` (positioned at the body) for disk."""

    etag: str
    size: int
    validated_at: float | None
    data: bytes | None = None
    file: IO[bytes] | None = None


class _MemoryTier(LRUCache[Ident, _Entry]):
    """An LRU bounded by body bytes that remembers what it evicted, to spill it to disk outside the lock."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, getsizeof=_entry_size)
        self.evicted: list[tuple[Ident, _Entry]] = []

    def popitem(self) -> tuple[Ident, _Entry]:
        item = super().popitem()
        self.evicted.append(item)
        return item


def _entry_size(entry: _Entry) -> int:
    return len(entry.data)


class S3Cache:
    """A byte-bounded cache of whole S3 objects for a warm container, revalidated by ETag.

    ``get`` returns the object's bytes. Objects larger than ``max_bytes`` go to ``tmp_dir`` when it is set
    (and they fit in ``tmp_max_bytes``), otherwise they are returned uncached. Objects without an ETag are
    never cached. Safe to share with a prefetch thread; one cache per ``tmp_dir`` is assumed for its bound.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 256 * MiB,
        tmp_dir: str | None = None,
        tmp_max_bytes: int = 512 * MiB,
        fresh_for: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        if max_bytes < 0 or tmp_max_bytes < 0:
            raise ConfigurationError("S3Cache: max_bytes and tmp_max_bytes must be >= 0")
        if fresh_for < 0:
            raise ConfigurationError("S3Cache: fresh_for must be >= 0 seconds")
        self._max_bytes = max_bytes
        self._fresh_for = fresh_for
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()  # guards both tiers' indexes and the counters
        self._mem = _MemoryTier(max_bytes)
        self._hits = self._revalidations = self._misses = 0
        self._bytes_downloaded = self._bytes_saved = 0
        self._disk: DiskTier | None = None
        if tmp_dir is not None:
            try:
                self._disk = DiskTier(tmp_dir, tmp_max_bytes, self._lock)
            except OSError as exc:
                raise ConfigurationError(f"S3Cache: tmp_dir {tmp_dir!r} is not usable: {exc}") from exc

    # -- public -----------------------------------------------------------------------------------------

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                revalidations=self._revalidations,
                misses=self._misses,
                bytes_downloaded=self._bytes_downloaded,
                bytes_saved=self._bytes_saved,
            )

    @property
    def memory_bytes(self) -> int:
        """Body bytes held in memory."""
        with self._lock:
            return int(self._mem.currsize)

    @property
    def tmp_bytes(self) -> int:
        """Bytes of entry files in ``tmp_dir`` known to this cache."""
        return self._disk.used if self._disk is not None else 0

    def clear(self) -> None:
        """Drop every entry, in memory and on disk, and reset the counters."""
        with self._lock:
            self._mem.clear()
            self._mem.evicted.clear()
            self._hits = self._revalidations = self._misses = 0
            self._bytes_downloaded = self._bytes_saved = 0
        if self._disk is not None:
            self._disk.clear()

    def get(self, client: Any, bucket: str, key: str, *, version_id: str | None = None) -> bytes:
        """The object's bytes: from cache after a 304 (or within ``fresh_for``), else downloaded."""
        ident = Ident(bucket, key, version_id)
        found = self._lookup(ident)
        if found is not None:
            try:
                served = self._serve_cached(client, ident, found)
            finally:
                if found.file is not None:
                    found.file.close()
            if isinstance(served, bytes):
                return served
            if served is not None:  # a 200 to the conditional GET: the object changed
                return self._store(client, ident, served)
        return self._store(client, ident, self._fetch(client, ident))

    # -- the hit path -----------------------------------------------------------------------------------

    def _lookup(self, ident: Ident) -> _Candidate | None:
        with self._lock:
            entry = self._mem.get(ident)
            if entry is not None:
                return _Candidate(entry.etag, len(entry.data), entry.validated_at, data=entry.data)
        if self._disk is None:
            return None
        opened = self._disk.lookup(ident)
        if opened is None:
            return None
        fh, etag, size, validated_at = opened
        return _Candidate(etag, size, validated_at, file=fh)

    def _serve_cached(self, client: Any, ident: Ident, found: _Candidate) -> bytes | dict[str, Any] | None:
        """Cached bytes, or the 200 response that replaces them, or None when the disk copy proved torn."""
        validated_at = found.validated_at
        now = self._clock.now()
        if self._fresh_for <= 0 or validated_at is None or now - validated_at >= self._fresh_for:
            response = self._request(client, ident, found.etag)
            if response is not None:
                return response
            validated_at = self._clock.now()  # a 304 restarts the freshness window; a fresh hit does not
        if found.data is not None:
            data: bytes | None = found.data
        else:
            assert found.file is not None
            data = read_body(found.file, found.size)
        if data is None:
            self._forget_disk(ident)
            return None
        with self._lock:
            self._hits += 1
            self._bytes_saved += len(data)
            if found.data is not None:
                entry = self._mem.get(ident)
                if entry is not None and entry.etag == found.etag:
                    entry.validated_at = validated_at
        if found.file is not None and self._disk is not None:
            self._disk.touch(ident, validated_at)
        if found.file is not None and len(data) <= self._max_bytes:
            # Promote a disk hit that fits in memory; its file stays, so it still survives a reset.
            self._put_memory(ident, _Entry(found.etag, data, validated_at))
        return data

    # -- the download path ------------------------------------------------------------------------------

    def _request(self, client: Any, ident: Ident, if_none_match: str | None) -> dict[str, Any] | None:
        """GetObject; None when a conditional GET answers 304."""
        params: dict[str, Any] = {"Bucket": ident.bucket, "Key": ident.key}
        if ident.version_id is not None:
            params["VersionId"] = ident.version_id
        if if_none_match is not None:
            params["IfNoneMatch"] = if_none_match
            with self._lock:
                self._revalidations += 1
        try:
            response: dict[str, Any] = client.get_object(**params)
        except ClientError as exc:
            if if_none_match is not None and _is_not_modified(exc):
                return None
            if _error_code(exc) in _NOT_FOUND:
                self._drop(ident)
            raise _map_client_error(exc, ident) from exc
        except BotoCoreError as exc:
            raise S3Error(f"GetObject {ident.url()} failed: {exc}") from exc
        return response

    def _fetch(self, client: Any, ident: Ident) -> dict[str, Any]:
        response = self._request(client, ident, None)
        assert response is not None  # only a conditional GET can answer 304
        return response

    def _store(self, client: Any, ident: Ident, response: dict[str, Any]) -> bytes:
        """Read a 200 response's body and cache it in the tier it fits."""
        with self._lock:
            self._misses += 1
        etag: str | None = response.get("ETag")
        length: int | None = response.get("ContentLength")
        disk = self._disk
        if (
            etag is not None
            and length is not None
            and length > self._max_bytes
            and disk is not None
            and disk.fits(ident, etag, length)
        ):
            self._drop_memory(ident)
            try:
                return disk.download(
                    ident, response["Body"], etag, length, received=self._downloaded, now=self._clock.now
                )
            except OSError:
                # The local disk failed (full?), not S3: fetch again without caching.
                return self._read_all(ident, self._fetch(client, ident))
        data = self._read_all(ident, response)
        now = self._clock.now()
        if etag is None:
            self._drop(ident)  # no ETag, nothing to revalidate with
        elif len(data) <= self._max_bytes:
            self._put_memory(ident, _Entry(etag, data, now))
            self._forget_disk(ident)  # a stale disk copy would only waste space
        elif disk is not None and disk.fits(ident, etag, len(data)):
            self._drop_memory(ident)
            disk.write(ident, etag, data, now)
        else:
            self._drop(ident)
        return data

    def _downloaded(self, nbytes: int) -> None:
        with self._lock:
            self._bytes_downloaded += nbytes

    def _read_all(self, ident: Ident, response: dict[str, Any]) -> bytes:
        body = response["Body"]
        try:
            data: bytes = body.read()
        except (BotoCoreError, OSError) as exc:
            raise S3Error(f"reading {ident.url()} failed: {exc}") from exc
        finally:
            body.close()
        length = response.get("ContentLength")
        if length is not None and len(data) != length:
            raise S3Error(f"reading {ident.url()} failed: got {len(data)} of {length} bytes")
        self._downloaded(len(data))
        return data

    # -- tiers ------------------------------------------------------------------------------------------

    def _put_memory(self, ident: Ident, entry: _Entry) -> None:
        with self._lock:
            # Delete first, so growing an entry cannot evict (and spill) its own stale value.
            self._mem.pop(ident, None)
            self._mem[ident] = entry
            evicted, self._mem.evicted = self._mem.evicted, []
        disk = self._disk
        if disk is None:
            return
        for old_ident, old in evicted:
            on_disk = disk.holds(old_ident, old.etag, old.validated_at)
            if not on_disk and disk.fits(old_ident, old.etag, len(old.data)):
                disk.write(old_ident, old.etag, old.data, old.validated_at)

    def _forget_disk(self, ident: Ident) -> None:
        if self._disk is not None:
            self._disk.forget(ident)

    def _drop_memory(self, ident: Ident) -> None:
        with self._lock:
            self._mem.pop(ident, None)

    def _drop(self, ident: Ident) -> None:
        self._drop_memory(ident)
        self._forget_disk(ident)


# -- helpers -----------------------------------------------------------------------------------------------


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_modified(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) in {"304", "NotModified"} or status == 304


def _map_client_error(exc: ClientError, ident: Ident) -> S3Error:
    code = _error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    if code in _NO_BUCKET:
        return BucketNotFoundError(f"bucket {ident.bucket!r} does not exist (reading {ident.url()})")
    if code in _NOT_FOUND:
        return ObjectNotFoundError(f"{ident.url()} does not exist")
    if code in _DENIED:
        return AccessDeniedError(f"access denied to {ident.url()}: {message}")
    return S3Error(f"GetObject {ident.url()} failed ({code}): {message}")
