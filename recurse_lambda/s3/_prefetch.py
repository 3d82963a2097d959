"""Consecutive byte ranges of a source, the next ones fetched in the background while one is parsed.

The GETs run on a thread pool (one per range, :class:`~._streamed.StreamedGet`); with the automatic range
size their bodies are read into reused buffers (:mod:`._body`) and handed to the caller as they arrive.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from ..errors import S3Error
from ._body import BufferPool
from ._streamed import StreamedGet

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
#: With the automatic range size, each GET's body is read into reused buffers of this size (where the
#: source can: ``iter_pieces``), each handed on as soon as it is full: the caller starts on a range before
#: its end is in, and a range in flight holds only the pieces that came (``_body.BufferPool``).
PIECE = 2 * 1024 * 1024
#: The caller gets those pieces in copies of this size, the line parser's own piece (``PARSE_PIECE``): the
#: copy the parser would make anyway, and a buffer short-lived enough for the allocator to reuse at once.
DELIVERY = 256 * 1024


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


def iter_exact_pieces(
    source: ByteSource, start: int, end: int, pool: BufferPool | None
) -> Generator[bytes | memoryview, None, None]:
    """Exactly the bytes ``[start, end)``: as they arrive, in views of ``pool``'s buffers, where the source can
    read so (``iter_pieces``, one GET read piece by piece); else read whole, as one ``bytes``.

    A short answer is completed by further GETs from where it stopped, as :func:`read_full` does; an answer
    longer than asked, or a GET that brings nothing before the end, is an :class:`S3Error`.
    """
    reader = getattr(source, "iter_pieces", None)
    if reader is None or pool is None:
        yield read_full(source, start, end)
        return
    at = start
    while at < end:
        before = at
        for view in reader(at, end, pool):
            if len(view) > end - at:
                raise S3Error(f"{_describe(source)}: asked for {end - at} bytes at {at}, got more")
            at += len(view)
            yield view
        if at == before:
            raise S3Error(f"{_describe(source)}: no data at offset {at} before the end ({end})")


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
    background read is raised in the caller's thread, as the same exception, once the bytes before it are
    delivered. ``close`` cancels what has not started, stops what has after the piece it is reading, and
    leaves no thread behind.

    With ``range_size=AUTO_RANGE_SIZE`` the first range is :data:`FIRST_RANGE` bytes, so the first records
    come after a short GET, and each GET's body is read in pieces of :data:`PIECE` bytes into reused buffers
    and handed on as they arrive, in copies of :data:`DELIVERY` bytes (the same bytes at the same offsets, in
    more, smaller steps). An explicit size delivers whole ranges, one ``bytes`` each.

    With ``prefetch=AUTO_PREFETCH`` (the readers' default) the depth adapts: it starts at
    :data:`INITIAL_DEPTH` GETs ahead of the one the caller reads, and grows whenever the caller is about to
    wait for data (for more than :data:`STARVED`), at once, to as many GETs as the caller's own time per
    range divides a GET's time into (Little's law, in one step; the next growth waits until a range fetched
    at the new depth has come). So it stops growing once the caller (parsing, and the work done with the
    records) is what limits the read. It never exceeds :func:`concurrency_limit`, and stops growing once a
    GET of a whole range runs below :data:`SLOWDOWN` of the best rate seen (more connections would only
    share the same limit).
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
        automatic = isinstance(range_size, _Auto)  # AUTO_RANGE_SIZE (tests make smaller ones)
        self._first_size = min(FIRST_RANGE, range_size) if automatic else range_size
        self._pool = BufferPool(PIECE) if automatic else None  # None: whole ranges
        self._view: memoryview | None = None  # the pooled piece being handed on, from `_view_at`
        self._view_offset = self._view_at = 0
        self._prefetch = prefetch
        self._auto = prefetch is AUTO_PREFETCH
        self._limit = concurrency_limit(source, range_size) if self._auto else prefetch
        #: GETs kept ahead of the one the caller reads (adaptive: grows while the caller waits, to the limit).
        self.depth = min(INITIAL_DEPTH, self._limit) if self._auto else prefetch
        #: The most GETs that were ahead of the caller at once (for tests and benchmarks).
        self.peak_depth = 0
        #: Seconds the caller spent waiting for data in all (for benchmarks: is fetching the limit?).
        self.waited = 0.0
        self._busy = 0.0  # seconds the caller spent on what it got, since the first piece
        self._taken = 0  # bytes the caller got, since the first piece (they and _busy: its rate)
        self._returned: float | None = None  # when the caller last got a piece
        self._settled = 0  # the offset from which a range was fetched at the current depth
        self._rate = self._best_rate = 0.0  # bytes/s of one GET of a whole range: recent (averaged), best
        self._took = 0.0  # seconds a GET of a whole range takes (the latest), 0 until one is known
        self._end = end
        self._horizon = horizon
        self._size: int | None = None
        self._head: StreamedGet | None = None  # the GET the caller reads from
        self._pending: deque[tuple[StreamedGet, Future[None]]] = deque()  # the GETs after it, in order
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
        now = time.monotonic()
        if self._returned is not None:
            self._busy += now - self._returned
        if self._view is not None:
            return self._hand_on()
        try:
            while True:
                if self._head is None and not self._advance():
                    self.close()
                    raise StopIteration
                head = self._head
                assert head is not None
                if not head.ready():
                    self._wait(head)
                offset = head.offset
                data = head.take()
                if data is not None:
                    break
                self._finished(head)
        except BaseException:
            self.close()
            raise
        if isinstance(data, memoryview):
            self._view, self._view_offset, self._view_at = data, offset, 0
            return self._hand_on()
        self._taken += len(data)
        self._returned = time.monotonic()
        return offset, data

    def _hand_on(self) -> tuple[int, bytes]:
        # The next DELIVERY bytes of the pooled piece, copied; the buffer goes back once all is handed on.
        view, at = self._view, self._view_at
        assert view is not None and self._pool is not None
        end = min(at + DELIVERY, len(view))
        data = bytes(view[at:end])
        if end == len(view):
            buffer = view.obj
            self._view = None
            view.release()
            assert isinstance(buffer, bytearray)
            self._pool.give(buffer)
        self._view_at = end
        self._taken += len(data)
        self._returned = time.monotonic()
        return self._view_offset + at, data

    def _advance(self) -> bool:
        """Make the next GET the head (starting GETs to keep ``depth`` ahead); whether there is one."""
        self._fill(need=True)
        if not self._pending:
            return False
        self._head = self._pending.popleft()[0]
        self._fill(need=False)
        return True

    def _wait(self, head: StreamedGet) -> None:
        began = time.monotonic()
        if self._auto and not head.wait(STARVED):
            self._grow(head.offset, began)  # the caller must wait: the GETs it lacks start now, not after
        head.wait(None)
        self.waited += time.monotonic() - began

    def _finished(self, head: StreamedGet) -> None:
        # A whole GET came: its time measures what the next growth needs (before any whole range, the first
        # small range's time scaled up to a whole range stands in: an upper bound, as if bandwidth made it slow).
        self._head = None
        if not self._auto or head.took <= 0:
            return
        nbytes = head.end - head.start
        if nbytes == self._range_size:
            rate = nbytes / head.took
            self._best_rate = max(self._best_rate, rate)
            self._rate = rate if self._rate == 0.0 else 0.5 * self._rate + 0.5 * rate
            self._took = head.took
        elif self._took == 0.0 and nbytes:
            self._took = head.took * self._range_size / nbytes

    def _grow(self, offset: int, now: float) -> None:
        # Little's law: a GET takes `took` seconds and the caller works `busy` seconds on a range, so keeping
        # the caller busy takes took / busy GETs in flight. Only a caller about to wait asks for more (a
        # caller that never waits is the limit already): at least one more, in one step (a slow ramp costs
        # whole GET times), and as it starts to wait, so the new GETs overlap the wait. More GETs help only
        # while each connection keeps its speed (S3 limits each connection, not their sum): once a whole
        # range comes in well below the best rate seen (the server, the network or this machine's CPU is the
        # limit), the depth stops growing.
        if self.depth >= self._limit or self._took == 0.0 or not self._taken:
            return  # at the limit, or nothing known yet of a GET or of the caller
        if offset < self._settled or self._rate < SLOWDOWN * self._best_rate:
            return  # the last growth is not measured yet (its GETs are still coming), or more would not help
        busy = max(self._busy, 1e-6) * self._range_size / self._taken  # the caller's time per whole range
        self.depth = min(max(self.depth + 1, math.ceil(self._took / busy)), self._limit)
        self._settled = self._next  # grow again only once a range fetched at this depth has come
        self._fill(need=False)

    def close(self) -> None:
        """Stop fetching: cancel queued GETs, stop running ones after their current piece, join the threads."""
        self._closed = True
        if self._head is not None:
            self._head.cancel()
        for get, future in self._pending:
            get.cancel()
            future.cancel()
        self._pending.clear()
        self._head = self._view = self._pool = None  # the buffers go now, whatever keeps the fetcher
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

    def _fill(self, *, need: bool) -> None:
        # `depth` GETs ahead of the head (fixed: `prefetch`); past the horizon, one only when the caller
        # needs it now (`need`: it has read everything else).
        while len(self._pending) < self.depth or (need and not self._pending):
            if self._horizon is not None and self._next >= self._horizon and (self._pending or not need):
                return
            offset = self._plan()
            if offset is None:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, min(self._limit, _MAX_WORKERS)),
                    thread_name_prefix="recurse-lambda-prefetch",
                )
            get = StreamedGet(offset, self._next)
            pieces = iter_exact_pieces(self._source, offset, self._next, self._pool)
            self._pending.append((get, self._executor.submit(get.run, pieces)))
            self.peak_depth = max(self.peak_depth, len(self._pending))
