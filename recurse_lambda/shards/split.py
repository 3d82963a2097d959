"""Where a compressed object can be cut for shards: gzip member starts and zstd frame starts, found near a cut.

A gzip or zstd stream cannot be entered at an arbitrary byte, but it can at a member (gzip: multi-member files,
BGZF) or frame (zstd: multi-frame files, the seekable format) start. When a sharded job is split, each cut that
falls inside a compressed object is moved forward to the first *candidate* start within :data:`SEARCH` bytes:
the format's magic and a valid header, after which the data decompresses without error (at a true member start
DEFLATE has no history, so any back-reference past the output so far fails, as does most random data).

A candidate is only a good guess: the shard before it proves it, by decompressing its own members and ending
exactly there (a shard reads a view of the object that ends at its cut, so a member straddling the cut is a
truncated member, a :class:`~recurse_lambda.errors.DecompressionError`). So a false candidate fails the job
with a clear error; it never produces a wrong result. This module parses bytes only (no S3): the job reads the
windows through its reader factory.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["SEARCH", "detect", "find_start", "unsplittable"]

#: How far past a cut the job looks for a member or frame start (BGZF members are at most 64 KiB compressed).
SEARCH = 1024 * 1024
#: Bytes read past the window, so a candidate near its end can still be tried.
_LOOKAHEAD = 64 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str | None:
    """``"gzip"``, ``"zstd"`` or None, from an object's first bytes (as the readers' ``"auto"``)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 4:
        magic = int.from_bytes(head[:4], "little")
        if head[:4] == _ZSTD_MAGIC or 0x184D2A50 <= magic <= 0x184D2A5F:
            return "zstd"
    return None


def _gzip_header_end(buf: bytes, i: int) -> int | None:
    """The offset after the gzip member header at ``i``, or None if none is there (or it does not fit)."""
    if buf[i : i + 3] != b"\x1f\x8b\x08" or len(buf) < i + 10 or buf[i + 3] & 0xE0:
        return None
    flags, j = buf[i + 3], i + 10
    if flags & 4:
        if len(buf) < j + 2:
            return None
        (xlen,) = struct.unpack_from("<H", buf, j)
        j += 2 + xlen
    for flag in (8, 16):
        if flags & flag:
            j = buf.find(b"\0", j) + 1
            if j == 0:
                return None
    if flags & 2:
        j += 2
    return j if j <= len(buf) else None


def _gzip_ok(buf: bytes, i: int, final: bool) -> bool:
    j = _gzip_header_end(buf, i)
    if j is None:
        return False
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(buf[j:], 1 << 20)
    except zlib.error:
        return False
    if (
        d.eof
    ):  # the whole member is here: its trailer must match, and what follows must be a member or the end
        rest = d.unused_data
        if len(rest) >= 8:
            crc, isize = struct.unpack_from("<II", rest)
            if crc != zlib.crc32(out) or isize != len(out) & 0xFFFFFFFF:
                return False
    return d.eof or len(buf) - j >= 1024 or final


def _zstd_ok(buf: bytes, i: int, final: bool) -> bool:
    if buf[i : i + 4] != _ZSTD_MAGIC or len(buf) < i + 5 or buf[i + 4] & 0x08:
        return False
    try:
        import zstandard
    except ImportError:  # pragma: no cover - depends on the installation
        return True  # the header is valid; the shard before it proves it anyway
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        d.decompress(buf[i:])
    except zstandard.ZstdError:
        return False
    return len(buf) - i >= 1024 or final


def find_start(compression: str, read: Callable[[int, int], bytes], cut: int, size: int) -> int | None:
    """The first candidate member (gzip) or frame (zstd) start in ``[cut, cut + SEARCH)``, or None."""
    end = min(size, cut + SEARCH + _LOOKAHEAD)
    buf = read(cut, end)
    final = end == size
    magic = b"\x1f\x8b\x08" if compression == "gzip" else _ZSTD_MAGIC
    ok = _gzip_ok if compression == "gzip" else _zstd_ok
    i = buf.find(magic)
    while 0 <= i < SEARCH:
        if ok(buf, i, final):
            return cut + i
        i = buf.find(magic, i + 1)
    return None


def unsplittable(compression: str, where: str, count: int) -> str:
    """Why a compressed object cannot be split into ``count`` shards, and how to write one that can."""
    if compression == "gzip":
        kind, how = (
            "member",
            "write it as several gzip members: BGZF (`bgzip` from htslib), or gzip pieces concatenated "
            "(`split -b 64M`, gzip each piece, `cat` the .gz files; any gzip reader reads the result as one "
            "file); `pigz` and `pigz --independent` still write one member",
        )
    else:
        kind, how = (
            "frame",
            "write it as several zstd frames: the zstd seekable format, or zstd pieces concatenated "
            "(`zstd` each piece, `cat` the .zst files); `zstd -T0` and `--rsyncable` still write one frame",
        )
    return (
        f"{where} is {compression}-compressed with no {kind} boundary within {SEARCH // 1024 // 1024} MiB after any of "
        f"the cut points of {count} shards (a single {kind}, or {kind}s larger than that): a compressed "
        f"object is split only at {kind} boundaries. Read it with one chain (run.s3 readers resume inside it), "
        f"or {how}"
    )


def snap(
    objects: list[Any],
    cuts: list[int],
    compressions: dict[int, str],
    find: Callable[[int, int], int | None],
    workers: int = 8,
) -> list[int]:
    """``cuts`` (offsets in the objects' concatenation) moved to member or frame starts of compressed objects.

    ``compressions`` maps an object's index to its compression; ``find(index, local_cut)`` is the candidate
    start at or after the cut, or None: the cut then moves to the object's end. The cuts are looked at
    ``workers`` at a time (each is a ranged GET: 999 of them one after another would take most of a minute).
    Sorted, without duplicates.
    """
    bases, base = [], 0
    for o in objects:
        bases.append(base)
        base += o.size
    asks: list[tuple[int, int, int]] = []  # (which cut, in which object, where in it)
    for i, cut in enumerate(cuts):
        for k, o in enumerate(objects):
            local = cut - bases[k]
            if 0 < local < o.size and k in compressions:
                asks.append((i, k, local))
                break
    out = list(cuts)
    if asks:
        with ThreadPoolExecutor(max(1, min(workers, len(asks))), thread_name_prefix="shard-split") as pool:
            found = list(pool.map(lambda ask: find(ask[1], ask[2]), asks))
        for (i, k, _), start in zip(asks, found, strict=True):
            out[i] = bases[k] + (start if start is not None else objects[k].size)
    return sorted(set(out))
