"""The exception tree. Every error the library raises derives from :class:`RecurseLambdaError`.

RecurseLambdaError
├── ConfigurationError          bad or missing configuration, found before any side effect
│   └── RecursionNotAllowed     the function's RecursiveLoop is Terminate (AWS would stop the chain at ~16)
├── EnvelopeError               a continuation payload that cannot be trusted or read
│   └── EnvelopeSignatureError  missing or wrong HMAC signature
├── BudgetError                 the time budget cannot be kept
│   └── ChunkTooLargeError      one chunk needs more than a whole invocation
├── GuardExceeded               a chain guard tripped
│   ├── MaxHopsExceeded
│   └── MaxDurationExceeded
├── HandOffError                the next hop could not be started (throttled past the deadline, spill failed)
│   └── InvokeThrottled         Lambda throttled the invoke (carries the server's retry hint)
├── HopNotDead                  an on-failure record came for a hop that may still be alive: deliver it later
├── LedgerConflict              a conditional ledger write failed (carries the current record)
│   ├── LostLeaseError          this invocation no longer owns its hop (fencing): stop at once
│   └── ChainStateError         a control action the chain's status does not allow (cancel a finished chain)
├── UnknownChainError           the ledger holds no chain with this id
├── OutOfTime                   await run.within(...) ran out of the invocation's time (also a TimeoutError)
├── NotifyError                 a failure notice could not be sent (logged; the chain is FAILED anyway)
├── ChainFailed                 the chain ended FAILED (carries the error and the last committed state)
├── TriggerError                an event-source event (SQS, S3, ...) that is empty or malformed, or a record of it
├── MalformedRecordError        a record a reader cannot parse
├── DecompressionError          a gzip or zstd object that is corrupt, truncated, or cut off at a false boundary
└── S3Error                     S3 trouble, named precisely
    ├── ObjectNotFoundError / BucketNotFoundError / AccessDeniedError
    └── ObjectChangedError      the pinned object changed under a running chain
        └── OutputExistsError   the writer's output key holds an object it may not replace
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.ledger import ChainRecord


def publish_exceptions(module: str, names: Iterable[str], namespace: Mapping[str, Any]) -> None:
    """Give the exceptions a public module exports that module's name, where one of its submodules defines them.

    Tracebacks and pytest then show ``recurse_lambda.ChainFailed``, the name users import and catch, rather
    than ``recurse_lambda.errors.ChainFailed`` (both work). Only exception classes: for them ``__module__`` is only a
    name (pickling by reference still works, the public module has the class), while other classes and
    functions resolve their annotations in the globals of their ``__module__``.
    """
    for name in names:
        value = namespace[name]
        if (
            isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__.startswith(module + ".")
        ):
            value.__module__ = module


class RecurseLambdaError(Exception):
    """Root of every error raised by recurse-lambda."""


class ConfigurationError(RecurseLambdaError):
    """The library is configured in a way that cannot work; raised before any side effect."""


class EnvelopeError(RecurseLambdaError):
    """A continuation envelope is malformed, of an unknown version, or cannot be loaded."""


class EnvelopeSignatureError(EnvelopeError):
    """A signing key is configured and the envelope's signature is missing or wrong."""


class BudgetError(RecurseLambdaError):
    """The time budget of an invocation cannot be kept."""


class ChunkTooLargeError(BudgetError):
    """A single chunk takes longer than a whole invocation can give it."""

    def __init__(
        self, chunk_s: float, budget_s: float, what: str | None = None, *, chunk: int | None = None
    ) -> None:
        self.chunk_s = chunk_s  # the chunk's duration (for a chunk that never finished: at least this)
        self.budget_s = budget_s  # what a whole invocation has for work
        self.chunk = chunk  # the chunk's index in the chain (0-based), when known
        what = what or (
            f"a single chunk took {chunk_s:.3f} s, more than a whole invocation's {budget_s:.3f} s for work"
        )
        super().__init__(f"{what}; yield more often (smaller chunks) or raise the function's timeout")


class GuardExceeded(RecurseLambdaError):
    """A chain guard (maximum hops, maximum duration) tripped; the chain is failed cleanly."""


class MaxHopsExceeded(GuardExceeded):
    """The chain would need more hops than ``max_hops`` allows."""


class MaxDurationExceeded(GuardExceeded):
    """The chain has run longer than ``max_duration`` allows."""


class HandOffError(RecurseLambdaError):
    """The next hop could not be started."""


class LedgerConflict(RecurseLambdaError):
    """A conditional ledger write failed; ``current`` is the record as the ledger holds it (or None)."""

    def __init__(self, message: str, current: ChainRecord | None) -> None:
        super().__init__(message)
        self.current = current


class LedgerError(RecurseLambdaError):
    """The ledger's store failed for a reason other than a refused condition (throttled, missing table, denied).

    The runner treats it as transient: the invocation raises and Lambda retries it. ``code`` is the AWS error
    code when there was one.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LostLeaseError(LedgerConflict):
    """This invocation no longer owns its hop; it must stop without handing off."""


class ChainFailed(RecurseLambdaError):
    """The chain ended FAILED. ``last_state`` is its last committed state, from which it can resume."""

    def __init__(self, chain_id: str, error: str, last_state: Any) -> None:
        super().__init__(f"chain {chain_id} failed: {error}")
        self.chain_id = chain_id
        self.error = error
        self.last_state = last_state


class TriggerError(RecurseLambdaError):
    """An event-source event that cannot be dispatched: empty, malformed, or a record that describes no job."""


class MalformedRecordError(RecurseLambdaError):
    """A record cannot be parsed; ``offset`` is the byte where it starts (resume past it by hand if you must)."""

    def __init__(
        self, message: str, *, offset: int, bucket: str | None = None, key: str | None = None
    ) -> None:
        self.offset = offset
        self.bucket = bucket
        self.key = key
        where = f"s3://{bucket}/{key}" if bucket is not None and key is not None else "the object"
        super().__init__(f"malformed record at byte {offset} of {where}: {message}")


class DecompressionError(RecurseLambdaError, ValueError):
    """The object is not valid gzip or zstd data (corrupt, truncated, or another format), or a shard of it does
    not end at a gzip member or zstd frame boundary. Permanent: the bytes are the same on every attempt.

    Also a ``ValueError``, which it was before it joined this tree.
    """


class S3Error(RecurseLambdaError):
    """An S3 request failed in a way the library can name."""


class ObjectNotFoundError(S3Error):
    """The object does not exist."""


class BucketNotFoundError(S3Error):
    """The bucket does not exist."""


class AccessDeniedError(S3Error):
    """The caller may not read the object."""


class ObjectChangedError(S3Error):
    """The object a chain pinned by ETag changed while the chain was running."""

    def __init__(self, bucket: str, key: str, expected_etag: str, current_etag: str | None) -> None:
        self.bucket = bucket
        self.key = key
        self.expected_etag = expected_etag
        self.current_etag = current_etag
        now = current_etag if current_etag is not None else "unknown"
        super().__init__(
            f"s3://{bucket}/{key} changed while the chain was reading it: pinned ETag {expected_etag}, "
            f"now {now}; the chain stops rather than mix two versions of the object"
        )


# Errors raised by the chain's control, its hand-off, its notices and its deployment checks.


class UnknownChainError(RecurseLambdaError):
    """The ledger holds no chain with this id (never started, or removed after its retention)."""

    def __init__(self, chain_id: str) -> None:
        super().__init__(
            f"no chain {chain_id!r} in the ledger (never started, or expired after its retention)"
        )
        self.chain_id = chain_id


class ChainStateError(LedgerConflict):
    """The chain is not in a state that allows the action; ``current`` is the record as the ledger holds it."""

    def __init__(self, message: str, current: ChainRecord) -> None:
        super().__init__(message, current)
        self.status = current.status


class InvokeThrottled(HandOffError):
    """The invoke was throttled; ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotifyError(RecurseLambdaError):
    """A failure notice could not be sent. The runner logs it and carries on: the chain is FAILED anyway."""


class RecursionNotAllowed(ConfigurationError):
    """The function's ``RecursiveLoop`` is ``Terminate``: Lambda would stop the chain after about 16 hops."""

    def __init__(self, function: str) -> None:
        self.function = function
        name = (
            function.split(":")[6] if function.startswith("arn:") and function.count(":") >= 6 else function
        )
        super().__init__(
            f"function {function} has RecursiveLoop=Terminate: AWS's recursive loop detection stops a chain "
            "of self-invocations after about 16 invocations, so this chain would be cut off in mid-run. Set "
            "it to Allow: `aws lambda put-function-recursion-config --function-name "
            f"{name} --recursive-loop Allow` (PutFunctionRecursionConfig), or `RecursiveLoop: Allow` on the "
            "function in the template (AWS::Serverless::Function in SAM, AWS::Lambda::Function in "
            "CloudFormation, recursiveLoop in the CDK). The library's own guards, max_hops and max_duration, "
            "bound the chain instead."
        )


class HopNotDead(RecurseLambdaError):
    """An on-failure record came for a hop that may still be alive: raised so that it is delivered again later."""


class OutOfTime(RecurseLambdaError, TimeoutError):
    """``await run.within(...)`` ran out of the time the invocation can give it before its hand-off reserve.

    A ``TimeoutError``: catch it and ``yield`` (a safe point), and the runner hands off so that the next hop
    tries the await again with a whole invocation; uncaught, it fails the attempt and Lambda retries it.
    """


class OutputExistsError(ObjectChangedError):
    """The output key holds an object the writer may not replace (``if_exists="fail"``), or another writer's.

    Permanent (it derives from :class:`ObjectChangedError`): retrying would not change the answer.
    """

    def __init__(self, bucket: str, key: str, message: str) -> None:
        self.bucket, self.key = bucket, key
        self.expected_etag, self.current_etag = "", None
        S3Error.__init__(self, f"s3://{bucket}/{key}: {message}")
