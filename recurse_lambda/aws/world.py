"""The AWS world's wiring: what a handler runs with on Lambda, and the clients it makes during Lambda's init.

:func:`build_world` gives one container's :class:`~recurse_lambda.World`: the system clock, Lambda's
self-invoke, S3 spill (when a spill bucket is configured), the configured ledger, S3 listing for sharded jobs
and the recursion-setting guard. No client is created there; each is made at its first use, through the
container's :class:`~recurse_lambda.WarmState` (whose default factory is :mod:`recurse_lambda.aws.clients`).

:func:`prime` makes the clients a chain needs ahead of time. ``RecursiveHandler`` calls it when it is built
inside Lambda (``AWS_LAMBDA_RUNTIME_API`` is set), which is during the init phase (the module's import), whose
time does not count against the first invocation's timeout. Elsewhere nothing is created at import.

Under SnapStart the init phase is snapshotted and restored later, possibly many times. What :func:`prime`
leaves behind survives that: a botocore client opens no connection until its first request (its pool is
empty in the snapshot), its credentials under SnapStart come from the container credentials provider and
refresh when they expire, and it holds no clock reading or random value that must be unique per copy
(retry jitter and idempotency tokens are drawn at each request).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import ChainConfig, spill_location
from ..core.clock import SystemClock
from . import clients
from ._dynamodb import DynamoDBLedger
from ._lambda import LambdaInvoker
from ._recursion import RecursionGuard
from ._spill import S3SpillStore

if TYPE_CHECKING:
    from ..chain.warm import WarmState
    from ..chain.world import World
    from ..shards.plan import ObjectInfo, SourceRef

__all__ = ["RUNTIME_API_ENV", "build_world", "in_lambda", "prime"]

#: Set by Lambda (and by the local Lambda's runtime API) in every function's environment.
RUNTIME_API_ENV = "AWS_LAMBDA_RUNTIME_API"


def in_lambda() -> bool:
    """Whether this process runs behind a Lambda runtime API (Lambda itself, or the local Lambda)."""
    return bool(os.environ.get(RUNTIME_API_ENV))


def build_world(config: ChainConfig, warm: WarmState) -> World:
    """The production world of a handler with ``config`` in the container whose state is ``warm``."""
    from ..chain.world import World

    bucket, prefix = spill_location(os.environ, config.spill_bucket, config.spill_prefix)
    s3 = warm.client_getter("s3")
    return World(
        clock=SystemClock(),
        invoker=LambdaInvoker(warm.client_getter("lambda")),
        warm=warm,
        ledger=config.ledger,
        spill=S3SpillStore(s3, bucket, prefix) if bucket else None,
        s3_client=s3,
        environ=os.environ,
        recursion_guard=recursion_guard(warm) if config.check_recursion else None,
        lister=lister(s3),
    )


def recursion_guard(warm: WarmState) -> Callable[[Any], RecursionGuard]:
    """The container's RecursionGuard for an invocation's context (GetFunctionRecursionConfig once per
    container: the guard is kept in ``warm``)."""

    def guard(context: Any) -> RecursionGuard:
        if warm.recursion_guard is None:
            warm.recursion_guard = RecursionGuard(
                str(context.invoked_function_arn), client=warm.client_getter("lambda")
            )
        found: RecursionGuard = warm.recursion_guard
        return found

    return guard


def lister(s3: Callable[[], Any]) -> Callable[[SourceRef], list[ObjectInfo]]:
    """Lists what a sharded job reads (one object, or a prefix) with the container's S3 client."""

    def list_source(ref: SourceRef) -> list[ObjectInfo]:
        from ..s3._objects import list_objects

        return list_objects(s3(), ref)

    return list_source


def prime(config: ChainConfig) -> list[str]:
    """Create now the clients a chain with ``config`` needs: Lambda (the hand-off), S3 (spill, readers,
    listing) and DynamoDB when the ledger is a :class:`DynamoDBLedger`. Returns the services primed.

    The clients are those of :mod:`recurse_lambda.aws.clients`, which the container's WarmState and the
    ledger's default getters return, so the first hop finds them made. No request is sent.
    """
    services = ["lambda", "s3"]
    for service in services:
        clients.client(service)
    if isinstance(config.ledger, DynamoDBLedger):
        config.ledger.prime()
        services.append("dynamodb")
    return services
