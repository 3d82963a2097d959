"""Time, injected. Logic never calls ``time.monotonic`` or ``time.sleep`` directly: it asks a :class:`Clock`
(the protocol is in :mod:`recurse_lambda.core.ports`)."""

from __future__ import annotations

import time

from .ports import Clock

__all__ = ["Clock", "SystemClock"]


class SystemClock:
    """The real clock: ``time.monotonic`` and ``time.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"
