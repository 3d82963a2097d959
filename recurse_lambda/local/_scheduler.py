"""Concurrency in virtual time: invocations on threads, run one at a time in the order their time comes.

Each invocation runs on its own thread. A thread that spends virtual time (``VirtualClock.advance``/``sleep``)
hands control back to the scheduler, which resumes whatever is due first: another invocation's wake-up or a new
delivery. Exactly one thread runs at any moment, so a run is as deterministic as a single-threaded one, yet two
invocations of the same hop really overlap in (virtual) time: a duplicate meets a live owner.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._clocks import VirtualClock


class Scheduler:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, threading.Event | Callable[[], None]]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._handed_back = threading.Event()
        self._local = threading.local()
        self._error: BaseException | None = None

    def at(self, when: float, start: Callable[[], None]) -> None:
        """Start ``start`` on a new thread at virtual time ``when``."""
        self._push(when, start)

    def _push(self, when: float, item: threading.Event | Callable[[], None]) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, item))

    def in_thread(self) -> bool:
        return bool(getattr(self._local, "active", False))

    def sleep_until(self, when: float) -> None:
        """Called by an invocation thread: resume at ``when``, after everything due earlier has run."""
        with self._lock:
            nothing_earlier = not self._heap or self._heap[0][0] > when
        if nothing_earlier:  # no one else is due first: no need to switch threads
            self.clock._t = max(self.clock._t, when)
            return
        wake = threading.Event()
        self._push(when, wake)
        self._handed_back.set()
        wake.wait()

    def run(self) -> None:
        """Drive everything scheduled until nothing is left (called from the simulator's own thread)."""
        while True:
            with self._lock:
                if not self._heap:
                    return
                when, _, item = heapq.heappop(self._heap)
            self.clock._t = max(self.clock._t, when)
            self._handed_back.clear()
            if isinstance(item, threading.Event):
                item.set()
            else:
                threading.Thread(target=self._body, args=(item,), daemon=True).start()
            self._handed_back.wait()
            if self._error is not None:
                error, self._error = self._error, None
                raise error

    def _body(self, start: Callable[[], None]) -> None:
        self._local.active = True
        try:
            start()
        except BaseException as exc:  # a bug in the simulator itself: surface it in the driving thread
            self._error = exc
        finally:
            self._handed_back.set()
