"""The runner: one invocation of a chain, from claim to hand-off (DESIGN §4–§6).

A :class:`Hop` is built per invocation. It claims its hop in the ledger, drives the user's generator from safe
point to safe point, asks the budget policy whether the next chunk still fits, checkpoints now and then, and
finally either finishes the chain, hands off to the next hop, fails the chain for good, or re-raises so Lambda
retries it from the last committed checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..config import ChainConfig
from ..core.codec import Envelope, EnvelopeCodec, is_envelope, signing_key_from
from ..core.invoke import same_version_target
from ..core.ledger import ChainRecord, ChainStatus
from ..core.policy import BudgetState
from ..core.state_codec import dump_state, load_state, nonfinite_path
from ..errors import (
    ChunkTooLargeError,
    ConfigurationError,
    EnvelopeError,
    HandOffError,
    InvokeThrottled,
    LedgerConflict,
    LedgerError,
    LostLeaseError,
    MaxDurationExceeded,
    MaxHopsExceeded,
    RecurseLambdaError,
)
from ..keys import default as default_chain_id
from ..shards.job import drive_job, shard_failed, shard_spec, shard_succeeded, shard_view, user_event
from ..shards.plan import check_user_chain_id
from .deliveries import abandoned, error_text, not_claimed, refuse_internal_markers, rejected
from .report import chain_ended, observe_invocation
from .warm import (
    LEARNED,
    FirstChunkMarker,
    killed_chunk_error,
    learned_of,
    learned_summary,
    lost_hand_off,
    seed_warm,
)
from .world import InvocationStats, Outcome, Run, World

log = logging.getLogger("recurse_lambda")

Handler = Callable[..., Any]


def is_destination_record(event: Any) -> bool:
    """An on-failure destination record from Lambda (``requestContext`` + ``requestPayload``)."""
    return (
        isinstance(event, Mapping)
        and isinstance(event.get("requestContext"), Mapping)
        and "condition" in event["requestContext"]
        and "requestPayload" in event
    )


def codec_for(config: ChainConfig, world: World) -> EnvelopeCodec:
    return EnvelopeCodec(
        signing_key=signing_key_from(world.environ, config.signing_key_env),
        spill=world.spill,
        max_payload_bytes=config.max_payload_bytes,
    )


class Hop:
    """One invocation of a chain."""

    def __init__(self, fn: Handler, config: ChainConfig, event: Any, context: Any, world: World) -> None:
        self.fn = fn
        self.config = config
        self.context = context
        self.world = world
        self.clock = world.clock
        self.ledger = world.ledger
        self.request_id = str(context.aws_request_id)
        self.stats = InvocationStats(self.request_id, self.clock.now())
        self.deadline: float = self.stats.started + context.get_remaining_time_in_millis() / 1000.0
        self.codec = codec_for(config, world)
        self.event = event
        self.env: Envelope | None = None
        self.last_progress: dict[str, Any] | None = None
        self.attempt: int | None = None
        self.record: ChainRecord | None = None  # as claimed
        self.shard: Mapping[str, Any] | None = None  # a shard chain's place in its job
        # Progress beyond the state, chunk count and pins (a sharded job's plan): kept on every commit.
        self.extra_progress: dict[str, Any] = {}
        self.ledger_write = 0.0  # seconds the claim took: a hand-off writes to the ledger too
        if world.observer is not None:
            world.observer(self.stats)

    # ------------------------------------------------------------------ entry

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self.stats.ended = self.clock.now()
            observe_invocation(self)

    def _run(self) -> dict[str, Any]:
        if is_destination_record(self.event):
            return abandoned(self, self.event)
        if self.config.shards is not None and self.ledger is None:
            return rejected(
                self, ConfigurationError("a sharded job needs a ledger: its shards are joined there")
            )
        try:
            if is_envelope(self.event):
                env = self.codec.decode(self.event)
            else:
                refuse_internal_markers(self.event)  # a forged shard start: shards start from envelopes
                env = self._first_envelope()
        except (EnvelopeError, ConfigurationError) as exc:
            return rejected(self, exc)
        except Exception as exc:  # chain_id= or initial_state= refused the event: it would on every retry...
            if isinstance(exc, RecurseLambdaError) and not self.config.is_permanent(exc):
                raise  # ...unless it is a transient library error (an S3 HEAD for the key, say): Lambda retries
            return rejected(
                self, ConfigurationError(f"the first event cannot start a chain: {error_text(exc)}")
            )
        self.env = env
        self.stats.chain_id, self.stats.hop = env.chain_id, env.hop
        progress = env.progress
        if self.ledger is not None:
            if env.hop == 0 and not is_envelope(self.event):
                self.ledger.start(  # a LedgerError here propagates: Lambda retries the first event
                    env.chain_id,
                    progress=progress,
                    event=env.event,
                    now=self.clock.time(),
                    function=same_version_target(self.context),
                )
            try:
                t_claim = self.clock.now()
                record = self.ledger.claim(
                    env.chain_id,
                    hop=env.hop,
                    owner=self.request_id,
                    now=self.clock.time(),
                    lease_until=self._lease_until(),
                )
                self.ledger_write = self.clock.now() - t_claim
            except LedgerConflict as conflict:
                return not_claimed(self, self._lost_hand_off(conflict.current))
            except LedgerError as exc:  # throttled, table missing, unreachable: Lambda retries the delivery
                self.stats.outcome = Outcome.RETRYING
                log.warning(
                    "chain %s hop %d: the ledger failed (%s); Lambda will retry", env.chain_id, env.hop, exc
                )
                raise
            progress, self.attempt, self.record = record.progress, record.attempts, record
            sent = learned_of(env.progress)
            if int(sent.get("timeouts", 0) or 0) > int(learned_of(progress).get("timeouts", 0) or 0):
                progress = {**progress, LEARNED: sent}  # a resent hand-off: it says what the lost one learned
            env = Envelope(env.chain_id, env.hop, progress, record.event, record.started_at, env.code_version)
            self.env = env
        self.stats.attempt = self.attempt
        self.shard = shard_spec(env.event)
        self.extra_progress = {k: v for k, v in progress.items() if k not in ("state", "chunks", "pins")}
        pins: dict[str, dict[str, Any]] = dict(progress.get("pins") or {})
        run = Run(
            chain_id=env.chain_id,
            hop=env.hop,
            attempt=self.attempt,
            request_id=self.request_id,
            chunk=int(progress.get("chunks", 0)),
            started_at=env.started_at,
            deadline=self.deadline,
            clock=self.clock,
            context=self.context,
            pins=pins,
            world=self.world,
        )
        try:
            state = load_state(self.config.state, progress["state"])
            if self.clock.time() - env.started_at > self.config.max_duration:
                raise MaxDurationExceeded(
                    f"chain {env.chain_id} has run {self.clock.time() - env.started_at:.0f} s, over "
                    f"max_duration={self.config.max_duration:.0f} s"
                )
            guard = self.world.recursion_guard
            if env.hop == 0 and guard is not None:
                guard(self.context).check()  # RecursiveLoop must be Allow, or Lambda stops the chain at ~16
            if self.shard is not None:
                run.shard = shard_view(self.shard, run)
            elif self.config.shards is not None:
                return drive_job(self, state, run)
            return self._work(state, run)
        except LostLeaseError:
            log.warning("chain %s hop %d: lost its lease; stopping without hand-off", env.chain_id, env.hop)
            return self._response(Outcome.LOST_LEASE, ChainStatus.RUNNING)
        except Exception as exc:
            return self._on_error(exc)

    def _lost_hand_off(self, current: ChainRecord | None) -> ChainRecord | None:
        """A retry finding its own hand-off committed but not invoked will resend it (``not_claimed``): the
        hand-off outlived the invocation, so the resent envelope tells the next hop to plan for a slower one."""
        env = self.env
        if (
            env is None
            or current is None
            or current.status is not ChainStatus.RUNNING
            or current.hop != env.hop + 1
            or current.owner is not None
            or current.handed_off_by != self.request_id
        ):
            return current
        learned = lost_hand_off(learned_of(current.progress))
        return dataclasses.replace(current, progress={**current.progress, LEARNED: learned})

    def _first_envelope(self) -> Envelope:
        config = self.config
        if config.chain_id is not None:
            chain_id = config.chain_id(self.event)
        elif self.ledger is not None:
            # A duplicate delivery of the first event has a new request id: key the chain on the event (or, for
            # an S3 notification, on the objects' bucket, key and ETag), so the duplicate joins the chain.
            chain_id = default_chain_id(self.event)
        else:
            chain_id = self.request_id
        check_user_chain_id(str(chain_id))  # shard chain ids are reserved: a key must not name a shard
        state = config.initial_state(self.event) if config.initial_state else config.state()
        if not isinstance(state, config.state):
            raise ConfigurationError(
                f"initial_state returned {type(state).__name__}, not {config.state.__name__}"
            )
        return Envelope(
            chain_id=str(chain_id),
            hop=0,
            progress={"state": dump_state(state), "chunks": 0, "pins": {}},  # checks it round-trips
            event=self.event,
            started_at=self.clock.time(),
            code_version=str(getattr(self.context, "function_version", "$LATEST")),
        )

    # ------------------------------------------------------------------ the loop

    def _work(self, state: Any, run: Run) -> dict[str, Any]:
        out = self.fn(run_event(self), state, run)
        if not inspect.isgenerator(out):
            return self._finish(out, state, run)
        config, clock, stats = self.config, self.clock, self.stats
        warm = self.world.warm
        timings = warm.timings
        now = clock.now
        start = t = now()
        whole = self.deadline - start
        # What the chain learned survives runtime resets in its progress; a runtime that has measured nothing
        # starts from it. A hand-off writes to the ledger as the claim did, so it takes at least as long.
        seed_warm(warm, learned_of({LEARNED: self.extra_progress.get(LEARNED)}), whole)
        warm.handoff.floor(self.ledger_write)
        # Each earlier failed attempt of this hop makes this one more careful: a larger reserve and prediction,
        # and a commit after every chunk, so that the chunk that killed it starts the next attempt first.
        caution = (self.attempt or 1) - 1
        budget = BudgetState(
            budget=whole, remaining=whole, timings=timings, handoff=warm.handoff, caution=caution
        )
        policy = config.policy
        policy(budget)  # before any work: raises ChunkTooLargeError if the chunks seen so far cannot fit
        first = FirstChunkMarker(warm, self.fn.__qualname__)
        self._check_marker(first, budget.budget, run.chunk)
        marker: FirstChunkMarker | None = first  # None once the first chunk reached a safe point
        hook = self.world.on_safe_point
        every_chunks = config.checkpoint_every_chunks if self.ledger is not None else None
        every_seconds = config.checkpoint_every_seconds if self.ledger is not None else None
        if caution and self.ledger is not None:
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
                    return self._finish(stop.value, state, run)
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
                budget.remaining = self.deadline - t2
                budget.elapsed = t2 - start
                budget.chunks = stats.chunks
                budget.last_chunk = d
                proved = caution and every_chunks == 1 and stats.chunks == 1
                if proved:
                    # A retry commits before anything else once its first chunk is done: an attempt that
                    # committed nothing is taken to have died in the chunk it resumed at (see killed_chunk),
                    # so a crash between this safe point and a hand-off must not look like one.
                    self._checkpoint(state, run)
                    since_chunks, last_checkpoint = 0, now()
                    t = last_checkpoint
                    budget.remaining = self.deadline - t
                if policy(budget):
                    # Close the generator first (a reader stops its prefetch here), so that whatever the close
                    # waits for is part of the measured hand-off and of the reserve kept for it.
                    t_close = now()
                    # Snapshot the state at this safe point first: what `finally`/`with` blocks do to it when
                    # the generator closes must not reach the next hop (the result may not depend on the hops).
                    progress = self._progress(state, run)
                    out.close()
                    return self._hand_off(state, run, since=t_close, progress=progress)
                if proved:
                    continue
                since_chunks += 1
                if (every_chunks is not None and since_chunks >= every_chunks) or (
                    every_seconds is not None and t2 - last_checkpoint >= every_seconds
                ):
                    self._checkpoint(state, run)
                    since_chunks, last_checkpoint = 0, now()
                    t = last_checkpoint  # the checkpoint's own time is not chunk time
        finally:
            out.close()

    def _check_marker(self, marker: FirstChunkMarker, budget: float, chunk: int) -> None:
        """Fail with ChunkTooLargeError when earlier attempts' first chunk never reached a safe point.

        The marker cannot tell a timeout from a crash, so only the last attempt gives up: the last by the ledger's
        count, or by the marker's own count (stateless mode, or a ledger's count that another container made).
        A delivery past the last attempt (a resend of a dead hop) also reads the proof from the ledger's record.
        """
        assert self.env is not None
        env = self.env
        seen, previous_budget = marker.previous(env.chain_id, env.hop)
        max_attempts = self.config.max_attempts
        last_by_ledger = self.attempt is not None and self.attempt >= max_attempts
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
        if self.attempt is not None and self.attempt > max_attempts and self.record is not None:
            proven = killed_chunk_error(self.record.progress, env.hop, self.attempt - 1)
            if proven is not None:
                raise proven
        marker.set(env.chain_id, env.hop, budget, attempts=seen + 1)

    def _progress(self, state: Any, run: Run) -> dict[str, Any]:
        progress = {
            **self.extra_progress,
            "state": dump_state(state),
            "chunks": run.chunk,
            "pins": dict(run.pins),
        }
        self.last_progress = progress  # what this invocation last committed or handed on (for its log line)
        return progress

    def _lease_until(self) -> float:
        return self.clock.time() + (self.deadline - self.clock.now()) + self.config.lease_margin

    def _learned(self, **extra: Any) -> None:
        """Put what this invocation has learned (and what it carries on) in the progress it commits next."""
        base = learned_of({LEARNED: self.extra_progress.get(LEARNED)})
        whole = self.deadline - self.stats.started
        self.extra_progress[LEARNED] = learned_summary(self.world.warm, base, whole, **extra)

    def _with_learned(self, progress: dict[str, Any]) -> dict[str, Any]:
        """A snapshot taken at the safe point, with what was learned since (the hand-off's own note)."""
        progress = {**progress, LEARNED: self.extra_progress.get(LEARNED)}
        self.last_progress = progress
        return progress

    def _checkpoint(self, state: Any, run: Run, progress: dict[str, Any] | None = None) -> None:
        assert self.ledger is not None and self.env is not None
        left = round(self.deadline - self.clock.now(), 4)  # the note: chunk `run.chunk` starts with `left` s
        self._learned(at={"hop": self.env.hop, "chunk": run.chunk, "attempt": self.attempt, "left": left})
        self.ledger.checkpoint(
            self.env.chain_id,
            hop=self.env.hop,
            owner=self.request_id,
            progress=self._progress(state, run) if progress is None else self._with_learned(progress),
            now=self.clock.time(),
            lease_until=self._lease_until(),
        )
        self.stats.checkpoints += 1

    # ------------------------------------------------------------------ endings

    def _finish(self, result: Any, state: Any, run: Run) -> dict[str, Any]:
        assert self.env is not None
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
        if self.ledger is not None:
            record = self.ledger.finish(
                self.env.chain_id,
                hop=self.env.hop,
                owner=self.request_id,
                progress=self._progress(state, run),
                result=result,
                now=self.clock.time(),
            )
        chain_ended(self, ChainStatus.SUCCEEDED, record)
        if self.shard is not None:
            shard_succeeded(self, self.shard)  # count it in the job; the last one wakes the job to reduce
        return self._response(Outcome.SUCCEEDED, ChainStatus.SUCCEEDED, result=result)

    def _hand_off(
        self, state: Any, run: Run, since: float | None = None, progress: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        env = self.env
        assert env is not None
        config = self.config
        if env.hop + 1 >= config.max_hops:
            self._commit_before_failing(state, run, progress)
            raise MaxHopsExceeded(
                f"chain {env.chain_id} needs more than max_hops={config.max_hops} hops; raise max_hops if the "
                "work is really that long"
            )
        elapsed = self.clock.time() - env.started_at
        if elapsed > config.max_duration:
            self._commit_before_failing(state, run, progress)
            raise MaxDurationExceeded(
                f"chain {env.chain_id} has run {elapsed:.0f} s, over max_duration={config.max_duration:.0f} s"
            )
        t0 = self.clock.now() if since is None else since
        timeouts = int(learned_of({LEARNED: self.extra_progress.get(LEARNED)}).get("timeouts", 0) or 0)
        self._learned(  # the time left is what a lost hand-off proves it needed more than
            timeouts=timeouts + max((self.attempt or 1) - 1, 0), handoff_left=round(self.deadline - t0, 4)
        )
        progress = self._progress(state, run) if progress is None else self._with_learned(progress)
        nxt = Envelope(env.chain_id, env.hop + 1, progress, env.event, env.started_at, env.code_version)
        payload = self.codec.encode(nxt)  # spills or raises before anything is committed or invoked
        if self.ledger is not None:
            self.ledger.hand_off(
                env.chain_id, hop=env.hop, owner=self.request_id, progress=progress, now=self.clock.time()
            )
        slept = self._invoke(payload)
        cost = self.clock.now() - t0
        self.stats.handoff_time = cost
        self.world.warm.handoff.add(cost - slept)
        return self._response(Outcome.HANDED_OFF, ChainStatus.RUNNING, next_hop=env.hop + 1)

    def _commit_before_failing(self, state: Any, run: Run, progress: dict[str, Any] | None = None) -> None:
        # A guard trips at a safe point, where the state is consistent: keep it, so `resume` starts from here.
        if self.ledger is not None:
            self._checkpoint(state, run, progress)

    def _invoke(self, payload: bytes) -> float:
        """Invoke the next hop, retrying throttles within the time left; returns the seconds slept."""
        target = same_version_target(self.context)
        slept, backoff = 0.0, 0.1
        while True:
            try:
                self.world.invoker.invoke_async(target, payload)
                return slept
            except InvokeThrottled as throttled:
                wait = throttled.retry_after if throttled.retry_after is not None else backoff
                backoff = min(backoff * 2, 2.0)
                left = self.deadline - self.clock.now()
                if left - wait < self.world.warm.handoff.estimate_for(self.deadline - self.stats.started):
                    raise HandOffError(
                        f"the invoke of {target} stayed throttled until the invocation's deadline; Lambda's "
                        "retry of this hop will send it again"
                    ) from throttled
                self.clock.sleep(wait)
                slept += wait

    def _on_error(self, exc: Exception) -> dict[str, Any]:
        env = self.env
        assert env is not None
        permanent = self.config.is_permanent(exc)
        last = self.attempt is not None and self.attempt >= self.config.max_attempts
        if self.ledger is not None and (permanent or last):
            return self._fail(error_text(exc), exc)
        if self.ledger is None and permanent:
            chain_ended(self, ChainStatus.FAILED, None, error_text(exc))
            return self._response(Outcome.FAILED, ChainStatus.FAILED, error=error_text(exc))
        self._note_raised(exc)
        self.stats.outcome = Outcome.RETRYING
        log.warning(
            "chain %s hop %d attempt %s raised %s; Lambda will retry it from the last checkpoint",
            env.chain_id,
            env.hop,
            self.attempt,
            error_text(exc),
        )
        raise exc

    def _note_raised(self, exc: Exception) -> None:
        """Note in the ledger that this attempt raised (it was not killed by the deadline), keeping the committed
        progress as it is: a later count of attempts that died in their first chunk must not count this one."""
        env = self.env
        if self.ledger is None or env is None or self.attempt is None:
            return
        try:
            current = self.ledger.get(env.chain_id)
            if current is None or current.owner != self.request_id or current.hop != env.hop:
                return
            learned = dict(learned_of(current.progress))
            learned["at"] = {
                "hop": env.hop,
                "chunk": int(current.progress.get("chunks", 0)),
                "attempt": self.attempt,
                "raised": type(exc).__name__,
            }
            self.ledger.checkpoint(
                env.chain_id,
                hop=env.hop,
                owner=self.request_id,
                progress={**current.progress, LEARNED: learned},
                now=self.clock.time(),
                lease_until=self._lease_until(),
            )
        except (LedgerError, LedgerConflict):  # best effort: at worst a later error is taken for a kill
            return

    def _fail(self, error: str, exc: BaseException | None = None) -> dict[str, Any]:
        env = self.env
        assert env is not None and self.ledger is not None
        try:
            record = self.ledger.fail(
                env.chain_id, hop=env.hop, owner=self.request_id, error=error, now=self.clock.time()
            )
        except LedgerConflict as conflict:
            return not_claimed(self, conflict.current)
        if exc is not None:
            log.debug("chain %s failed at hop %d", env.chain_id, env.hop, exc_info=exc)
        chain_ended(self, ChainStatus.FAILED, record, error)
        if self.shard is not None:
            shard_failed(self, self.shard, error)
        return self._response(
            Outcome.FAILED, ChainStatus.FAILED, error=error, last_state=record.progress.get("state")
        )

    def _response(self, outcome: Outcome, status: ChainStatus | None, **extra: Any) -> dict[str, Any]:
        self.stats.outcome = outcome
        env = self.env
        body: dict[str, Any] = {
            "chain_id": env.chain_id if env else None,
            "hop": env.hop if env else None,
            "status": str(status) if status else None,
            "outcome": str(outcome),
        }
        body.update(extra)
        return body


def run_event(hop: Hop) -> Any:
    """The event the user's handler sees: the chain's original event (a shard's: its job's)."""
    assert hop.env is not None
    return user_event(hop.env.event)
