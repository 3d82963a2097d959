"""AWS implementations of the core protocols. Each is replaceable and creates its boto3 client lazily."""

from ._dynamodb import DynamoDBLedger, LedgerError
from ._lambda import LambdaInvoker
from ._spill import S3SpillStore

__all__ = ["DynamoDBLedger", "LambdaInvoker", "LedgerError", "S3SpillStore"]
