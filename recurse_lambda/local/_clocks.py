"""Clocks for the simulator. Both enforce the current invocation's deadline: time never passes it unnoticed.

* :class:`VirtualClock` — time moves only when someone advances it (work, waits, latencies): exact and repeatable.
* :class:`WallClock` — work takes real time, but waits (queue delays, Lambda's retry delays, throttle back-off)
  are skipped by moving an offset, so a chain with minute-long retry delays still runs in seconds.
* :class:`CpuClock` — like :class:`WallClock`, but work is measured in the running thread's CPU time, so the
  machine's load does not stretch it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._scheduler import Scheduler


class InvocationKilled(BaseException):
    """The simulated invocation reached its deadline and was stopped there (as Lambda stops a timed-out one).

    A ``BaseException``, so neither the runner nor user code can swallow it with ``except Exception``.
    """


class SimClock:
    """Base of the simulator's clocks: a monotonic scale, an epoch for wall time, and an optional deadline."""

    def __init__(self, epoch: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.epoch = epoch
        self._local = threading.local()  # each invocation (thread) has its own deadline

    @property
    def deadline(self) -> float | None:
        """The deadline of the invocation running on this thread, if any."""
        value: float | None = getattr(self._local, "deadline", None)
        return value

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._local.deadline = value

    def _raw(self) -> float:
        raise NotImplementedError

    def _skip(self, seconds: float) -> None:
        raise NotImplementedError

    def now(self) -> float:
        t = self._raw()
        deadline = self.deadline
        if deadline is not None and t >= deadline:
            raise InvocationKilled(f"deadline {deadline:.3f} reached at {t:.3f}")
        return t

    def peek(self) -> float:
        """The current time, without the deadline check (for the simulator's own bookkeeping)."""
        return self._raw()

    def time(self) -> float:
        return self.epoch + self.now()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; waiting past the deadline stops at the deadline and kills the invocation."""
        if seconds <= 0:
            self.now()
            return
        deadline = self.deadline
        if deadline is not None and self._raw() + seconds >= deadline:
            self._skip(deadline - self._raw())
            raise InvocationKilled(f"deadline {deadline:.3f} reached while waiting")
        self._skip(seconds)

    def advance_to(self, t: float) -> None:
        """Move to ``t`` if it is later (the simulator's scheduler; never past a deadline)."""
        self.sleep(t - self._raw())


class VirtualClock(SimClock):
    """Deterministic time: starts at ``start`` and moves only by :meth:`advance` / :meth:`sleep`."""

    def __init__(self, start: float = 0.0, epoch: float = 1_767_225_600.0) -> None:
        super().__init__(epoch)
        self._t = start
        self.scheduler: Scheduler | None = None  # set by a concurrent simulation while it runs

    def _raw(self) -> float:
        return self._t

    def _skip(self, seconds: float) -> None:
        scheduler = self.scheduler
        if scheduler is not None and scheduler.in_thread():
            scheduler.sleep_until(self._t + max(0.0, seconds))
        else:
            self._t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Spend ``seconds`` of work (what a chunk costs in virtual time)."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"VirtualClock(t={self._t:.3f})"


class _OffsetClock(SimClock):
    """A running time source plus the waits the simulator skipped."""

    def __init__(self, source: Callable[[], float]) -> None:
        super().__init__(time.time() - source())
        self._source = source
        self._offset = 0.0

    def _raw(self) -> float:
        return self._source() + self._offset

    def _skip(self, seconds: float) -> None:
        self._offset += max(0.0, seconds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(offset={self._offset:.3f})"


class WallClock(_OffsetClock):
    """Real elapsed time plus the waits the simulator skipped."""

    def __init__(self) -> None:
        super().__init__(time.monotonic)


class CpuClock(_OffsetClock):
    """The CPU time of the thread that runs the invocations, plus the waits the simulator skipped.

    Work costs what it costs the processor, so other processes' load does not stretch a short simulated timeout
    (the demo runs on busy 2-core machines); time spent waiting for I/O costs nothing. Invocations run one at a
    time on the thread that calls ``Simulator.run``.
    """

    def __init__(self) -> None:
        super().__init__(time.thread_time)
