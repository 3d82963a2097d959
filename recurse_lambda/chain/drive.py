"""The loop: drive the user's generator from safe point to safe point, checkpointing now and then, until it
returns (:class:`Finished`) or the budget policy says the next chunk may not fit (:class:`HandOff`).

The loop commits checkpoints itself; it never finishes nor hands off: it returns what happened, and the runner
(:mod:`recurse_lambda.chain.hop`) acts on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.policy import BudgetState
from ..core.progress import Progress
from ..errors import ChunkTooLargeError
from . import trace as tracing
from .context import HopContext
from .run import Run
from .warm import FirstChunkMarker, killed_chunk_error, seed_warm


@dataclass(frozen=True, slots=True)
class Finished:
    """The chain's work returned ``result``: the runner finishes the chain (or the shard) with it."""

    result: Any


@dataclass(frozen=True, slots=True)
class HandOff:
    """The next chunk may not fit: hand ``progress`` (the snapshot at the safe point) on to the next hop.

    ``since`` is when the hand-off began (the generator's close is part of it).
    """

    progress: Progress
    since: float


def drive(ctx: HopContext, fn: Callable[..., Any], event: Any, state: Any, run: Run) -> Finished | HandOff:
    """Run ``fn(event, state, run)``: a plain function is one chunk; a generator runs chunk by chunk."""
    out = fn(event, state, run)
    if not inspect.isgenerator(out):
        return Finished(out)
    config, clock, stats, ledger = ctx.config, ctx.clock, ctx.stats, ctx.ledger
    warm = ctx.world.warm
    timings = warm.timings
    now = clock.now
    start = t = now()
    traced = tracing.of(ctx, start)  # None when tracing is off
    whole = ctx.deadline - start
    # What the chain learned survives runtime resets in its progress; a runtime that has measured nothing
    # starts from it. A hand-off writes to the ledger as the claim did, so it takes at least as long.
    seed_warm(warm, ctx.learned(), whole)
    warm.handoff.floor(ctx.ledger_write)
    # Each earlier failed attempt of this hop makes this one more careful: a larger reserve and prediction,
    # and a commit after every chunk, so that the chunk that killed it starts the next attempt first.
    caution = (ctx.attempt or 1) - 1
    budget = BudgetState(
        budget=whole, remaining=whole, timings=timings, handoff=warm.handoff, caution=caution
    )
    policy = config.policy
    policy(budget)  # before any work: raises ChunkTooLargeError if the chunks seen so far cannot fit
    first = FirstChunkMarker(warm, getattr(fn, "__qualname__", repr(fn)))
    check_marker(ctx, first, budget.budget, run.chunk)
    marker: FirstChunkMarker | None = first  # None once the first chunk reached a safe point
    hook = ctx.world.on_safe_point
    every_chunks = config.checkpoint_every_chunks if ledger is not None else None
    every_seconds = config.checkpoint_every_seconds if ledger is not None else None
    if caution and ledger is not None:
        every_chunks = 1
    if every_seconds is not None:
        # At least four checkpoints per invocation: a timeout then loses a quarter of it at most, and its
        # retry resumes from another point instead of replaying the decisions that ran into the deadline.
        every_seconds = min(every_seconds, budget.budget / 4)
    since_chunks, last_checkpoint = 0, start
    try:
        while True:
            try:
                next(out)
            except StopIteration as stop:
                if marker is not None:
                    marker.clear()
                d = now() - t
                timings.add(d)
                stats.chunks += 1
                stats.chunk_time += d
                run.chunk += 1
                return Finished(stop.value)
            except Exception:
                if marker is not None:
                    marker.clear()  # an error, not a chunk that outlived the invocation
                raise
            if marker is not None:  # the first chunk reached a safe point
                marker.clear()
                marker = None
            t2 = now()
            d = t2 - t
            t = t2
            timings.add(d)
            stats.chunks += 1
            stats.chunk_time += d
            run.chunk += 1
            if hook is not None:
                hook()
            budget.remaining = ctx.deadline - t2
            budget.elapsed = t2 - start
            budget.chunks = stats.chunks
            budget.last_chunk = d
            proved = caution and every_chunks == 1 and stats.chunks == 1
            if proved:
                # A retry commits before anything else once its first chunk is done: an attempt that
                # committed nothing is taken to have died in the chunk it resumed at (see killed_chunk),
                # so a crash between this safe point and a hand-off must not look like one.
                ctx.checkpoint(state, run)
                since_chunks, last_checkpoint = 0, now()
                if traced is not None:
                    traced.checkpoint(t2, last_checkpoint)
                t = last_checkpoint
                budget.remaining = ctx.deadline - t
            if policy(budget):
                # Close the generator first (a reader stops its prefetch here), so that whatever the close
                # waits for is part of the measured hand-off and of the reserve kept for it.
                t_close = now()
                # Snapshot the state at this safe point first: what `finally`/`with` blocks do to it when
                # the generator closes must not reach the next hop (the result may not depend on the hops).
                progress = ctx.snapshot(state, run)
                out.close()
                return HandOff(progress, since=t_close)
            if proved:
                continue
            since_chunks += 1
            if (every_chunks is not None and since_chunks >= every_chunks) or (
                every_seconds is not None and t2 - last_checkpoint >= every_seconds
            ):
                ctx.checkpoint(state, run)
                since_chunks, last_checkpoint = 0, now()
                if traced is not None:
                    traced.checkpoint(t2, last_checkpoint)
                t = last_checkpoint  # the checkpoint's own time is not chunk time
    finally:
        out.close()


def check_marker(ctx: HopContext, marker: FirstChunkMarker, budget: float, chunk: int) -> None:
    """Fail with ChunkTooLargeError when earlier attempts' first chunk never reached a safe point.

    The marker cannot tell a timeout from a crash, so only the last attempt gives up: the last by the ledger's
    count, or by the marker's own count (stateless mode, or a ledger's count that another container made).
    A delivery past the last attempt (a resend of a dead hop) also reads the proof from the ledger's record.
    """
    env, attempt = ctx.env, ctx.attempt
    assert env is not None
    seen, previous_budget = marker.previous(env.chain_id, env.hop)
    max_attempts = ctx.config.max_attempts
    last_by_ledger = attempt is not None and attempt >= max_attempts
    if seen and (last_by_ledger or seen >= max_attempts - 1):
        marker.clear()
        raise ChunkTooLargeError(
            previous_budget,
            previous_budget,
            f"the first chunk of hop {env.hop} did not reach a safe point within a whole invocation "
            f"({previous_budget:.3f} s) on {seen} earlier attempt(s), which timed out or crashed: it is "
            f"chunk {chunk} of the chain",
            chunk=chunk,
        )
    if attempt is not None and attempt > max_attempts and ctx.record is not None:
        proven = killed_chunk_error(ctx.record.progress, env.hop, attempt - 1)
        if proven is not None:
            raise proven
    marker.set(env.chain_id, env.hop, budget, attempts=seen + 1)
