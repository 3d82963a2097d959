"""``@recursive``: a thin decorator that builds a :class:`RecursiveHandler` around the runner."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, overload

from ..config import ChainConfig
from ..core.clock import SystemClock
from ..triggers.start import dispatch
from .hop import Handler, Hop
from .route import Kind, route
from .warm import WarmState
from .world import World


class RecursiveHandler:
    """A Lambda handler ``(event, context)`` that runs the wrapped function as a chain of invocations.

    ``warm`` is this container's :class:`WarmState`; ``handle`` runs one invocation in an injected
    :class:`World` (the simulator uses it), and calling the handler runs it in the AWS world.
    """

    def __init__(self, fn: Handler, config: ChainConfig) -> None:
        self.fn = fn
        self.config = config
        self.warm = WarmState()
        self._world: World | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        return self.handle(event, context, self.aws_world())

    def handle(self, event: Any, context: Any, world: World) -> dict[str, Any]:
        """Run one invocation in ``world``: a hop of a chain, or the start of one chain per job of a trigger
        event (S3, EventBridge, SQS, Kinesis, DynamoDB streams; see :mod:`recurse_lambda.triggers`).

        The event is routed once (:func:`~recurse_lambda.chain.route.route`; it raises TriggerError for an empty
        or malformed batch). A trigger event Lambda gave up on (S3 or EventBridge, invoked asynchronously) comes
        back through the on-failure forwarder and its records are tried once more: started chains join, and if
        it fails again, the forwarder keeps the record in its queue, so nothing is dropped silently.
        """
        routed = route(event)
        if routed.kind in (Kind.TRIGGER, Kind.TRIGGER_RETRY):
            return dispatch(self.config, routed.event, context, world)
        return Hop(self.fn, self.config, context, world).run(routed)

    def aws_world(self) -> World:
        """The production world: real clock, Lambda self-invoke, S3 spill, the configured ledger.

        Built once per container and reused; no client is created until it is first used.
        """
        if self._world is None:
            from ..aws import LambdaInvoker, S3SpillStore

            warm = self.warm
            bucket = self.config.spill_bucket or os.environ.get("RECURSE_LAMBDA_SPILL_BUCKET")
            prefix = self.config.spill_prefix or os.environ.get(
                "RECURSE_LAMBDA_SPILL_PREFIX", "recurse-lambda/envelopes/"
            )
            self._world = World(
                clock=SystemClock(),
                invoker=LambdaInvoker(warm.client_getter("lambda")),
                warm=warm,
                ledger=self.config.ledger,
                spill=S3SpillStore(warm.client_getter("s3"), bucket, prefix) if bucket else None,
                s3_client=warm.client_getter("s3"),
                environ=os.environ,
                recursion_guard=self._recursion_guard if self.config.check_recursion else None,
            )
        return self._world

    def _recursion_guard(self, context: Any) -> Any:
        """The container's RecursionGuard (asks GetFunctionRecursionConfig once per container)."""
        warm = self.warm
        if warm.recursion_guard is None:
            from ..aws._recursion import RecursionGuard

            warm.recursion_guard = RecursionGuard(
                str(context.invoked_function_arn), client=warm.client_getter("lambda")
            )
        return warm.recursion_guard

    def __repr__(self) -> str:
        return f"<recursive handler {self.fn.__module__}.{self.fn.__qualname__}>"


@overload
def recursive(fn: Handler, /) -> RecursiveHandler: ...


@overload
def recursive(fn: None = None, /, **options: Any) -> Callable[[Handler], RecursiveHandler]: ...


def recursive(
    fn: Handler | None = None, /, **options: Any
) -> RecursiveHandler | Callable[[Handler], RecursiveHandler]:
    """Run ``fn(event, state, run)`` as a chain of Lambda invocations.

    ``fn`` is a generator: each ``yield`` is a safe point where the runner may hand off, and its ``return``
    value is the chain's result; a plain function is a one-hop chain. Works bare (``@recursive``) or with the
    options of :class:`ChainConfig` (``@recursive(state=Progress, ledger=...)``).
    """
    config = ChainConfig(**options)

    def wrap(f: Handler) -> RecursiveHandler:
        if not callable(f):
            raise TypeError(f"@recursive decorates a function, not {f!r}")
        return RecursiveHandler(f, config)

    return wrap(fn) if fn is not None else wrap
