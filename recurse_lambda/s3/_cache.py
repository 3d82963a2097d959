"""The warm-container S3 cache: bytes reused across hops, revalidated by ETag.

Two tiers. Memory holds small objects (LRU, bounded by bytes). An optional tier on local disk (``/tmp`` on
Lambda) holds objects too large for memory and those memory evicted; it survives a runtime reset, which clears
memory but keeps ``/tmp``. Every hit is revalidated with ``IfNoneMatch=etag``: S3 answers 304 without a body,
so a warm hop pays one round trip instead of a download. ``fresh_for`` can skip even that for a short window.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from cachetools import LRUCache

from .._clock import Clock, SystemClock
from .._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigurationError,
    ObjectNotFoundError,
    S3Error,
)

__all__ = ["CacheStats", "S3Cache"]

MiB = 1024 * 1024

# Disk-tier file layout: MAGIC, one JSON header line, then the body. One file per entry, so one os.replace
# publishes the ETag and the bytes together (a sidecar would need two renames and could pair an old ETag
# with new bytes after a crash between them).
_MAGIC = b"recurse-lambda-cache 1\n"
_PREFIX = "rlc-"
_SUFFIX = ".obj"
_TMP_SUFFIX = ".part"
_MAX_HEADER = 64 * 1024
_CHUNK = 4 * MiB

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


class _Ident(NamedTuple):
    bucket: str
    key: str
    version_id: str | None

    def url(self) -> str:
        base = f"s3://{self.bucket}/{self.key}"
        return base if self.version_id is None else f"{base}?versionId={self.version_id}"


@dataclass
class _Entry:
    etag: str
    data: bytes
    validated_at: float


@dataclass
class _DiskInfo:
    size: int  # file size, header included: what the disk bound counts
    etag: str | None  # known once written or read by this instance
    validated_at: float | None  # None: never validated by this instance, so always revalidate


@dataclass
class _Candidate:
    """A cached entry found by a lookup; ``data`` for memory, ``file`` (positioned at the body) for disk."""

    etag: str
    size: int
    validated_at: float | None
    data: bytes | None = None
    file: IO[bytes] | None = None


class _MemoryTier(LRUCache[_Ident, _Entry]):
    """An LRU bounded by body bytes that remembers what it evicted, to spill it to disk outside the lock."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, getsizeof=_entry_size)
        self.evicted: list[tuple[_Ident, _Entry]] = []

    def popitem(self) -> tuple[_Ident, _Entry]:
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
        self._tmp_dir = tmp_dir
        self._tmp_max_bytes = tmp_max_bytes
        self._fresh_for = fresh_for
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._mem = _MemoryTier(max_bytes)
        self._disk: OrderedDict[str, _DiskInfo] = OrderedDict()  # oldest first
        self._disk_bytes = 0
        self._hits = self._revalidations = self._misses = 0
        self._bytes_downloaded = self._bytes_saved = 0
        if tmp_dir is not None:
            try:
                os.makedirs(tmp_dir, exist_ok=True)
                self._scan_disk(tmp_dir)
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
        with self._lock:
            return self._disk_bytes

    def clear(self) -> None:
        """Drop every entry, in memory and on disk, and reset the counters."""
        with self._lock:
            self._mem.clear()
            self._mem.evicted.clear()
            names = list(self._disk)
            self._disk.clear()
            self._disk_bytes = 0
            self._hits = self._revalidations = self._misses = 0
            self._bytes_downloaded = self._bytes_saved = 0
        for name in names:
            self._unlink(name)

    def get(self, client: Any, bucket: str, key: str, *, version_id: str | None = None) -> bytes:
        """The object's bytes: from cache after a 304 (or within ``fresh_for``), else downloaded."""
        ident = _Ident(bucket, key, version_id)
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

    def _lookup(self, ident: _Ident) -> _Candidate | None:
        with self._lock:
            entry = self._mem.get(ident)
            if entry is not None:
                return _Candidate(entry.etag, len(entry.data), entry.validated_at, data=entry.data)
            name = _file_name(ident)
            info = self._disk.get(name)
            if info is None:
                return None
            self._disk.move_to_end(name)
            validated_at = info.validated_at
        opened = self._open_disk_entry(ident, name)
        if opened is None:
            self._forget_disk(name)
            return None
        fh, etag, size = opened
        with self._lock:
            info = self._disk.get(name)
            if info is not None:
                info.etag = etag
        return _Candidate(etag, size, validated_at, file=fh)

    def _serve_cached(self, client: Any, ident: _Ident, found: _Candidate) -> bytes | dict[str, Any] | None:
        """Cached bytes, or the 200 response that replaces them, or None when the disk copy proved torn."""
        validated_at = found.validated_at
        now = self._clock.now()
        if self._fresh_for <= 0 or validated_at is None or now - validated_at >= self._fresh_for:
            response = self._request(client, ident, found.etag)
            if response is not None:
                return response
            validated_at = self._clock.now()  # a 304 restarts the freshness window; a fresh hit does not
        data = found.data if found.data is not None else self._read_body(found)
        if data is None:
            self._forget_disk(_file_name(ident))
            return None
        with self._lock:
            self._hits += 1
            self._bytes_saved += len(data)
            if found.data is not None:
                entry = self._mem.get(ident)
                if entry is not None and entry.etag == found.etag:
                    entry.validated_at = validated_at
            else:
                info = self._disk.get(_file_name(ident))
                if info is not None:
                    info.validated_at = validated_at
        if found.file is not None and len(data) <= self._max_bytes:
            # Promote a disk hit that fits in memory; its file stays, so it still survives a reset.
            self._put_memory(ident, _Entry(found.etag, data, validated_at))
        return data

    # -- the download path ------------------------------------------------------------------------------

    def _request(self, client: Any, ident: _Ident, if_none_match: str | None) -> dict[str, Any] | None:
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

    def _fetch(self, client: Any, ident: _Ident) -> dict[str, Any]:
        response = self._request(client, ident, None)
        assert response is not None  # only a conditional GET can answer 304
        return response

    def _store(self, client: Any, ident: _Ident, response: dict[str, Any]) -> bytes:
        """Read a 200 response's body and cache it in the tier it fits."""
        with self._lock:
            self._misses += 1
        etag: str | None = response.get("ETag")
        length: int | None = response.get("ContentLength")
        if (
            etag is not None
            and length is not None
            and length > self._max_bytes
            and self._fits_disk(ident, etag, length)
        ):
            self._drop_memory(ident)
            try:
                return self._download_to_disk(ident, response, etag, length)
            except OSError:
                # The local disk failed (full?), not S3: fetch again without caching.
                return self._read_all(ident, self._fetch(client, ident))
        data = self._read_all(ident, response)
        now = self._clock.now()
        if etag is None:
            self._drop(ident)  # no ETag, nothing to revalidate with
        elif len(data) <= self._max_bytes:
            self._put_memory(ident, _Entry(etag, data, now))
            self._forget_disk(_file_name(ident), unlink=True)  # a stale disk copy would only waste space
        elif self._fits_disk(ident, etag, len(data)):
            self._drop_memory(ident)
            self._write_disk(ident, etag, data, now)
        else:
            self._drop(ident)
        return data

    def _read_all(self, ident: _Ident, response: dict[str, Any]) -> bytes:
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
        with self._lock:
            self._bytes_downloaded += len(data)
        return data

    def _download_to_disk(self, ident: _Ident, response: dict[str, Any], etag: str, length: int) -> bytes:
        """Stream the body to a temp file in chunks, publish it atomically, read it back once."""
        assert self._tmp_dir is not None
        name = _file_name(ident)
        header = _header(ident, etag, length)
        self._make_room(name, len(header) + length)
        body = response["Body"]
        part: str | None = None
        try:
            fd, part = tempfile.mkstemp(dir=self._tmp_dir, prefix="." + name, suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "w+b") as fh:
                fh.write(header)
                received = 0
                while True:
                    try:
                        chunk = body.read(_CHUNK)
                    except BotoCoreError as exc:
                        raise S3Error(f"reading {ident.url()} failed: {exc}") from exc
                    if not chunk:
                        break
                    received += len(chunk)
                    with self._lock:
                        self._bytes_downloaded += len(chunk)
                    fh.write(chunk)
                if received != length:
                    raise S3Error(f"reading {ident.url()} failed: got {received} of {length} bytes")
                fh.flush()
                os.fsync(fh.fileno())
                # Read back through the same descriptor: the page cache serves it, and memory holds one copy
                # of the body, never the body plus the chunks it was built from.
                fh.seek(len(header))
                data = fh.read()
            os.replace(part, os.path.join(self._tmp_dir, name))
        except BaseException:
            if part is not None:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            raise
        finally:
            body.close()
        _fsync_dir(self._tmp_dir)
        self._note_disk(name, len(header) + length, etag, self._clock.now())
        return data

    # -- tiers ------------------------------------------------------------------------------------------

    def _put_memory(self, ident: _Ident, entry: _Entry) -> None:
        with self._lock:
            # Delete first, so growing an entry cannot evict (and spill) its own stale value.
            self._mem.pop(ident, None)
            self._mem[ident] = entry
            evicted, self._mem.evicted = self._mem.evicted, []
        if self._tmp_dir is None:
            return
        for old_ident, old in evicted:
            name = _file_name(old_ident)
            with self._lock:
                info = self._disk.get(name)
                on_disk = info is not None and info.etag == old.etag
                if on_disk and info is not None and info.validated_at is None:
                    info.validated_at = old.validated_at
            if not on_disk and self._fits_disk(old_ident, old.etag, len(old.data)):
                self._write_disk(old_ident, old.etag, old.data, old.validated_at)

    def _fits_disk(self, ident: _Ident, etag: str, size: int) -> bool:
        return self._tmp_dir is not None and len(_header(ident, etag, size)) + size <= self._tmp_max_bytes

    def _write_disk(self, ident: _Ident, etag: str, data: bytes, validated_at: float) -> None:
        """Write an entry file atomically; a failure only means the entry is not kept."""
        assert self._tmp_dir is not None
        name = _file_name(ident)
        header = _header(ident, etag, len(data))
        self._make_room(name, len(header) + len(data))
        part = None
        try:
            fd, part = tempfile.mkstemp(dir=self._tmp_dir, prefix="." + name, suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, os.path.join(self._tmp_dir, name))
            _fsync_dir(self._tmp_dir)
        except OSError:
            if part is not None:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            self._forget_disk(name, unlink=True)
            return
        self._note_disk(name, len(header) + len(data), etag, validated_at)

    def _make_room(self, name: str, size: int) -> None:
        """Evict the oldest other entry files until ``size`` bytes fit in place of this entry's old file."""
        victims: list[str] = []
        with self._lock:
            old = self._disk.get(name)
            used = self._disk_bytes - (old.size if old is not None else 0)
            for victim in list(self._disk):
                if used + size <= self._tmp_max_bytes:
                    break
                if victim == name:
                    continue  # replaced by os.replace; until then a failed write leaves it intact
                used -= self._disk.pop(victim).size
                victims.append(victim)
            self._disk_bytes = used + (old.size if old is not None else 0)
        for victim in victims:
            self._unlink(victim)

    def _note_disk(self, name: str, size: int, etag: str, validated_at: float | None) -> None:
        with self._lock:
            old = self._disk.pop(name, None)
            if old is not None:
                self._disk_bytes -= old.size
            self._disk[name] = _DiskInfo(size, etag, validated_at)
            self._disk_bytes += size
        # Another thread may have filled the disk meanwhile; settle the bound now, keeping the newest.
        victims: list[str] = []
        with self._lock:
            while len(self._disk) > 1 and self._disk_bytes > self._tmp_max_bytes:
                victim, info = self._disk.popitem(last=False)
                self._disk_bytes -= info.size
                victims.append(victim)
        for victim in victims:
            self._unlink(victim)

    def _forget_disk(self, name: str, *, unlink: bool = True) -> None:
        with self._lock:
            info = self._disk.pop(name, None)
            if info is None:
                return
            self._disk_bytes -= info.size
        if unlink:
            self._unlink(name)

    def _drop_memory(self, ident: _Ident) -> None:
        with self._lock:
            self._mem.pop(ident, None)

    def _drop(self, ident: _Ident) -> None:
        self._drop_memory(ident)
        self._forget_disk(_file_name(ident))

    def _unlink(self, name: str) -> None:
        assert self._tmp_dir is not None
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._tmp_dir, name))

    def _scan_disk(self, tmp_dir: str) -> None:
        """Index the entry files a previous runtime left, oldest first; remove its unfinished temp files."""
        found: list[tuple[float, str, int]] = []
        with os.scandir(tmp_dir) as it:
            for item in it:
                try:
                    if not item.is_file(follow_symlinks=False):
                        continue
                    if item.name.startswith("." + _PREFIX) and item.name.endswith(_TMP_SUFFIX):
                        os.unlink(item.path)  # a write that crashed before its os.replace
                    elif item.name.startswith(_PREFIX) and item.name.endswith(_SUFFIX):
                        st = item.stat(follow_symlinks=False)
                        found.append((st.st_mtime, item.name, st.st_size))
                except OSError:
                    continue
        for _, name, size in sorted(found):
            self._disk[name] = _DiskInfo(size, None, None)
            self._disk_bytes += size
        # A smaller bound than the last runtime's: trim now.
        while self._disk and self._disk_bytes > self._tmp_max_bytes:
            victim, info = self._disk.popitem(last=False)
            self._disk_bytes -= info.size
            self._unlink(victim)

    def _open_disk_entry(self, ident: _Ident, name: str) -> tuple[IO[bytes], str, int] | None:
        """Open an entry file and check its header and length; None for a missing, torn or foreign file."""
        assert self._tmp_dir is not None
        try:
            fh = open(os.path.join(self._tmp_dir, name), "rb")  # noqa: SIM115 - the caller closes it
        except OSError:
            return None
        try:
            if fh.read(len(_MAGIC)) != _MAGIC:
                raise ValueError("bad magic")
            line = fh.readline(_MAX_HEADER)
            if not line.endswith(b"\n"):
                raise ValueError("header not terminated")
            meta = json.loads(line)
            if [meta["bucket"], meta["key"], meta["version_id"]] != list(ident):
                raise ValueError("entry for another object")
            etag, size = meta["etag"], meta["size"]
            if not isinstance(etag, str) or not isinstance(size, int):
                raise ValueError("bad header types")
            if os.fstat(fh.fileno()).st_size != fh.tell() + size:
                raise ValueError("torn file")
        except (OSError, ValueError, KeyError, TypeError):
            fh.close()
            return None
        return fh, etag, size

    def _read_body(self, found: _Candidate) -> bytes | None:
        assert found.file is not None
        try:
            data = found.file.read()
        except OSError:
            return None
        return data if len(data) == found.size else None


# -- helpers -----------------------------------------------------------------------------------------------


def _file_name(ident: _Ident) -> str:
    # A hash keeps any key (slashes, unicode, 1 KiB long) a safe, fixed-length file name.
    digest = hashlib.sha256(json.dumps(list(ident)).encode()).hexdigest()
    return f"{_PREFIX}{digest}{_SUFFIX}"


def _header(ident: _Ident, etag: str, size: int) -> bytes:
    meta = {
        "bucket": ident.bucket,
        "key": ident.key,
        "version_id": ident.version_id,
        "etag": etag,
        "size": size,
    }
    return _MAGIC + json.dumps(meta).encode() + b"\n"


def _fsync_dir(path: str) -> None:
    # Makes the rename itself durable; best effort (not every platform can open a directory).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_modified(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) in {"304", "NotModified"} or status == 304


def _map_client_error(exc: ClientError, ident: _Ident) -> S3Error:
    code = _error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    if code in _NO_BUCKET:
        return BucketNotFoundError(f"bucket {ident.bucket!r} does not exist (reading {ident.url()})")
    if code in _NOT_FOUND:
        return ObjectNotFoundError(f"{ident.url()} does not exist")
    if code in _DENIED:
        return AccessDeniedError(f"access denied to {ident.url()}: {message}")
    return S3Error(f"GetObject {ident.url()} failed ({code}): {message}")
