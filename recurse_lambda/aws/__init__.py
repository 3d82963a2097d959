"""AWS implementations of the core protocols. Each is replaceable and creates its boto3 client lazily."""

from ..errors import LedgerError, RecursionNotAllowed
from ._dynamodb import DynamoDBLedger
from ._env import ledger_from_env
from ._lambda import LambdaInvoker
from ._notify import EventBridgeNotifier, SnsNotifier, SqsNotifier
from ._recursion import RecursionGuard
from ._spill import S3SpillStore

__all__ = [
    "DynamoDBLedger",
    "EventBridgeNotifier",
    "LambdaInvoker",
    "LedgerError",
    "RecursionGuard",
    "RecursionNotAllowed",
    "S3SpillStore",
    "SnsNotifier",
    "SqsNotifier",
    "ledger_from_env",
]
