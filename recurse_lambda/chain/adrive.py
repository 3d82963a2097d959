"""The async loop: drive an ``async def`` handler on an event loop the runner owns, with the sync loop's decisions.

An async generator runs chunk by chunk: each ``yield`` is a safe point, and :class:`~recurse_lambda.chain.drive.
SafePoints` (the object the sync loop calls) measures, checkpoints and decides the hand-off there. Python forbids
``return value`` in an async generator, so its result is ``run.result`` when it ends. A coroutine
(``async def`` without ``yield``) is one chunk, like a plain function.

The event loop belongs to the warm container (one per :class:`~recurse_lambda.chain.warm.WarmState`, kept in
this module): clients bound to a loop (aiobotocore, aiohttp sessions) can be reused from one invocation to the
next. Tasks an invocation leaves running are cancelled when it ends, so no work of one invocation runs inside
another. A runtime reset (a new WarmState) gets a new loop; the old one is closed when its WarmState goes.

This module is imported, and asyncio with it, only when an async handler runs.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from ..errors import ConfigurationError
from .context import HopContext
from .points import Finished, HandOff, SafePoints
from .run import Run
from .warm import WarmState


class Loops:
    """The event loop of each warm container, made on first use and closed when its WarmState is collected."""

    def __init__(self) -> None:
        self._by_warm: weakref.WeakKeyDictionary[WarmState, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, warm: WarmState) -> asyncio.AbstractEventLoop:
        loop = self._by_warm.get(warm)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._by_warm[warm] = loop
            weakref.finalize(warm, loop.close)
        return loop


LOOPS = Loops()


def adrive(
    ctx: HopContext,
    fn: Callable[..., Any],
    out: Any,
    state: Any,
    run: Run,
) -> Finished | HandOff:
    """Drive ``out`` (what ``fn(event, state, run)`` returned: a coroutine or an async generator) to its end or
    to a hand-off."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if inspect.iscoroutine(out):
            out.close()
        raise ConfigurationError(
            "an async handler runs on the runner's own event loop, but this thread is already running one: "
            "call the handler from synchronous code (for example `await asyncio.to_thread(handler, event, context)`)"
        )
    loop = LOOPS.of(ctx.world.warm)
    if inspect.iscoroutine(out):
        main: Coroutine[Any, Any, Finished | HandOff] = _one(out)
    else:
        main = _chunks(SafePoints(ctx, fn, state, run), out, run)
    try:
        result = loop.run_until_complete(main)
    except Exception:
        _cancel_leftovers(loop)
        raise
    _cancel_leftovers(loop)  # not after a BaseException (a killed invocation): its runtime is reset
    return result


async def _one(out: Coroutine[Any, Any, Any]) -> Finished:
    return Finished(await out)


async def _chunks(points: SafePoints, out: AsyncGenerator[Any, Any], run: Run) -> Finished | HandOff:
    step, reached = out.__anext__, points.safe_points().__next__
    try:
        while True:
            try:
                await step()
            except StopAsyncIteration:
                return points.returned(run.result)
            except Exception:
                points.raised()
                raise
            if run.result is not None:
                raise ConfigurationError(
                    "run.result was set before a yield: set it just before the async generator ends (a hand-off "
                    "at this safe point would lose it)"
                )
            handoff = reached()
            if handoff is not None:
                await out.aclose()  # part of the measured hand-off: a reader stops its prefetch here
                return handoff
    finally:
        await out.aclose()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks the invocation started and left running, and wait for them to end."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
