"""Handing a chain on to its next hop: the guards, the commit, and the invoke (retrying throttles in time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock
from ..core.codec import Envelope
from ..core.invoke import Invoker
from ..core.ledger import ChainStatus
from ..errors import HandOffError, InvokeThrottled, MaxDurationExceeded, MaxHopsExceeded
from . import trace as tracing
from .world import Outcome

if TYPE_CHECKING:
    from ..core.progress import Progress
    from .context import HopContext
    from .run import Run


def invoke_with_backoff(
    invoker: Invoker,
    target: str,
    payload: bytes,
    *,
    clock: Clock,
    deadline: float,
    reserve: Callable[[], float],
) -> float:
    """Invoke ``target``, retrying throttles while more than ``reserve()`` seconds would be left; returns the
    seconds slept. Raises :class:`HandOffError` when it stays throttled: Lambda's retry of the hop sends it again.
    """
    slept, backoff = 0.0, 0.1
    while True:
        try:
            invoker.invoke_async(target, payload)
            return slept
        except InvokeThrottled as throttled:
            wait = throttled.retry_after if throttled.retry_after is not None else backoff
            backoff = min(backoff * 2, 2.0)
            left = deadline - clock.now()
            if left - wait < reserve():
                raise HandOffError(
                    f"the invoke of {target} stayed throttled until the invocation's deadline; Lambda's "
                    "retry of this hop will send it again"
                ) from throttled
            clock.sleep(wait)
            slept += wait


def hand_off(ctx: HopContext, state: Any, run: Run, progress: Progress, since: float) -> dict[str, Any]:
    """Commit ``progress`` (the snapshot at the safe point where the hand-off began, ``since``) as the next hop's,
    and invoke it; raises :class:`MaxHopsExceeded` or :class:`MaxDurationExceeded` (committing the snapshot
    first, so ``resume`` starts from here) when a guard trips."""
    env, config, clock = ctx.env, ctx.config, ctx.clock
    assert env is not None
    if env.hop + 1 >= config.max_hops:
        commit_before_failing(ctx, state, run, progress)
        raise MaxHopsExceeded(
            f"chain {env.chain_id} needs more than max_hops={config.max_hops} hops; raise max_hops if the "
            "work is really that long"
        )
    elapsed = clock.time() - env.started_at
    if elapsed > config.max_duration:
        commit_before_failing(ctx, state, run, progress)
        raise MaxDurationExceeded(
            f"chain {env.chain_id} has run {elapsed:.0f} s, over max_duration={config.max_duration:.0f} s"
        )
    timeouts = int(ctx.learned().get("timeouts", 0) or 0)
    ctx.learn(  # the time left is what a lost hand-off proves it needed more than
        timeouts=timeouts + max((ctx.attempt or 1) - 1, 0), handoff_left=round(ctx.deadline - since, 4)
    )
    progress = ctx.with_learned(progress)
    wire = progress.to_json()
    extra = tracing.hand_off(ctx, since)  # the trace context, when tracing is on
    nxt = Envelope(env.chain_id, env.hop + 1, wire, env.event, env.started_at, env.code_version, extra)
    payload = ctx.codec.encode(nxt)  # spills or raises before anything is committed or invoked
    if ctx.ledger is not None:
        ctx.ledger.hand_off(env.chain_id, hop=env.hop, owner=ctx.request_id, progress=wire, now=clock.time())
    slept = ctx.invoke(payload)
    cost = clock.now() - since
    ctx.stats.handoff_time = cost
    ctx.world.warm.handoff.add(cost - slept)
    return ctx.respond(Outcome.HANDED_OFF, ChainStatus.RUNNING, next_hop=env.hop + 1)


def commit_before_failing(ctx: HopContext, state: Any, run: Run, progress: Progress | None = None) -> None:
    """A guard trips at a safe point, where the state is consistent: keep it, so ``resume`` starts from here."""
    if ctx.ledger is not None:
        ctx.checkpoint(state, run, progress)
