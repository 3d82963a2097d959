"""AWS implementations of the core protocols. Each is replaceable and creates its boto3 client lazily."""

from ._lambda import LambdaInvoker
from ._spill import S3SpillStore

__all__ = ["LambdaInvoker", "S3SpillStore"]
