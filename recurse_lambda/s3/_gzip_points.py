"""gzip decompression with access points: resumable at member starts and at DEFLATE block boundaries.

An access point inside a member is zlib's ``examples/zran.c`` technique: the byte offset of the next compressed
byte, the number of bits of the byte before it that are still to be read (0-7), and the last 32 KiB of the
member's output (the window back-references may reach). Block boundaries are learnt from zlib's own ``inflate``
with ``Z_BLOCK``, which Python's :mod:`zlib` does not expose: the system's zlib is called through :mod:`ctypes`
(:func:`libz`), and resuming uses ``inflatePrime`` and ``inflateSetDictionary``. Where no shared zlib can be
loaded, the standard library's :mod:`zlib` decompresses instead: points are then only at member starts, and a
point made elsewhere inside a member is still resumed, by zran's ``inflatePreface``: empty DEFLATE blocks put in
front of the partial byte's bits bring the stream to a byte boundary (:func:`preface`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import DecompressionError  # defined there with every public error; imported from here too

__all__ = ["WINDOW", "DecompressionError", "GzipEngine", "Point", "libz", "preface"]

#: DEFLATE's window: the most output a back-reference may reach.
WINDOW = 32 * 1024
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2
_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR, _Z_BLOCK = 0, 1, -5, 5


@dataclass(frozen=True)
class Point:
    """Where decompression can start: compressed offset ``in_``, decompressed offset ``out``.

    ``window is None``: a member (gzip) or frame (zstd) starts at ``in_``, or plain bytes. Otherwise a DEFLATE
    block starts ``bits`` bits before ``in_`` (in the high bits of byte ``in_ - 1``), after ``window`` (the
    member's last output, at most 32 KiB); ``crc`` and ``mlen`` are the member's CRC-32 and length so far.
    """

    in_: int
    out: int
    bits: int = 0
    window: bytes | None = None
    crc: int = 0
    mlen: int = 0


class Input(Protocol):
    """The compressed bytes from an offset on (``_decompress._Input``): a current range and a position in it."""

    buf: bytes
    i: int

    @property
    def pos(self) -> int: ...

    def fill(self) -> bool: ...

    def take(self, n: int) -> bytes: ...

    def skip(self, n: int) -> int: ...


class _ZStream(ctypes.Structure):
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


@functools.cache
def libz() -> Any | None:
    """The system's zlib through ctypes (``inflate`` with ``Z_BLOCK``, ``inflatePrime``), or None if absent."""
    for name in ("libz.so.1", ctypes.util.find_library("z"), "libz.dylib"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.zlibVersion.restype = ctypes.c_char_p
            strm = ctypes.POINTER(_ZStream)
            for func, args in (
                ("inflateInit2_", [strm, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
                ("inflate", [strm, ctypes.c_int]),
                ("inflateEnd", [strm]),
                ("inflateReset", [strm]),
                ("inflatePrime", [strm, ctypes.c_int, ctypes.c_int]),
                ("inflateSetDictionary", [strm, ctypes.c_char_p, ctypes.c_uint]),
            ):
                getattr(lib, func).argtypes = args
                getattr(lib, func).restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    return None


def preface(bits: int, value: int) -> bytes:
    """Bytes that leave a raw inflater as ``inflatePrime(bits, value)`` would (zran.c's ``inflatePreface``).

    Empty blocks (one dynamic block of 95 bits when ``bits`` is odd, then fixed blocks of 10 bits) are followed
    by the ``bits`` low bits of ``value``, ending on a byte boundary; the empty blocks output nothing.
    """
    acc, have = 0, 0
    if bits & 1:
        acc, have = (
            int.from_bytes(bytes([4, 0xE0, 0x81, 8, 0, 0, 0, 0, 0x20, 0xA8, 0xAB, 0x1F]), "little"),
            95,
        )
    while (have + bits) & 7:
        acc |= 2 << have  # BFINAL 0, BTYPE 01 (fixed), end-of-block: seven zero bits
        have += 10
    acc |= (value & ((1 << bits) - 1)) << have
    return (acc).to_bytes((have + bits) // 8, "little")


class GzipEngine:
    """Decompressed chunks of gzip members from a point on; :attr:`point` is the latest point reached.

    ``run`` yields ``(point, offset, data)``: ``data`` starts at decompressed ``offset``, reachable from
    ``point`` (``point.out <= offset``). With ``spacing`` (and :func:`libz`), a point is made at the first block
    boundary after each ``spacing`` bytes of output, and the chunk before it ends there; points are also at each
    member start. The member's CRC-32 and length are checked against its trailer before its last chunk is given.
    """

    def __init__(self, inp: Input, *, chunk_size: int, spacing: int | None, native: bool = True) -> None:
        self._inp = inp
        self._chunk = chunk_size
        self._lib = libz() if native else None  # native=False: the standard library's zlib (tests)
        self._spacing = spacing if self._lib is not None else None
        self.point = Point(0, 0)
        self.out = 0
        self._crc = self._mlen = 0
        self._tail = b""

    def run(self, start: Point) -> Iterator[tuple[Point, int, bytes]]:
        self.point, self.out = start, start.out
        first = start.in_ == 0 and start.window is None  # the object's first member must be there
        while True:
            if self.point.window is None:
                if not self._header(first):
                    return
                self._crc = self._mlen = 0
                self._tail = b""
            else:
                self._crc, self._mlen, self._tail = self.point.crc, self.point.mlen, self.point.window
            first = False
            if self._lib is not None:
                yield from self._member_libz(self._lib)
            else:
                yield from self._member_zlib()

    def _header(self, first: bool) -> bool:
        inp = self._inp
        start = inp.pos
        if not first:  # zero padding after a member, as gzip(1) and Python's gzip accept
            while inp.fill():
                rest = inp.buf[inp.i :].lstrip(b"\0")
                inp.i = len(inp.buf) - len(rest)
                if rest:
                    break
            start = inp.pos
        head = inp.take(10)
        if not head and not first:
            return False
        if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
            raise DecompressionError(f"no gzip member at offset {start}")
        flags = head[3]
        if flags & _FEXTRA:
            (xlen,) = struct.unpack("<H", self._exact(2))
            self._exact(xlen)
        for flag in (_FNAME, _FCOMMENT):
            if flags & flag:
                while self._exact(1) != b"\0":
                    pass
        if flags & _FHCRC:
            self._exact(2)
        self.point = Point(start, self.out)
        return True

    def _exact(self, n: int) -> bytes:
        data = self._inp.take(n)
        if len(data) != n:
            raise DecompressionError(f"truncated gzip data at offset {self._inp.pos}")
        return data

    def _account(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._mlen += len(data)
        self._tail = (self._tail + data)[-WINDOW:] if len(data) < WINDOW else data[-WINDOW:]
        self.out += len(data)

    def _trailer(self) -> None:
        crc, isize = struct.unpack("<II", self._exact(8))
        if crc != self._crc or isize != self._mlen & 0xFFFFFFFF:
            raise DecompressionError(f"gzip member ending at {self._inp.pos}: CRC-32 or length mismatch")
        self.point = Point(self._inp.pos, self.out)

    def _member_libz(self, lib: Any) -> Iterator[tuple[Point, int, bytes]]:
        inp, size, point = self._inp, self._chunk, self.point
        strm = _ZStream()
        if lib.inflateInit2_(ctypes.byref(strm), -15, lib.zlibVersion(), ctypes.sizeof(_ZStream)) != _Z_OK:
            raise MemoryError("inflateInit2 failed")
        try:
            if point.window is not None:
                if point.bits:
                    byte = self._exact(1)[0]
                    lib.inflatePrime(ctypes.byref(strm), point.bits, byte >> (8 - point.bits))
                if point.window:
                    lib.inflateSetDictionary(ctypes.byref(strm), point.window, len(point.window))
            out = ctypes.create_string_buffer(size)
            out_addr = ctypes.addressof(out)
            since, filled = 0, 0
            held: bytes | None = None
            in_addr = 0
            while True:
                if inp.i >= len(inp.buf) and not inp.fill():
                    raise DecompressionError(f"truncated gzip data at offset {inp.pos}")
                if inp.buf is not held:
                    held = inp.buf
                    in_addr = ctypes.cast(ctypes.c_char_p(held), ctypes.c_void_p).value or 0
                strm.next_in = in_addr + inp.i
                strm.avail_in = len(held) - inp.i
                strm.next_out = out_addr + filled
                strm.avail_out = size - filled
                ret = lib.inflate(ctypes.byref(strm), _Z_BLOCK)
                inp.i = len(held) - strm.avail_in
                filled = size - strm.avail_out
                if ret == _Z_STREAM_END:
                    data = ctypes.string_at(out_addr, filled)
                    offset = self.out
                    self._account(data)
                    self._trailer()
                    if data:
                        yield point, offset, data
                    return
                if ret not in (_Z_OK, _Z_BUF_ERROR):
                    msg = strm.msg.decode(errors="replace") if strm.msg else str(ret)
                    raise DecompressionError(f"corrupt gzip data near offset {inp.pos}: {msg}")
                boundary = (
                    self._spacing is not None
                    and strm.data_type & 0xC0 == 0x80
                    and since + filled >= self._spacing
                )
                if filled == size or (boundary and filled):
                    data = ctypes.string_at(out_addr, filled)
                    offset = self.out
                    self._account(data)
                    since += filled
                    filled = 0
                    chunk_point = point
                    if boundary:
                        point = self.point = Point(
                            inp.pos, self.out, strm.data_type & 7, self._tail, self._crc, self._mlen
                        )
                        since = 0
                    yield chunk_point, offset, data
        finally:
            lib.inflateEnd(ctypes.byref(strm))

    def _member_zlib(self) -> Iterator[tuple[Point, int, bytes]]:
        inp, point = self._inp, self.point
        window = point.window
        d = zlib.decompressobj(-15, zdict=window) if window else zlib.decompressobj(-15)
        if window is not None and point.bits:
            d.decompress(preface(point.bits, self._exact(1)[0] >> (8 - point.bits)))
        tail, full = b"", False
        try:
            while True:
                if tail or full:  # input handed back, or output held back by the chunk limit
                    data = d.decompress(tail, self._chunk)
                else:
                    if inp.i >= len(inp.buf) and not inp.fill():
                        raise DecompressionError(f"truncated gzip data at offset {inp.pos}")
                    piece = memoryview(inp.buf)[inp.i : inp.i + 65536]
                    inp.i += len(piece)
                    data = d.decompress(piece, self._chunk)
                tail, full = d.unconsumed_tail, len(data) == self._chunk
                if d.eof:
                    inp.i -= len(d.unused_data)  # bytes of the current range, past the member
                    offset = self.out
                    self._account(data)
                    self._trailer()
                    if data:
                        yield point, offset, data
                    return
                if data:
                    offset = self.out
                    self._account(data)
                    yield point, offset, data
        except zlib.error as exc:
            raise DecompressionError(f"corrupt gzip data near offset {inp.pos}: {exc}") from exc
