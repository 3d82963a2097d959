"""The loop's decisions at each safe point, shared by the sync loop (:mod:`~recurse_lambda.chain.drive`) and the
async one (:mod:`~recurse_lambda.chain.adrive`): what the chunk took, whether to checkpoint, whether to hand off.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
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


class SafePoints:
    """The loop's decisions, one call per event of the user's generator; the sync loop (:func:`drive`) and the
    async one (:func:`~recurse_lambda.chain.adrive.adrive`) both call it, so they budget, measure, checkpoint
    and hand off alike. Built when the generator exists, before its first chunk runs."""

    __slots__ = (
        "budget",
        "ctx",
        "every_chunks",
        "every_seconds",
        "hook",
        "marker",
        "now",
        "policy",
        "run",
        "start",
        "state",
        "stats",
        "t",
        "timings",
        "traced",
    )

    def __init__(self, ctx: HopContext, fn: Callable[..., Any], state: Any, run: Run) -> None:
        config, clock, ledger = ctx.config, ctx.clock, ctx.ledger
        warm = ctx.world.warm
        self.ctx, self.state, self.run, self.stats = ctx, state, run, ctx.stats
        self.timings = timings = warm.timings
        self.now = now = clock.now
        self.start = self.t = start = now()
        self.traced = tracing.of(ctx, start)  # None when tracing is off
        whole = ctx.deadline - start
        # What the chain learned survives runtime resets in its progress; a runtime that has measured nothing
        # starts from it. A hand-off writes to the ledger as the claim did, so it takes at least as long.
        seed_warm(warm, ctx.learned(), whole)
        warm.handoff.floor(ctx.ledger_write)
        # Each earlier failed attempt of this hop makes this one more careful: a larger reserve and prediction,
        # and a commit after every chunk, so that the chunk that killed it starts the next attempt first.
        caution = (ctx.attempt or 1) - 1
        self.budget = budget = BudgetState(
            budget=whole, remaining=whole, timings=timings, handoff=warm.handoff, caution=caution
        )
        self.policy = policy = config.policy
        policy(budget)  # before any work: raises ChunkTooLargeError if the chunks seen so far cannot fit
        run.handoff_reserve = handoff_reserve(budget)
        first = FirstChunkMarker(warm, getattr(fn, "__qualname__", repr(fn)))
        check_marker(ctx, first, budget.budget, run.chunk)
        self.marker: FirstChunkMarker | None = first  # None once the first chunk reached a safe point
        self.hook = ctx.world.on_safe_point
        every_chunks = config.checkpoint_every_chunks if ledger is not None else None
        every_seconds = config.checkpoint_every_seconds if ledger is not None else None
        if caution and ledger is not None:
            every_chunks = 1
        if every_seconds is not None:
            # At least four checkpoints per invocation: a timeout then loses a quarter of it at most, and its
            # retry resumes from another point instead of replaying the decisions that ran into the deadline.
            every_seconds = min(every_seconds, budget.budget / 4)
        self.every_chunks: int | None = every_chunks
        self.every_seconds: float | None = every_seconds

    def returned(self, value: Any) -> Finished:
        """The generator returned ``value``: its last chunk is done, and the chain's work with it."""
        if self.marker is not None:
            self.marker.clear()
        d = self.now() - self.t
        self.timings.add(d)
        stats = self.stats
        stats.chunks += 1
        stats.chunk_time += d
        self.run.chunk += 1
        return Finished(value)

    def raised(self) -> None:
        """The generator raised: an error, not a chunk that outlived the invocation."""
        if self.marker is not None:
            self.marker.clear()

    def safe_points(self) -> Generator[HandOff | None, None, None]:
        """One step per safe point the generator reaches (``step = points.safe_points().__next__``; call
        ``step()`` there): measure the chunk, maybe checkpoint; a :class:`HandOff` (whose progress is snapshot
        here, before the caller closes the generator) when the next chunk may not fit, else None.

        A generator rather than a method: its state stays in fast locals between safe points (this is the hot
        path: a method reading and writing attributes costs about 0.5 µs more per safe point).
        """
        ctx, now, budget, stats, run, state = (
            self.ctx,
            self.now,
            self.budget,
            self.stats,
            self.run,
            self.state,
        )
        add, hook, policy, start, t = self.timings.add, self.hook, self.policy, self.start, self.t
        every_chunks, every_seconds = self.every_chunks, self.every_seconds
        traced = self.traced
        since_chunks, last_checkpoint = 0, start
        deadline = ctx.deadline
        if self.marker is not None:  # the first chunk reached a safe point
            self.marker.clear()
            self.marker = None
        while True:
            t2 = now()
            d = t2 - t
            self.t = t = t2
            add(d)
            stats.chunks += 1
            stats.chunk_time += d
            run.chunk += 1
            if hook is not None:
                hook()
            budget.remaining = deadline - t2
            budget.elapsed = t2 - start
            budget.chunks = stats.chunks
            budget.last_chunk = d
            proved = budget.caution and every_chunks == 1 and stats.chunks == 1
            if proved:
                # A retry commits before anything else once its first chunk is done: an attempt that
                # committed nothing is taken to have died in the chunk it resumed at (see killed_chunk),
                # so a crash between this safe point and a hand-off must not look like one.
                ctx.checkpoint(state, run)
                since_chunks, last_checkpoint = 0, now()
                if traced is not None:
                    traced.checkpoint(t2, last_checkpoint)
                self.t = t = last_checkpoint
                budget.remaining = deadline - t
            if policy(budget):
                # The caller closes the generator next, so that whatever the close waits for is part of the
                # measured hand-off and of the reserve kept for it. The state is snapshot first: what
                # `finally`/`with` blocks do to it when the generator closes must not reach the next hop (the
                # result may not depend on the hops).
                t_close = now()
                yield HandOff(ctx.snapshot(state, run), since=t_close)
                return
            if proved:
                yield None
                continue
            since_chunks += 1
            if (every_chunks is not None and since_chunks >= every_chunks) or (
                every_seconds is not None and t2 - last_checkpoint >= every_seconds
            ):
                ctx.checkpoint(state, run)
                since_chunks, last_checkpoint = 0, now()
                if traced is not None:
                    traced.checkpoint(t2, last_checkpoint)
                self.t = t = last_checkpoint  # the checkpoint's own time is not chunk time
            yield None


def handoff_reserve(budget: BudgetState) -> float:
    """The time to keep for a hand-off: the default policy's reserve (``predictive()``), which ``run.within``
    keeps clear of."""
    inflate = float(2 ** min(max(budget.caution, 0), 3))
    return inflate * 1.5 * budget.handoff.estimate_for(budget.budget) + min(0.1, 0.05 * budget.budget)


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
