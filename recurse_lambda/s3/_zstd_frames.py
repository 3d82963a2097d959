"""zstd decompression resumable at frame starts (the optional ``zstandard`` package, imported when needed).

Each frame is decompressed on its own by ``zstandard``'s stream reader (bounded output per read), fed exactly
the frame's bytes: the frame header and block headers are walked here (3 bytes per block, read anyway), so the
frame's end is known without decompressing past it. Skippable frames (which the zstd seekable format uses for
its seek table) are skipped. Inside a frame there is no access point: resuming there decompresses the frame
from its start again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._gzip_points import DecompressionError, Input, Point

__all__ = ["ZSTD_MAGIC", "ZstdEngine", "is_skippable", "zstandard"]

ZSTD_MAGIC = 0xFD2FB528


def is_skippable(magic: int) -> bool:
    return 0x184D2A50 <= magic <= 0x184D2A5F


def zstandard() -> Any:
    try:
        import zstandard as module
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "reading zstd objects needs the zstandard package: pip install 'recurse-lambda[compression]'"
        ) from exc
    return module


class _FrameView:
    """A file-like view of exactly one zstd frame's bytes (after its magic), ending at the frame's end."""

    def __init__(self, inp: Input, magic: bytes) -> None:
        self._inp = inp
        self._pending = magic
        self._remaining = 0  # bytes of the current block (or checksum) still to give
        self._state = "header"
        self._checksum = False
        self.done = False

    def _exact(self, n: int) -> bytes:
        data = self._inp.take(n)
        if len(data) != n:
            raise DecompressionError(f"truncated zstd frame at offset {self._inp.pos}")
        return data

    def _advance(self) -> None:
        if self._state == "header":
            descriptor = self._exact(1)
            d = descriptor[0]
            if d & 0x08:
                raise DecompressionError(f"zstd frame header with a reserved bit set near {self._inp.pos}")
            single = (d >> 5) & 1
            self._checksum = bool((d >> 2) & 1)
            fcs = (1 if single else 0, 2, 4, 8)[d >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + fcs
            self._pending = descriptor + self._exact(rest)
            self._state = "block"
        elif self._state == "block":
            head = self._exact(3)
            value = int.from_bytes(head, "little")
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                raise DecompressionError(f"zstd block of a reserved type near {self._inp.pos}")
            self._pending, self._remaining = head, 1 if kind == 1 else size
            if value & 1:
                self._state = "checksum" if self._checksum else "end"
        elif self._state == "checksum":
            self._remaining, self._state = 4, "end"
        else:
            self.done = True

    def read(self, n: int = -1) -> bytes:
        n = n if n > 0 else 1 << 20
        while not self._pending and not self._remaining and not self.done:
            self._advance()
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        if self._remaining:
            data = self._exact(min(n, self._remaining))
            self._remaining -= len(data)
            return data
        return b""


class ZstdEngine:
    """Decompressed chunks of zstd frames from a frame start on; :attr:`point` is the latest frame start."""

    def __init__(self, inp: Input, *, chunk_size: int) -> None:
        self._inp = inp
        self._chunk = chunk_size
        self._dctx = zstandard().ZstdDecompressor()
        self.point = Point(0, 0)
        self.out = 0

    def run(self, start: Point) -> Iterator[tuple[Point, int, bytes]]:
        inp = self._inp
        self.point, self.out = start, start.out
        while True:
            begin = inp.pos
            magic = inp.take(4)
            if not magic:
                return
            if len(magic) < 4:
                raise DecompressionError(f"truncated zstd data at offset {begin}")
            value = int.from_bytes(magic, "little")
            if is_skippable(value):
                size = int.from_bytes(inp.take(4), "little")
                if inp.skip(size) != size:
                    raise DecompressionError(f"truncated skippable frame at offset {begin}")
                self.point = Point(inp.pos, self.out)
                continue
            if value != ZSTD_MAGIC:
                raise DecompressionError(f"no zstd frame at offset {begin}")
            point = self.point = Point(begin, self.out)
            view = _FrameView(inp, magic)
            reader = self._dctx.stream_reader(view, read_size=256 * 1024, read_across_frames=False)
            try:
                data = reader.read(self._chunk)
                while data:
                    # One chunk ahead: the frame's last chunk is given once the next frame start is known.
                    ahead = reader.read(self._chunk)
                    offset = self.out
                    self.out += len(data)
                    if not ahead:
                        self._finish(view, begin)
                    yield point, offset, data
                    data = ahead
            except self._error() as exc:
                raise DecompressionError(f"corrupt zstd frame at offset {begin}: {exc}") from exc
            if self.point is point:  # an empty frame
                self._finish(view, begin)

    def _finish(self, view: _FrameView, begin: int) -> None:
        while not view.done and view.read(1 << 16):  # the frame's checksum, if the reader left it
            pass
        if not view.done:
            raise DecompressionError(f"zstd frame at offset {begin} ended early")
        self.point = Point(self._inp.pos, self.out)

    @staticmethod
    def _error() -> type[Exception]:
        error: type[Exception] = zstandard().ZstdError
        return error
