"""The warm cache's second tier: whole objects as files in a local directory (``/tmp`` on Lambda).

``/tmp`` survives a runtime reset that clears memory, so a new runtime indexes the files the last one left.
Each entry is one file: MAGIC, one JSON header line, then the body. One file per entry, so one ``os.replace``
publishes the ETag and the bytes together (a sidecar would need two renames and could pair an old ETag with new
bytes after a crash between them); a write goes to a temp name first, so a crash never leaves a torn entry.
The tier is bounded by bytes, the oldest entries evicted first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from botocore.exceptions import BotoCoreError

from ..errors import S3Error

__all__ = ["DiskTier", "Ident", "read_body"]

MiB = 1024 * 1024

_MAGIC = b"recurse-lambda-cache 1\n"
_PREFIX = "rlc-"
_SUFFIX = ".obj"
_TMP_SUFFIX = ".part"
_MAX_HEADER = 64 * 1024
_CHUNK = 4 * MiB


class Ident(NamedTuple):
    """What a cache entry is keyed by."""

    bucket: str
    key: str
    version_id: str | None

    def url(self) -> str:
        base = f"s3://{self.bucket}/{self.key}"
        return base if self.version_id is None else f"{base}?versionId={self.version_id}"


@dataclass
class _DiskInfo:
    size: int  # file size, header included: what the disk bound counts
    etag: str | None  # known once written or read by this instance
    validated_at: float | None  # None: never validated by this instance, so always revalidate


class DiskTier:
    """Entry files in ``directory``, at most ``max_bytes`` of them (headers included), oldest evicted first.

    The index is guarded by ``lock``, shared with the memory tier that owns it; file I/O happens outside it.
    Raises ``OSError`` when the directory cannot be created or scanned.
    """

    def __init__(self, directory: str, max_bytes: int, lock: threading.Lock) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = lock
        self._index: OrderedDict[str, _DiskInfo] = OrderedDict()  # oldest first
        self._used = 0
        os.makedirs(directory, exist_ok=True)
        self._scan()

    @property
    def used(self) -> int:
        """Bytes of entry files known to this tier."""
        with self._lock:
            return self._used

    def fits(self, ident: Ident, etag: str, size: int) -> bool:
        """Whether an entry of ``size`` body bytes can be kept at all."""
        return len(_header(ident, etag, size)) + size <= self.max_bytes

    def clear(self) -> None:
        """Forget and remove every entry file."""
        with self._lock:
            names = list(self._index)
            self._index.clear()
            self._used = 0
        for name in names:
            self._unlink(name)

    # -- reading --------------------------------------------------------------------------------------------

    def lookup(self, ident: Ident) -> tuple[IO[bytes], str, int, float | None] | None:
        """``(file positioned at the body, etag, size, validated_at)`` for a sound entry file, else None."""
        name = _file_name(ident)
        with self._lock:
            info = self._index.get(name)
            if info is None:
                return None
            self._index.move_to_end(name)
            validated_at = info.validated_at
        opened = self._open(ident, name)
        if opened is None:
            self.forget(ident)
            return None
        fh, etag, size = opened
        with self._lock:
            info = self._index.get(name)
            if info is not None:
                info.etag = etag
        return fh, etag, size, validated_at

    def touch(self, ident: Ident, validated_at: float) -> None:
        """Record a revalidation of the entry (a 304, or a fresh hit)."""
        with self._lock:
            info = self._index.get(_file_name(ident))
            if info is not None:
                info.validated_at = validated_at

    def holds(self, ident: Ident, etag: str, validated_at: float) -> bool:
        """Whether the entry for ``etag`` is already on disk; if so, it adopts ``validated_at`` if it had none."""
        with self._lock:
            info = self._index.get(_file_name(ident))
            on_disk = info is not None and info.etag == etag
            if on_disk and info is not None and info.validated_at is None:
                info.validated_at = validated_at
        return on_disk

    # -- writing --------------------------------------------------------------------------------------------

    def write(self, ident: Ident, etag: str, data: bytes, validated_at: float) -> None:
        """Write an entry file atomically; a failure only means the entry is not kept."""
        name = _file_name(ident)
        header = _header(ident, etag, len(data))
        self._make_room(name, len(header) + len(data))
        part = None
        try:
            fd, part = tempfile.mkstemp(dir=self.directory, prefix="." + name, suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, os.path.join(self.directory, name))
            _fsync_dir(self.directory)
        except OSError:
            if part is not None:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            self.forget(ident)
            return
        self._note(name, len(header) + len(data), etag, validated_at)

    def download(
        self,
        ident: Ident,
        body: Any,
        etag: str,
        length: int,
        *,
        received: Callable[[int], None],
        now: Callable[[], float],
    ) -> bytes:
        """Stream ``body`` to a temp file in chunks, publish it atomically, read it back once.

        ``received`` is told of every chunk as it arrives; ``now()`` stamps the entry as validated once it
        is published. S3 trouble raises ``S3Error``; a local disk
        failure raises ``OSError`` (the caller may then fetch again without caching).
        """
        name = _file_name(ident)
        header = _header(ident, etag, length)
        self._make_room(name, len(header) + length)
        part: str | None = None
        try:
            fd, part = tempfile.mkstemp(dir=self.directory, prefix="." + name, suffix=_TMP_SUFFIX)
            with os.fdopen(fd, "w+b") as fh:
                fh.write(header)
                got = 0
                while True:
                    try:
                        chunk = body.read(_CHUNK)
                    except BotoCoreError as exc:
                        raise S3Error(f"reading {ident.url()} failed: {exc}") from exc
                    if not chunk:
                        break
                    got += len(chunk)
                    received(len(chunk))
                    fh.write(chunk)
                if got != length:
                    raise S3Error(f"reading {ident.url()} failed: got {got} of {length} bytes")
                fh.flush()
                os.fsync(fh.fileno())
                # Read back through the same descriptor: the page cache serves it, and memory holds one copy
                # of the body, never the body plus the chunks it was built from.
                fh.seek(len(header))
                data = fh.read()
            os.replace(part, os.path.join(self.directory, name))
        except BaseException:
            if part is not None:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            raise
        finally:
            body.close()
        _fsync_dir(self.directory)
        self._note(name, len(header) + length, etag, now())
        return data

    def forget(self, ident: Ident) -> None:
        """Drop the entry from the index and remove its file."""
        name = _file_name(ident)
        with self._lock:
            info = self._index.pop(name, None)
            if info is None:
                return
            self._used -= info.size
        self._unlink(name)

    # -- the bound and the index ----------------------------------------------------------------------------

    def _make_room(self, name: str, size: int) -> None:
        """Evict the oldest other entry files until ``size`` bytes fit in place of this entry's old file."""
        victims: list[str] = []
        with self._lock:
            old = self._index.get(name)
            used = self._used - (old.size if old is not None else 0)
            for victim in list(self._index):
                if used + size <= self.max_bytes:
                    break
                if victim == name:
                    continue  # replaced by os.replace; until then a failed write leaves it intact
                used -= self._index.pop(victim).size
                victims.append(victim)
            self._used = used + (old.size if old is not None else 0)
        for victim in victims:
            self._unlink(victim)

    def _note(self, name: str, size: int, etag: str, validated_at: float | None) -> None:
        with self._lock:
            old = self._index.pop(name, None)
            if old is not None:
                self._used -= old.size
            self._index[name] = _DiskInfo(size, etag, validated_at)
            self._used += size
        # Another thread may have filled the disk meanwhile; settle the bound now, keeping the newest.
        victims: list[str] = []
        with self._lock:
            while len(self._index) > 1 and self._used > self.max_bytes:
                victim, info = self._index.popitem(last=False)
                self._used -= info.size
                victims.append(victim)
        for victim in victims:
            self._unlink(victim)

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, name))

    def _scan(self) -> None:
        """Index the entry files a previous runtime left, oldest first; remove its unfinished temp files."""
        found: list[tuple[float, str, int]] = []
        with os.scandir(self.directory) as it:
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
            self._index[name] = _DiskInfo(size, None, None)
            self._used += size
        # A smaller bound than the last runtime's: trim now.
        while self._index and self._used > self.max_bytes:
            victim, info = self._index.popitem(last=False)
            self._used -= info.size
            self._unlink(victim)

    def _open(self, ident: Ident, name: str) -> tuple[IO[bytes], str, int] | None:
        """Open an entry file and check its header and length; None for a missing, torn or foreign file."""
        try:
            fh = open(os.path.join(self.directory, name), "rb")  # noqa: SIM115 - the caller closes it
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


def read_body(fh: IO[bytes], size: int) -> bytes | None:
    """The rest of an entry file opened by :meth:`DiskTier.lookup`; None if it is not ``size`` bytes."""
    try:
        data = fh.read()
    except OSError:
        return None
    return data if len(data) == size else None


def _file_name(ident: Ident) -> str:
    # A hash keeps any key (slashes, unicode, 1 KiB long) a safe, fixed-length file name.
    digest = hashlib.sha256(json.dumps(list(ident)).encode()).hexdigest()
    return f"{_PREFIX}{digest}{_SUFFIX}"


def _header(ident: Ident, etag: str, size: int) -> bytes:
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
