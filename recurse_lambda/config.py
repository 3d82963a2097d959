"""Chain configuration: one frozen object built by ``@recursive(...)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from .core.codec import DEFAULT_MAX_PAYLOAD_BYTES
from .core.ledger import Ledger
from .core.notify import FailureNotifier
from .core.policy import BudgetPolicy, predictive
from .core.state_codec import check_state_model
from .errors import (
    BucketNotFoundError,
    BudgetError,
    ConfigurationError,
    DecompressionError,
    EnvelopeError,
    GuardExceeded,
    MalformedRecordError,
    ObjectChangedError,
    ObjectNotFoundError,
)
from .shards.plan import Shards

# Every environment variable the library reads, and its default, once (the local Lambda's test fixture keeps
# its own RECURSE_LAMBDA_DYNALITE_DIR: local/ imports the public API only).
SIGNING_KEY_ENV = "RECURSE_LAMBDA_SIGNING_KEY"  # the HMAC key internal events are signed with
SPILL_BUCKET_ENV = "RECURSE_LAMBDA_SPILL_BUCKET"  # where envelopes (and ledger fields) too large to send go
SPILL_PREFIX_ENV = "RECURSE_LAMBDA_SPILL_PREFIX"
DEFAULT_SPILL_PREFIX = "recurse-lambda/envelopes/"
TABLE_ENV = "RECURSE_LAMBDA_TABLE"  # the DynamoDB ledger table (ledger_from_env, the CLI)


def spill_location(
    environ: Mapping[str, str], bucket: str | None = None, prefix: str | None = None
) -> tuple[str | None, str]:
    """The spill bucket and prefix: the given ones, else ``$RECURSE_LAMBDA_SPILL_BUCKET`` and
    ``$RECURSE_LAMBDA_SPILL_PREFIX`` (default :data:`DEFAULT_SPILL_PREFIX`). No bucket: no spill store."""
    return (
        bucket or environ.get(SPILL_BUCKET_ENV) or None,
        prefix or environ.get(SPILL_PREFIX_ENV, DEFAULT_SPILL_PREFIX),
    )


# Errors that a retry cannot cure: the chain is failed at once instead of burning Lambda's retries.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    EnvelopeError,
    GuardExceeded,
    BudgetError,
    ObjectChangedError,
    ObjectNotFoundError,
    BucketNotFoundError,
    MalformedRecordError,
    DecompressionError,
    ValidationError,
)


class EmptyState(BaseModel):
    """The state of a handler that declares none."""


@dataclass(frozen=True)
class ChainConfig:
    """Everything ``@recursive`` accepts. See the README for what each option does."""

    state: type[BaseModel] = EmptyState
    ledger: Ledger | None = None  # None: stateless mode (at-least-once; forks are possible)
    policy: BudgetPolicy = field(default_factory=predictive)
    max_hops: int = 1000
    max_duration: float = 24 * 3600.0  # seconds from the chain's start
    max_attempts: int = 3  # attempts per hop; match the function's MaximumRetryAttempts + 1
    checkpoint_every_chunks: int | None = None
    checkpoint_every_seconds: float | None = 60.0
    lease_margin: float = 5.0  # seconds past the invocation's deadline before its lease expires
    chain_id: Callable[[Any], str] | None = None  # business key; default: a digest of the first event
    initial_state: Callable[[Any], BaseModel] | None = None
    spill_bucket: str | None = None  # default: $RECURSE_LAMBDA_SPILL_BUCKET
    spill_prefix: str | None = None  # default: $RECURSE_LAMBDA_SPILL_PREFIX or "recurse-lambda/envelopes/"
    signing_key_env: str = SIGNING_KEY_ENV
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    permanent_errors: tuple[type[BaseException], ...] = ()
    notifier: FailureNotifier | None = None  # told when a chain fails for good (SQS, SNS, EventBridge)
    check_recursion: bool = True  # at a chain's first hop, refuse to run if RecursiveLoop is Terminate (AWS)
    log_state: bool = False  # put the full state in log lines (off: a summary of its scalar fields)
    metrics: bool = False  # print CloudWatch embedded-metric-format lines (hops, chunks, utilisation, ...)
    metrics_namespace: str = "RecurseLambda"
    shards: Shards | None = None  # run each job as parallel shards joined by a reduce (needs a ledger)
    s3_events: tuple[str, ...] = ("ObjectCreated:*", "Object Created")  # S3 events that start chains
    tracing: bool = (
        False  # OpenTelemetry spans per hop, joined across hops (the `tracing` extra; docs/tracing.md)
    )
    tracer: Any = (
        None  # an OpenTelemetry Tracer or TracerProvider to use (implies tracing); None: the global one
    )
    powertools_metrics: Any = None  # a Powertools Metrics object: metrics go through it instead of EMF lines

    def __post_init__(self) -> None:
        if not (isinstance(self.state, type) and issubclass(self.state, BaseModel)):
            raise ConfigurationError(f"state must be a pydantic model class, not {self.state!r}")
        check_state_model(self.state)  # a state that would not survive a hand-off is refused here
        if self.max_hops < 1:
            raise ConfigurationError("max_hops must be at least 1")
        if self.max_duration <= 0:
            raise ConfigurationError("max_duration must be positive")
        if not 1 <= self.max_attempts <= 3:
            raise ConfigurationError(
                "max_attempts must be 1, 2 or 3 (Lambda retries an async event at most twice)"
            )
        if self.checkpoint_every_chunks is not None and self.checkpoint_every_chunks < 1:
            raise ConfigurationError("checkpoint_every_chunks must be at least 1 (or None)")
        if self.checkpoint_every_seconds is not None and self.checkpoint_every_seconds <= 0:
            raise ConfigurationError("checkpoint_every_seconds must be positive (or None)")
        if self.shards is not None and not isinstance(self.shards, Shards):
            raise ConfigurationError(f"shards must be a Shards(...), not {self.shards!r}")
        if isinstance(self.s3_events, str) or not all(isinstance(e, str) for e in self.s3_events):
            raise ConfigurationError(
                f"s3_events must be a tuple of event names or patterns, not {self.s3_events!r}"
            )
        if not callable(self.policy):
            raise ConfigurationError(f"policy must be callable on a BudgetState, not {self.policy!r}")

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, PERMANENT_ERRORS + self.permanent_errors)
