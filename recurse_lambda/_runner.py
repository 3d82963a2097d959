"""The runner: one invocation of a chain, from claim to hand-off (DESIGN §4–§6).

A :class:`Hop` is built per invocation. It claims its hop in the ledger, drives the user's generator from safe
point to safe point, asks the budget policy whether the next chunk still fits, checkpoints now and then, and
finally either finishes the chain, hands off to the next hop, fails the chain for good, or re-raises so Lambda
retries it from the last committed checkpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ._config import ChainConfig
from ._deliveries import abandoned, error_text, not_claimed, rejected
from ._endings import chain_ended, observe_invocation
from ._envelope import Envelope, EnvelopeCodec, is_envelope
from ._errors import (
    ChunkTooLargeError,
    ConfigurationError,
    EnvelopeError,
    HandOffError,
    LedgerConflict,
    LedgerError,
    LostLeaseError,
    MaxDurationExceeded,
    MaxHopsExceeded,
    RecurseLambdaError,
)
from ._invoke import InvokeThrottled, same_version_target
from ._join import drive_job, shard_failed, shard_spec, shard_succeeded, shard_view, user_event
from ._ledger import ChainRecord, ChainStatus
from ._policy import BudgetState
from ._shards import check_user_chain_id
from ._warm import FirstChunkMarker
from ._world import InvocationStats, Outcome, Run, World
from .keys import default as default_chain_id

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
    key = world.environ.get(config.signing_key_env)
    return EnvelopeCodec(
        signing_key=key.encode() if key else None,
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
            env = self.codec.decode(self.event) if is_envelope(self.event) else self._first_envelope()
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
                record = self.ledger.claim(
                    env.chain_id,
                    hop=env.hop,
                    owner=self.request_id,
                    now=self.clock.time(),
                    lease_until=self._lease_until(),
                )
            except LedgerConflict as conflict:
                return not_claimed(self, conflict.current)
            except LedgerError as exc:  # throttled, table missing, unreachable: Lambda retries the delivery
                self.stats.outcome = Outcome.RETRYING
                log.warning(
                    "chain %s hop %d: the ledger failed (%s); Lambda will retry", env.chain_id, env.hop, exc
                )
                raise
            progress, self.attempt, self.record = record.progress, record.attempts, record
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
            state = self.config.state.model_validate(progress["state"])
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
            progress={"state": state.model_dump(mode="json"), "chunks": 0, "pins": {}},
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
        budget = BudgetState(
            budget=self.deadline - start,
            remaining=self.deadline - start,
            timings=timings,
            handoff=warm.handoff,
        )
        policy = config.policy
        policy(budget)  # before any work: raises ChunkTooLargeError if the chunks seen so far cannot fit
        first = FirstChunkMarker(warm, self.fn.__qualname__)
        self._check_marker(first, budget.budget)
        marker: FirstChunkMarker | None = first  # None once the first chunk reached a safe point
        hook = self.world.on_safe_point
        every_chunks = config.checkpoint_every_chunks if self.ledger is not None else None
        every_seconds = config.checkpoint_every_seconds if self.ledger is not None else None
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
                if policy(budget):
                    # Close the generator first (a reader stops its prefetch here), so that whatever the close
                    # waits for is part of the measured hand-off and of the reserve kept for it.
                    t_close = now()
                    out.close()
                    return self._hand_off(state, run, since=t_close)
                since_chunks += 1
                if (every_chunks is not None and since_chunks >= every_chunks) or (
                    every_seconds is not None and t2 - last_checkpoint >= every_seconds
                ):
                    self._checkpoint(state, run)
                    since_chunks, last_checkpoint = 0, now()
                    t = last_checkpoint  # the checkpoint's own time is not chunk time
        finally:
            out.close()

    def _check_marker(self, marker: FirstChunkMarker, budget: float) -> None:
        """Fail with ChunkTooLargeError when earlier attempts' first chunk never reached a safe point.

        The marker cannot tell a timeout from a crash, so only the last attempt gives up: the last by the ledger's
        count, or by the marker's own count (stateless mode, or a ledger's count that another container made).
        """
        assert self.env is not None
        env = self.env
        seen, previous_budget = marker.previous(env.chain_id, env.hop)
        last_by_ledger = self.attempt is not None and self.attempt >= self.config.max_attempts
        if seen and (last_by_ledger or seen >= self.config.max_attempts - 1):
            marker.clear()
            raise ChunkTooLargeError(
                previous_budget,
                previous_budget,
                f"the first chunk of hop {env.hop} did not reach a safe point within a whole invocation "
                f"({previous_budget:.3f} s) on {seen} earlier attempt(s), which timed out or crashed",
            )
        marker.set(env.chain_id, env.hop, budget, attempts=seen + 1)

    def _progress(self, state: Any, run: Run) -> dict[str, Any]:
        progress = {
            **self.extra_progress,
            "state": state.model_dump(mode="json"),
            "chunks": run.chunk,
            "pins": dict(run.pins),
        }
        self.last_progress = progress  # what this invocation last committed or handed on (for its log line)
        return progress

    def _lease_until(self) -> float:
        return self.clock.time() + (self.deadline - self.clock.now()) + self.config.lease_margin

    def _checkpoint(self, state: Any, run: Run) -> None:
        assert self.ledger is not None and self.env is not None
        self.ledger.checkpoint(
            self.env.chain_id,
            hop=self.env.hop,
            owner=self.request_id,
            progress=self._progress(state, run),
            now=self.clock.time(),
            lease_until=self._lease_until(),
        )
        self.stats.checkpoints += 1

    # ------------------------------------------------------------------ endings

    def _finish(self, result: Any, state: Any, run: Run) -> dict[str, Any]:
        assert self.env is not None
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
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

    def _hand_off(self, state: Any, run: Run, since: float | None = None) -> dict[str, Any]:
        env = self.env
        assert env is not None
        config = self.config
        if env.hop + 1 >= config.max_hops:
            self._commit_before_failing(state, run)
            raise MaxHopsExceeded(
                f"chain {env.chain_id} needs more than max_hops={config.max_hops} hops; raise max_hops if the "
                "work is really that long"
            )
        elapsed = self.clock.time() - env.started_at
        if elapsed > config.max_duration:
            self._commit_before_failing(state, run)
            raise MaxDurationExceeded(
                f"chain {env.chain_id} has run {elapsed:.0f} s, over max_duration={config.max_duration:.0f} s"
            )
        progress = self._progress(state, run)
        nxt = Envelope(env.chain_id, env.hop + 1, progress, env.event, env.started_at, env.code_version)
        t0 = self.clock.now() if since is None else since
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

    def _commit_before_failing(self, state: Any, run: Run) -> None:
        # A guard trips at a safe point, where the state is consistent: keep it, so `resume` starts from here.
        if self.ledger is not None:
            self._checkpoint(state, run)

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
        self.stats.outcome = Outcome.RETRYING
        log.warning(
            "chain %s hop %d attempt %s raised %s; Lambda will retry it from the last checkpoint",
            env.chain_id,
            env.hop,
            self.attempt,
            error_text(exc),
        )
        raise exc

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
