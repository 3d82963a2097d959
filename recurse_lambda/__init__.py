"""recurse-lambda: run long tasks on AWS Lambda as a fork-free chain of self-invocations.

Importing this package is light: no boto3 client is created, and the simulator, the embedded S3 and the CLI
are imported only when used.
"""

from ._clock import Clock, SystemClock
from ._config import ChainConfig, EmptyState
from ._control import ChainControl, ChainStateError, UnknownChainError
from ._envelope import ENVELOPE_KEY, Envelope, EnvelopeCodec, SpillStore
from ._errors import (
    AccessDeniedError,
    BucketNotFoundError,
    BudgetError,
    ChainFailed,
    ChunkTooLargeError,
    ConfigurationError,
    EnvelopeError,
    EnvelopeSignatureError,
    GuardExceeded,
    HandOffError,
    LedgerConflict,
    LedgerError,
    LostLeaseError,
    MalformedRecordError,
    MaxDurationExceeded,
    MaxHopsExceeded,
    ObjectChangedError,
    ObjectNotFoundError,
    RecurseLambdaError,
    S3Error,
    TriggerError,
)
from ._errors import publish_exceptions as _publish_exceptions
from ._invoke import Invoker, InvokeThrottled, same_version_target
from ._ledger import ChainRecord, ChainStatus, InMemoryLedger, Ledger
from ._notify import ChainFailureNotice, FailureNotifier, NotifyError
from ._policy import (
    BudgetPolicy,
    BudgetState,
    ChunkTimings,
    HandOffTimings,
    Policy,
    after_chunks,
    fixed_margin,
    predictive,
)
from ._recursive import RecursiveHandler, recursive
from ._shards import Shard, Shards, SourceRef
from ._warm import WarmState
from ._world import InvocationStats, Outcome, Run, World

__version__ = "0.1.0"

__all__ = [
    "ENVELOPE_KEY",
    "AccessDeniedError",
    "BucketNotFoundError",
    "BudgetError",
    "BudgetPolicy",
    "BudgetState",
    "ChainConfig",
    "ChainControl",
    "ChainFailed",
    "ChainFailureNotice",
    "ChainRecord",
    "ChainStateError",
    "ChainStatus",
    "ChunkTimings",
    "ChunkTooLargeError",
    "Clock",
    "ConfigurationError",
    "EmptyState",
    "Envelope",
    "EnvelopeCodec",
    "EnvelopeError",
    "EnvelopeSignatureError",
    "FailureNotifier",
    "GuardExceeded",
    "HandOffError",
    "HandOffTimings",
    "InMemoryLedger",
    "InvocationStats",
    "InvokeThrottled",
    "Invoker",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LostLeaseError",
    "MalformedRecordError",
    "MaxDurationExceeded",
    "MaxHopsExceeded",
    "NotifyError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "Outcome",
    "Policy",
    "RecurseLambdaError",
    "RecursiveHandler",
    "Run",
    "S3Error",
    "Shard",
    "Shards",
    "SourceRef",
    "SpillStore",
    "SystemClock",
    "TriggerError",
    "UnknownChainError",
    "WarmState",
    "World",
    "__version__",
    "after_chunks",
    "fixed_margin",
    "predictive",
    "recursive",
    "same_version_target",
]

_publish_exceptions(__name__, __all__, globals())  # tracebacks show recurse_lambda.ChainFailed, not ._errors
