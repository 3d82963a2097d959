"""``HopContext``: what the parts of one invocation share, and the few things they may do through it.

The runner (:mod:`~recurse_lambda.chain.hop`), the loop (:mod:`~recurse_lambda.chain.drive`), the hand-off
(:mod:`~recurse_lambda.chain.handoff`), the deliveries that do no work (:mod:`~recurse_lambda.chain.deliveries`),
a sharded job (:mod:`recurse_lambda.shards.job`) and the reports (:mod:`~recurse_lambda.chain.report`) all receive
this one object and return results; none of them reaches into another's internals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import ChainConfig
from ..core.clock import Clock
from ..core.codec import Envelope, EnvelopeCodec, signing_key_from
from ..core.invoke import same_version_target
from ..core.ledger import ChainRecord, ChainStatus, Ledger
from ..core.progress import Progress
from ..core.state_codec import dump_state
from .handoff import invoke_with_backoff
from .run import Run
from .warm import learned_summary
from .world import InvocationStats, Outcome, World


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def codec_for(config: ChainConfig, world: World) -> EnvelopeCodec:
    return EnvelopeCodec(
        signing_key=signing_key_from(world.environ, config.signing_key_env),
        spill=world.spill,
        max_payload_bytes=config.max_payload_bytes,
    )


def envelope_of(record: ChainRecord, code_version: str = "$LATEST", hop: int | None = None) -> Envelope:
    """The envelope of ``record``'s hop (or of ``hop``), as the ledger holds it."""
    env = Envelope.from_record(record, code_version=code_version)
    return env if hop is None else dataclasses.replace(env, hop=hop)


@dataclass(eq=False)
class HopContext:
    """One invocation: its identity, its world, the chain it acts for (once known) and the progress it carries."""

    config: ChainConfig
    world: World
    lambda_context: Any
    request_id: str
    stats: InvocationStats
    deadline: float
    codec: EnvelopeCodec
    env: Envelope | None = None  # the chain and hop this invocation acts for, once known
    attempt: int | None = None  # the ledger's count of claims of this hop (None in stateless mode)
    record: ChainRecord | None = None  # the chain's record as claimed
    # The progress carried on every commit: the claimed one, with the job's plan and what was learned since.
    progress: Progress | None = None
    last_progress: Progress | None = None  # what this invocation last committed or handed on (its log line)
    ledger_write: float = 0.0  # seconds the claim took: a hand-off writes to the ledger too

    @classmethod
    def begin(cls, config: ChainConfig, world: World, lambda_context: Any) -> HopContext:
        request_id = str(lambda_context.aws_request_id)
        stats = InvocationStats(request_id, world.clock.now())
        deadline = stats.started + lambda_context.get_remaining_time_in_millis() / 1000.0
        ctx = cls(config, world, lambda_context, request_id, stats, deadline, codec_for(config, world))
        if world.observer is not None:
            world.observer(stats)
        return ctx

    @property
    def clock(self) -> Clock:
        return self.world.clock

    @property
    def ledger(self) -> Ledger | None:
        return self.world.ledger

    @property
    def code_version(self) -> str:
        return str(getattr(self.lambda_context, "function_version", "$LATEST"))

    def identify(self, env: Envelope) -> None:
        """From now on the invocation acts for ``env``'s chain and hop (and its statistics say so)."""
        self.env = env
        self.stats.chain_id, self.stats.hop = env.chain_id, env.hop

    def respond(self, outcome: Outcome, status: ChainStatus | None, **extra: Any) -> dict[str, Any]:
        """The invocation's response (and its outcome, in the statistics)."""
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

    def target(self) -> str:
        """This function version: every hop of a chain runs the code that started it."""
        return same_version_target(self.lambda_context)

    def invoke(self, payload: bytes) -> float:
        """Invoke the next hop, retrying throttles within the time left; returns the seconds slept."""
        return invoke_with_backoff(
            self.world.invoker,
            self.target(),
            payload,
            clock=self.clock,
            deadline=self.deadline,
            reserve=lambda: self.world.warm.handoff.estimate_for(self.deadline - self.stats.started),
        )

    def send(self, env: Envelope) -> float:
        """Encode and invoke ``env`` (a resend, a shard's start, a job's wake-up); returns the seconds slept."""
        return self.invoke(self.codec.encode(env))

    def lease_until(self) -> float:
        return self.clock.time() + (self.deadline - self.clock.now()) + self.config.lease_margin

    # ------------------------------------------------------------------ the progress it commits

    def carried(self) -> Progress:
        assert self.progress is not None, "the hop has not been claimed"
        return self.progress

    def carry(self, **changes: Any) -> None:
        """Change what every later commit carries (a job's plan, say)."""
        self.progress = self.carried().with_(**changes)

    def snapshot(self, state: Any, run: Run) -> Progress:
        """The progress at this safe point: the state, the chunk count and the pins, with what is carried."""
        progress = self.carried().with_(state=dump_state(state), chunks=run.chunk, pins=dict(run.pins))
        self.last_progress = progress
        return progress

    def learned(self) -> dict[str, Any]:
        """What the chain has learned about its timings so far (an empty summary when nothing)."""
        learned = self.progress.learned if self.progress is not None else None
        return dict(learned) if isinstance(learned, dict) else {}

    def learn(self, **extra: Any) -> None:
        """Put what this invocation has learned (and what it carries on) in the progress it commits next."""
        whole = self.deadline - self.stats.started
        self.carry(learned=learned_summary(self.world.warm, self.learned(), whole, **extra))

    def with_learned(self, progress: Progress) -> Progress:
        """A snapshot taken at a safe point, with what was learned since (the hand-off's own note)."""
        progress = progress.with_(learned=self.carried().learned)
        self.last_progress = progress
        return progress

    def checkpoint(self, state: Any, run: Run, snapshot: Progress | None = None) -> None:
        """Commit the progress at this safe point (or ``snapshot``, taken at one) and extend the lease."""
        assert self.ledger is not None and self.env is not None
        left = round(self.deadline - self.clock.now(), 4)  # the note: chunk `run.chunk` starts with `left` s
        self.learn(at={"hop": self.env.hop, "chunk": run.chunk, "attempt": self.attempt, "left": left})
        progress = self.snapshot(state, run) if snapshot is None else self.with_learned(snapshot)
        self.ledger.checkpoint(
            self.env.chain_id,
            hop=self.env.hop,
            owner=self.request_id,
            progress=progress.to_json(),
            now=self.clock.time(),
            lease_until=self.lease_until(),
        )
        self.stats.checkpoints += 1
