"""The runner: one invocation of a chain, from claim to hand-off (DESIGN §4–§6).

A :class:`Hop` is built per invocation and reads top to bottom: it opens the event (decodes the envelope, or
builds hop 0 from a first event), **claims** its hop in the ledger, **drives** the user's generator
(:mod:`~recurse_lambda.chain.drive`), and **ends** on what the drive returned: it finishes the chain, hands off
to the next hop (:mod:`~recurse_lambda.chain.handoff`), fails the chain for good, or re-raises so Lambda retries
it from the last committed checkpoint. Deliveries that do no work go to :mod:`~recurse_lambda.chain.deliveries`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from ..config import ChainConfig
from ..core.codec import Envelope
from ..core.ledger import ChainRecord, ChainStatus
from ..core.progress import Progress
from ..core.state_codec import load_state, nonfinite_path
from ..errors import (
    ConfigurationError,
    EnvelopeError,
    LedgerConflict,
    LedgerError,
    LostLeaseError,
    MaxDurationExceeded,
    RecurseLambdaError,
)
from ..shards.job import drive_job, shard_failed, shard_spec, shard_succeeded, shard_view, user_event
from . import trace as tracing
from .context import HopContext, error_text
from .deliveries import abandoned, not_claimed, rejected
from .drive import Finished, HandOff, drive
from .first import first_envelope
from .handoff import hand_off
from .report import bind_log_fields, chain_ended, observe_invocation, unbind_log_fields
from .route import Kind, Route
from .run import Run
from .warm import learned_of, lost_hand_off
from .world import Outcome, World

log = logging.getLogger("recurse_lambda")

Handler = Callable[..., Any]


class Hop:
    """One invocation of a chain: ``Hop(fn, config, context, world).run(route)``."""

    def __init__(self, fn: Handler, config: ChainConfig, context: Any, world: World) -> None:
        self.fn = fn
        self.ctx = HopContext.begin(config, world, context)

    def run(self, route: Route) -> dict[str, Any]:
        """Run the invocation for an event routed as ``ABANDONED``, ``ENVELOPE`` or ``FIRST``."""
        fields = bind_log_fields(self.ctx)
        try:
            return self._run(route)
        finally:
            try:
                self.ctx.stats.ended = self.ctx.clock.now()  # raises InvocationKilled past the deadline
                observe_invocation(self.ctx)
            finally:
                tracing.end(self.ctx)
                unbind_log_fields(fields)

    def _run(self, route: Route) -> dict[str, Any]:
        ctx, config = self.ctx, self.ctx.config
        if route.kind is Kind.ABANDONED:
            return abandoned(ctx, route.event)
        if config.shards is not None and ctx.ledger is None:
            return rejected(
                ctx,
                route.event,
                ConfigurationError("a sharded job needs a ledger: its shards are joined there"),
            )
        try:
            env = self._open(route)
        except (EnvelopeError, ConfigurationError) as exc:
            return rejected(ctx, route.event, exc)
        except Exception as exc:  # chain_id= or initial_state= refused the event: it would on every retry...
            if isinstance(exc, RecurseLambdaError) and not config.is_permanent(exc):
                raise  # ...unless it is a transient library error (an S3 HEAD for the key, say): Lambda retries
            return rejected(
                ctx,
                route.event,
                ConfigurationError(f"the first event cannot start a chain: {error_text(exc)}"),
            )
        ctx.identify(env)
        tracing.begin(ctx, route.event)
        refused = self._claim(env, first=route.kind is Kind.FIRST)
        if refused is not None:
            return refused
        assert ctx.env is not None
        return self._drive(ctx.env)

    def _open(self, route: Route) -> Envelope:
        ctx = self.ctx
        if route.kind is Kind.ENVELOPE:
            return ctx.codec.decode(route.event)
        return first_envelope(
            ctx.config,
            route.event,
            request_id=ctx.request_id,
            stateful=ctx.ledger is not None,
            now=ctx.clock.time(),
            code_version=ctx.code_version,
        )

    # ------------------------------------------------------------------ claim

    def _claim(self, env: Envelope, *, first: bool) -> dict[str, Any] | None:
        """Claim the hop (in stateless mode: take the envelope as it is); a response when the claim was refused."""
        ctx = self.ctx
        ledger, clock = ctx.ledger, ctx.clock
        if ledger is None:
            ctx.progress = Progress.from_json(env.progress)
            return None
        if env.hop == 0 and first:
            ledger.start(  # a LedgerError here propagates: Lambda retries the first event
                env.chain_id,
                progress=env.progress,
                event=env.event,
                now=clock.time(),
                function=ctx.target(),
            )
        try:
            t_claim = clock.now()
            record = ledger.claim(
                env.chain_id,
                hop=env.hop,
                owner=ctx.request_id,
                now=clock.time(),
                lease_until=ctx.lease_until(),
            )
            ctx.ledger_write = clock.now() - t_claim
            tracing.span(ctx, "claim", t_claim, t_claim + ctx.ledger_write)
        except LedgerConflict as conflict:
            return not_claimed(ctx, self._lost_hand_off(conflict.current))
        except LedgerError as exc:  # throttled, table missing, unreachable: Lambda retries the delivery
            ctx.stats.outcome = Outcome.RETRYING
            log.warning(
                "chain %s hop %d: the ledger failed (%s); Lambda will retry", env.chain_id, env.hop, exc
            )
            raise
        ctx.attempt, ctx.record = record.attempts, record
        progress = Progress.from_json(record.progress)
        sent = learned_of(env.progress)
        if int(sent.get("timeouts", 0) or 0) > int(learned_of(record.progress).get("timeouts", 0) or 0):
            progress = progress.with_(learned=sent)  # a resent hand-off: it says what the lost one learned
        ctx.progress = progress
        ctx.identify(
            Envelope(
                env.chain_id, env.hop, progress.to_json(), record.event, record.started_at, env.code_version
            )
        )
        return None

    def _lost_hand_off(self, current: ChainRecord | None) -> ChainRecord | None:
        """A retry finding its own hand-off committed but not invoked will resend it (``not_claimed``): the
        hand-off outlived the invocation, so the resent envelope tells the next hop to plan for a slower one."""
        env = self.ctx.env
        if (
            env is None
            or current is None
            or current.status is not ChainStatus.RUNNING
            or current.hop != env.hop + 1
            or current.owner is not None
            or current.handed_off_by != self.ctx.request_id
        ):
            return current
        learned = lost_hand_off(learned_of(current.progress))
        progress = Progress.from_json(current.progress).with_(learned=learned)
        return dataclasses.replace(current, progress=progress.to_json())

    # ------------------------------------------------------------------ drive

    def _drive(self, env: Envelope) -> dict[str, Any]:
        ctx, config = self.ctx, self.ctx.config
        ctx.stats.attempt = ctx.attempt
        progress = ctx.carried()
        shard = shard_spec(env.event)
        run = Run(
            chain_id=env.chain_id,
            hop=env.hop,
            attempt=ctx.attempt,
            request_id=ctx.request_id,
            chunk=progress.chunks,
            started_at=env.started_at,
            deadline=ctx.deadline,
            clock=ctx.clock,
            context=ctx.lambda_context,
            pins={k: dict(v) for k, v in progress.pins.items()},
            world=ctx.world,
        )
        try:
            state = load_state(config.state, progress.state)
            if ctx.clock.time() - env.started_at > config.max_duration:
                raise MaxDurationExceeded(
                    f"chain {env.chain_id} has run {ctx.clock.time() - env.started_at:.0f} s, over "
                    f"max_duration={config.max_duration:.0f} s"
                )
            guard = ctx.world.recursion_guard
            if env.hop == 0 and guard is not None:
                guard(
                    ctx.lambda_context
                ).check()  # RecursiveLoop must be Allow, or Lambda stops the chain at ~16
            outcome: Finished | HandOff | dict[str, Any]
            if shard is not None:
                run.shard = shard_view(shard, run)
                outcome = drive(ctx, self.fn, user_event(env.event), state, run)
            elif config.shards is not None:
                outcome = drive_job(ctx, state, run)
            else:
                outcome = drive(ctx, self.fn, env.event, state, run)
            # ------------------------------------------------------------------ end
            if isinstance(outcome, Finished):
                return self._finish(outcome.result, state, run)
            if isinstance(outcome, HandOff):
                return hand_off(ctx, state, run, outcome.progress, outcome.since)
            return outcome
        except LostLeaseError:
            log.warning("chain %s hop %d: lost its lease; stopping without hand-off", env.chain_id, env.hop)
            return ctx.respond(Outcome.LOST_LEASE, ChainStatus.RUNNING)
        except Exception as exc:
            return self._on_error(exc)

    # ------------------------------------------------------------------ end

    def _finish(self, result: Any, state: Any, run: Run) -> dict[str, Any]:
        ctx = self.ctx
        env = ctx.env
        assert env is not None
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            where = nonfinite_path(result, "result")
            if where is not None:  # JSON has no NaN or Infinity: the ledger, the response and strict parsers
                raise ConfigurationError(
                    f"the chain's result must be JSON: {where} is NaN or infinite, and JSON has neither "
                    "(return None, or a string such as 'Infinity', instead)"
                ) from exc
            raise ConfigurationError(f"the chain's result must be JSON-serialisable: {exc}") from exc
        record = None
        if ctx.ledger is not None:
            record = ctx.ledger.finish(
                env.chain_id,
                hop=env.hop,
                owner=ctx.request_id,
                progress=ctx.snapshot(state, run).to_json(),
                result=result,
                now=ctx.clock.time(),
            )
        chain_ended(ctx, ChainStatus.SUCCEEDED, record)
        shard = shard_spec(env.event)
        if shard is not None:
            shard_succeeded(ctx, shard)  # count it in the job; the last one wakes the job to reduce
        return ctx.respond(Outcome.SUCCEEDED, ChainStatus.SUCCEEDED, result=result)

    def _on_error(self, exc: Exception) -> dict[str, Any]:
        ctx = self.ctx
        env = ctx.env
        assert env is not None
        permanent = ctx.config.is_permanent(exc)
        last = ctx.attempt is not None and ctx.attempt >= ctx.config.max_attempts
        if ctx.ledger is not None and (permanent or last):
            return self._fail(error_text(exc), exc)
        if ctx.ledger is None and permanent:
            chain_ended(ctx, ChainStatus.FAILED, None, error_text(exc))
            return ctx.respond(Outcome.FAILED, ChainStatus.FAILED, error=error_text(exc))
        self._note_raised(exc)
        ctx.stats.outcome = Outcome.RETRYING
        log.warning(
            "chain %s hop %d attempt %s raised %s; Lambda will retry it from the last checkpoint",
            env.chain_id,
            env.hop,
            ctx.attempt,
            error_text(exc),
        )
        raise exc

    def _note_raised(self, exc: Exception) -> None:
        """Note in the ledger that this attempt raised (it was not killed by the deadline), keeping the committed
        progress as it is: a later count of attempts that died in their first chunk must not count this one."""
        ctx = self.ctx
        env, ledger = ctx.env, ctx.ledger
        if ledger is None or env is None or ctx.attempt is None:
            return
        try:
            current = ledger.get(env.chain_id)
            if current is None or current.owner != ctx.request_id or current.hop != env.hop:
                return
            committed = Progress.from_json(current.progress)
            learned = dict(learned_of(current.progress))
            learned["at"] = {
                "hop": env.hop,
                "chunk": committed.chunks,
                "attempt": ctx.attempt,
                "raised": type(exc).__name__,
            }
            ledger.checkpoint(
                env.chain_id,
                hop=env.hop,
                owner=ctx.request_id,
                progress=committed.with_(learned=learned).to_json(),
                now=ctx.clock.time(),
                lease_until=ctx.lease_until(),
            )
        except (
            LedgerError,
            LedgerConflict,
            ValueError,
        ):  # best effort: at worst a later error is taken for a kill
            return

    def _fail(self, error: str, exc: BaseException | None = None) -> dict[str, Any]:
        ctx = self.ctx
        env, ledger = ctx.env, ctx.ledger
        assert env is not None and ledger is not None
        try:
            record = ledger.fail(
                env.chain_id, hop=env.hop, owner=ctx.request_id, error=error, now=ctx.clock.time()
            )
        except LedgerConflict as conflict:
            return not_claimed(ctx, conflict.current)
        if exc is not None:
            log.debug("chain %s failed at hop %d", env.chain_id, env.hop, exc_info=exc)
        chain_ended(ctx, ChainStatus.FAILED, record, error)
        shard = shard_spec(env.event)
        if shard is not None:
            shard_failed(ctx, shard, error)
        return ctx.respond(
            Outcome.FAILED, ChainStatus.FAILED, error=error, last_state=record.progress.get("state")
        )
