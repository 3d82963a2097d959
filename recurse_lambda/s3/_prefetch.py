"""Consecutive byte ranges of a source, with the next ones fetched in the background while one is parsed."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

from ..errors import S3Error

__all__ = ["ByteSource", "RangeFetcher", "read_full"]

_MAX_WORKERS = 16


@runtime_checkable
class ByteSource(Protocol):
    """What readers need from an object: its size and ranged reads (``PinnedSource`` is one)."""

    @property
    def size(self) -> int: ...

    def read(self, start: int, end: int) -> bytes: ...


def _describe(source: ByteSource) -> str:
    bucket, key = getattr(source, "bucket", None), getattr(source, "key", None)
    return f"s3://{bucket}/{key}" if bucket is not None and key is not None else repr(source)


def read_full(source: ByteSource, start: int, end: int) -> bytes:
    """Exactly the bytes ``[start, end)``: a short answer is completed by further reads, never trusted."""
    want = end - start
    data = source.read(start, end)
    if len(data) == want:
        return data
    parts = []
    got = 0
    while True:
        if len(data) > want - got:
            raise S3Error(
                f"{_describe(source)}: asked for {want - got} bytes at {start + got}, got {len(data)}"
            )
        if not data:
            raise S3Error(f"{_describe(source)}: no data at offset {start + got} before the end ({end})")
        parts.append(data)
        got += len(data)
        if got == want:
            return b"".join(parts)
        data = source.read(start + got, end)


def check_window(start: int, range_size: int, prefetch: int) -> None:
    """Refuse a start offset, range size or prefetch depth that cannot work, before any request."""
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start}")
    if range_size < 1:
        raise ValueError(f"range_size must be >= 1, not {range_size}")
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, not {prefetch}")


class RangeFetcher:
    """Yields ``(offset, data)`` for consecutive ranges of ``range_size`` bytes from ``start`` to the end.

    With ``prefetch > 0`` the next ``prefetch`` ranges are fetched on background threads while the caller
    works on the current one, so at most ``prefetch + 1`` ranges are in memory. Nothing past the size is ever
    requested, nor past ``end`` when given. Ranges starting at or past ``horizon`` are fetched only when the
    caller asks for them (a shard's last record may run past its end, by an unknown length). A failed
    background read is raised in the caller's thread, as the same exception. ``close`` cancels what has not
    started, waits for what has, and leaves no thread behind.
    """

    def __init__(
        self,
        source: ByteSource,
        start: int,
        *,
        range_size: int,
        prefetch: int,
        end: int | None = None,
        horizon: int | None = None,
    ) -> None:
        check_window(start, range_size, prefetch)
        self._source = source
        self._next = start  # the offset of the next range to plan
        self._range_size = range_size
        self._prefetch = prefetch
        self._end = end
        self._horizon = horizon
        self._size: int | None = None
        self._pending: deque[tuple[int, Future[bytes]]] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def __iter__(self) -> RangeFetcher:
        return self

    def __next__(self) -> tuple[int, bytes]:
        if self._closed:
            raise StopIteration
        if self._size is None:
            size = self._source.size
            if self._next > size:
                raise ValueError(f"start {self._next} is past the end of {_describe(self._source)} ({size})")
            self._size = size if self._end is None else min(size, self._end)
        if self._prefetch == 0:
            offset = self._plan()
            if offset is None:
                self.close()
                raise StopIteration
            return offset, read_full(self._source, offset, min(offset + self._range_size, self._size))
        self._fill()
        if not self._pending:
            self.close()
            raise StopIteration
        offset, future = self._pending.popleft()
        try:
            data = future.result()
        except BaseException:
            self.close()
            raise
        return offset, data

    def close(self) -> None:
        """Stop fetching: cancel queued reads, wait for a running one, join the threads."""
        self._closed = True
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _plan(self) -> int | None:
        assert self._size is not None
        if self._next >= self._size:
            return None
        offset = self._next
        self._next = min(offset + self._range_size, self._size)
        return offset

    def _fill(self) -> None:
        # The range the caller is about to take, plus `prefetch` more to fetch while it parses that one.
        while len(self._pending) <= self._prefetch:
            if self._horizon is not None and self._next >= self._horizon and self._pending:
                return
            offset = self._plan()
            if offset is None:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=min(self._prefetch, _MAX_WORKERS),
                    thread_name_prefix="recurse-lambda-prefetch",
                )
            future = self._executor.submit(read_full, self._source, offset, self._next)
            self._pending.append((offset, future))
