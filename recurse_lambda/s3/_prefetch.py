"""Consecutive byte ranges of a source, with the next ones fetched in the background while one is parsed."""

from __future__ import annotations

import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from ..errors import S3Error

__all__ = [
    "AUTO_PREFETCH",
    "AUTO_RANGE_SIZE",
    "ByteSource",
    "RangeFetcher",
    "concurrency_limit",
    "function_memory",
    "read_full",
]

_MAX_WORKERS = 16
#: Ranged GETs in flight at most, whatever the memory and the connection pool allow: at S3's 50-90 MB/s per
#: connection, 10 GETs of 8 MiB bring 500-900 MB/s, more than one Python thread parses (~2 s of CPU per GB of
#: lines, ``benchmarks/s3_read.py``); more would only hold more memory.
CEILING = 10
#: Ranges in flight when an adaptive fetcher starts: what a consumer faster than one connection needs first.
INITIAL_DEPTH = 2
#: The share of the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) the ranges may hold at once.
MEMORY_SHARE = 0.25
#: The memory assumed outside Lambda (MiB), when ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` is unset.
DEFAULT_MEMORY_MB = 512
#: botocore's default ``max_pool_connections``, assumed when the source's client does not say.
DEFAULT_POOL = 10
#: A consumer that waited less than this for a range was not held up by the fetching (timer noise).
STARVED = 0.001
#: The depth grows only while GETs run at least at this share of the best rate one was seen to reach.
SLOWDOWN = 0.75
#: With the automatic range size, the first range: the first batch comes sooner, whatever the latency.
FIRST_RANGE = 1024 * 1024


class _Auto(int):
    """A default that the fetcher may tune (an ``int`` equal to the default, told apart by identity)."""

    def __repr__(self) -> str:
        return f"auto({int(self)})"


#: The readers' default ``prefetch``: adaptive (see :class:`RangeFetcher`); any int given explicitly is fixed.
AUTO_PREFETCH: int = _Auto(INITIAL_DEPTH)
#: The readers' default ``range_size``: 8 MiB, with a smaller first range; an explicit size is used as is.
AUTO_RANGE_SIZE: int = _Auto(8 * 1024 * 1024)


def _pool_size(source: Any) -> int:
    """The connection pool of the source's boto3 client (``max_pool_connections``), else botocore's default."""
    client = getattr(source, "client", None) or getattr(source, "_client", None)
    size = getattr(getattr(getattr(client, "meta", None), "config", None), "max_pool_connections", None)
    return size if isinstance(size, int) and size > 0 else DEFAULT_POOL


def function_memory() -> int:
    """The function's memory in bytes (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, else :data:`DEFAULT_MEMORY_MB`)."""
    try:
        memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "") or DEFAULT_MEMORY_MB)
    except ValueError:
        memory_mb = DEFAULT_MEMORY_MB
    return max(memory_mb, 1) * 1024 * 1024


def memory_budget() -> int:
    """Bytes the ranges of one fetcher may hold: :data:`MEMORY_SHARE` of the function's memory."""
    return int(function_memory() * MEMORY_SHARE)


def concurrency_limit(source: Any, range_size: int) -> int:
    """The most ranged GETs an adaptive fetcher keeps in flight over ``source`` (at least 1).

    Bounded by :data:`CEILING`; by the memory budget (the ranges in flight plus the one being parsed); and by
    the client's connection pool less one, so that the fetcher never takes the last connection (another thread
    of the function, a checkpoint for instance, would open one and throw it away afterwards).
    """
    by_memory = memory_budget() // max(range_size, 1) - 1
    return max(1, min(CEILING, by_memory, _pool_size(source) - 1))


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


def _timed_read(source: ByteSource, start: int, end: int) -> tuple[bytes, float]:
    began = time.monotonic()
    data = read_full(source, start, end)
    return data, time.monotonic() - began


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

    With ``prefetch=AUTO_PREFETCH`` (the readers' default) the depth adapts: it starts at
    :data:`INITIAL_DEPTH` ranges in flight and grows each time the caller had to wait for a range
    (more than :data:`STARVED`), to as many GETs as the caller's own time per range divides a GET's time into
    (Little's law, in one step, once per depth: the next growth waits for a range fetched at the new depth), so it stops growing once the caller (parsing, and the work done with the records) is what limits the
    read; it never exceeds :func:`concurrency_limit`, and stops growing once a GET of a whole range runs
    below :data:`SLOWDOWN` of the best rate seen (more connections would only share the same limit). At most ``depth`` ranges
    are then held besides the one the caller works on. With ``range_size=AUTO_RANGE_SIZE`` the first range
    is :data:`FIRST_RANGE` bytes, so the first records come after a short GET.
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
        self._first_size = min(FIRST_RANGE, range_size) if range_size is AUTO_RANGE_SIZE else range_size
        self._prefetch = prefetch
        self._auto = prefetch is AUTO_PREFETCH
        self._limit = concurrency_limit(source, range_size) if self._auto else prefetch
        #: Ranges fetched ahead of the caller (adaptive: grows while the caller waits, up to the limit).
        self.depth = min(INITIAL_DEPTH, self._limit) if self._auto else prefetch
        #: The most ranges that were in flight or waiting at once (for tests and benchmarks).
        self.peak_depth = 0
        #: Seconds the caller spent waiting for ranges in all (for benchmarks: is fetching the limit?).
        self.waited = 0.0
        self._last: tuple[float, int] | None = None  # when the caller last got a range, and its size
        self._settled = 0  # the offset from which a range was fetched at the current depth
        self._rate = self._best_rate = 0.0  # bytes/s of one GET of a whole range: recent (averaged), best
        self._end = end
        self._horizon = horizon
        self._size: int | None = None
        self._pending: deque[tuple[int, Future[Any]]] = deque()
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
            return offset, read_full(self._source, offset, self._next)
        self._fill()
        if not self._pending:
            self.close()
            raise StopIteration
        offset, future = self._pending.popleft()
        waited = 0.0
        try:
            if future.done():
                result = future.result()
            else:
                began = time.monotonic()
                result = future.result()
                waited = time.monotonic() - began
                self.waited += waited
        except BaseException:
            self.close()
            raise
        if not self._auto:
            data: bytes = result
            return offset, data
        data, took = result
        self._adapt(offset, waited, len(data), took)
        return offset, data

    def _adapt(self, offset: int, waited: float, nbytes: int, took: float) -> None:
        # Little's law: a GET takes `took` seconds and the caller works `busy` seconds on a range, so keeping
        # the caller busy takes took / busy GETs in flight. Only a caller that waited asks for more (a caller
        # that never waits is the limit already), and the first range, taken before any other was measured,
        # adds one. More GETs help only while each connection keeps its speed (S3 limits each connection, not
        # their sum): once a whole range comes in well below the best rate seen (the server, the network or
        # this machine's CPU is the limit), the depth stops growing.
        now = time.monotonic()
        previous, self._last = self._last, (now, nbytes)
        if nbytes == self._range_size and took > 0:
            rate = nbytes / took
            self._best_rate = max(self._best_rate, rate)
            self._rate = rate if self._rate == 0.0 else 0.5 * self._rate + 0.5 * rate
        if waited <= STARVED or self.depth >= self._limit or self._rate < SLOWDOWN * self._best_rate:
            return
        if offset < self._settled:  # the last growth is not measured yet: its GETs have not been taken
            return
        want = self.depth + 1
        if previous is not None:
            busy = max(now - waited - previous[0], 1e-6) * nbytes / max(previous[1], 1)
            want = max(want, math.ceil(took / busy))  # in one step: a slow ramp costs whole GET times
        self.depth = min(want, self._limit)
        self._settled = self._next  # grow again only from a range fetched at this depth on
        self._fill()  # the new GETs start now, while the caller works on this range

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
        self._next = min(offset + self._first_size, self._size)
        self._first_size = self._range_size
        return offset

    def _fill(self) -> None:
        # Fixed: the range the caller is about to take, plus `prefetch` more to fetch while it parses that one.
        # Adaptive: `depth` ranges in all, so that memory holds at most depth + 1 (with the one being parsed).
        room = self.depth if self._auto else self._prefetch + 1
        while len(self._pending) < room or not self._pending:
            if self._horizon is not None and self._next >= self._horizon and self._pending:
                return
            offset = self._plan()
            if offset is None:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, min(self._limit, _MAX_WORKERS)),
                    thread_name_prefix="recurse-lambda-prefetch",
                )
            read = _timed_read if self._auto else read_full
            future = self._executor.submit(read, self._source, offset, self._next)
            self._pending.append((offset, future))
            self.peak_depth = max(self.peak_depth, len(self._pending))
