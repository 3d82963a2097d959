"""recurse-lambda: run long tasks on AWS Lambda as a fork-free chain of self-invocations.

Importing this package is light: no boto3 client is created, and the simulator, the embedded S3 and the CLI
are imported only when used.
"""

from .chain.handler import RecursiveHandler, recursive
from .chain.run import Run
from .chain.warm import WarmState
from .chain.world import InvocationStats, Outcome, World
from .config import ChainConfig, EmptyState
from .control import ChainControl
from .core.clock import Clock, SystemClock
from .core.codec import ENVELOPE_KEY, Envelope, EnvelopeCodec, SpillStore
from .core.invoke import Invoker, same_version_target
from .core.ledger import ChainRecord, ChainStatus, InMemoryLedger, Ledger
from .core.notify import ChainFailureNotice, FailureNotifier
from .core.policy import (
    BudgetPolicy,
    BudgetState,
    ChunkTimings,
    HandOffTimings,
    Policy,
    after_chunks,
    fixed_margin,
    predictive,
)
from .errors import (
    AccessDeniedError,
    BucketNotFoundError,
    BudgetError,
    ChainFailed,
    ChainStateError,
    ChunkTooLargeError,
    ConfigurationError,
    DecompressionError,
    EnvelopeError,
    EnvelopeSignatureError,
    GuardExceeded,
    HandOffError,
    InvokeThrottled,
    LedgerConflict,
    LedgerError,
    LostLeaseError,
    MalformedRecordError,
    MaxDurationExceeded,
    MaxHopsExceeded,
    NotifyError,
    ObjectChangedError,
    ObjectNotFoundError,
    OutOfTime,
    RecurseLambdaError,
    S3Error,
    TriggerError,
    UnknownChainError,
)
from .errors import publish_exceptions as _publish_exceptions
from .shards.plan import Shard, Shards, SourceRef

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
    "DecompressionError",
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
    "OutOfTime",
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
