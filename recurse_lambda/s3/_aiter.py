"""``abatches``: a reader's batches as an async iterator that never blocks the event loop.

The blocking iteration (``reader.batches(...)``: ranged GETs, decompression, parsing) runs on a thread of its
own, at most ``depth`` batches ahead of the consumer; the loop only takes finished batches. Closing the
iterator (``aclose()``, leaving ``async with``, or dropping it) stops the thread at its next batch, which closes
the reader and its prefetching GETs; ``aclose()`` returns once they have stopped, so a hand-off's measured
time includes them, as it does for the sync readers.

This module imports asyncio: it is imported only when an async reader is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

__all__ = ["ABatches", "abatches"]


class _Batching(Protocol[T_co]):
    def batches(self, records: int | None = None, *, max_bytes: int | None = None) -> Iterator[T_co]: ...


class _Feed(Generic[T]):
    """What the producing thread shares with the iterator (the thread holds no reference to the iterator, so
    dropping the iterator stops the thread)."""

    def __init__(self, batches: Iterator[T], loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self.batches = batches
        self.loop = loop
        self.slots = threading.Semaphore(depth)
        self.stop = threading.Event()
        self.items: deque[tuple[str, Any]] = deque()  # touched on the loop's thread only
        self.waiter: asyncio.Future[None] | None = None
        self.exited: asyncio.Future[None] = loop.create_future()

    def produce(self) -> None:
        """The thread: take a slot, then the next batch, and hand it to the loop; close the batches at the end."""
        try:
            while True:
                while not self.slots.acquire(timeout=0.05):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                try:
                    batch = next(self.batches)
                except StopIteration:
                    self.deliver(("end", None))
                    return
                except BaseException as exc:  # delivered to the consumer, who re-raises it
                    self.deliver(("error", exc))
                    return
                self.deliver(("batch", batch))
        finally:
            close = getattr(self.batches, "close", None)
            if close is not None:
                close()  # closes the reader: its prefetch stops
            self.deliver(None)

    def deliver(self, item: tuple[str, Any] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.put, item)

    def put(self, item: tuple[str, Any] | None) -> None:
        if item is None:
            if not self.exited.done():
                self.exited.set_result(None)
        else:
            self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ABatches(Generic[T]):
    """``async for batch in abatches(reader, n)``: the reader's batches, read on a thread, ``depth`` ahead."""

    def __init__(self, reader: _Batching[T], records: int | None, max_bytes: int | None, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        self._batches = reader.batches(records, max_bytes=max_bytes)  # checks the arguments now
        self._depth = depth
        self._feed: _Feed[T] | None = None
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        feed = self._feed
        if feed is None:
            feed = self._feed = _Feed(self._batches, asyncio.get_running_loop(), self._depth)
            threading.Thread(target=feed.produce, name="recurse-lambda-abatches", daemon=True).start()
        while not feed.items:
            feed.waiter = feed.loop.create_future()
            try:
                await feed.waiter
            finally:
                feed.waiter = None
        kind, value = feed.items.popleft()
        feed.slots.release()
        if kind == "batch":
            return value  # type: ignore[no-any-return]
        self._finished = True
        if kind == "error":
            raise value
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop reading: the thread stops at its next batch and closes the reader; returns once it has."""
        self._finished = True
        feed = self._feed
        if feed is None:
            self._batches_close()
            return
        feed.stop.set()
        await asyncio.shield(feed.exited)

    def _batches_close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.stop.set()  # dropped without aclose(): the thread stops at its next batch


def abatches(
    reader: _Batching[T], records: int | None = None, *, max_bytes: int | None = None, depth: int = 2
) -> ABatches[T]:
    """``reader.batches(records, max_bytes=...)`` as an async iterator that never blocks the event loop."""
    return ABatches(reader, records, max_bytes, depth)
