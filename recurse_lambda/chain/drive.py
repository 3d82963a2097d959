"""The loop: drive the user's generator from safe point to safe point, checkpointing now and then, until it
returns (:class:`Finished`) or the budget policy says the next chunk may not fit (:class:`HandOff`).

The loop commits checkpoints itself; it never finishes nor hands off: it returns what happened, and the runner
(:mod:`recurse_lambda.chain.hop`) acts on it. Its decisions at each safe point are :class:`SafePoints`'
(:mod:`~recurse_lambda.chain.points`), which the async loop (:mod:`~recurse_lambda.chain.adrive`) shares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .context import HopContext
from .points import Finished, HandOff, SafePoints, check_marker
from .run import Run

__all__ = ["Finished", "HandOff", "SafePoints", "check_marker", "drive"]


def drive(ctx: HopContext, fn: Callable[..., Any], event: Any, state: Any, run: Run) -> Finished | HandOff:
    """Run ``fn(event, state, run)``: a plain function is one chunk; a generator runs chunk by chunk.

    An ``async def`` function (a coroutine: one chunk; an async generator: chunk by chunk) is driven by
    :mod:`~recurse_lambda.chain.adrive` on an event loop the runner owns; asyncio is imported only then.
    """
    out = fn(event, state, run)
    if not inspect.isgenerator(out):
        if inspect.isasyncgen(out) or inspect.iscoroutine(out):
            from .adrive import adrive

            return adrive(ctx, fn, out, state, run)
        return Finished(out)
    points = SafePoints(ctx, fn, state, run)
    reached = points.safe_points().__next__
    try:
        while True:
            try:
                next(out)
            except StopIteration as stop:
                return points.returned(stop.value)
            except Exception:
                points.raised()
                raise
            handoff = reached()
            if handoff is not None:
                out.close()  # part of the measured hand-off: a reader stops its prefetch here
                return handoff
    finally:
        out.close()
