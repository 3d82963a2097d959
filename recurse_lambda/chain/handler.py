"""``@recursive``: a thin decorator that builds a :class:`RecursiveHandler` around the runner."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, overload

from ..config import ChainConfig
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
        if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # built during Lambda's init: make the clients now
            _prime(config)

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
        """The production world (see :func:`recurse_lambda.aws.world.build_world`), built once per container
        and reused; no client is created until it is first used (or primed at init, inside Lambda)."""
        if self._world is None:
            from ..aws.world import build_world

            self._world = build_world(self.config, self.warm)
        return self._world

    def __repr__(self) -> str:
        return f"<recursive handler {self.fn.__module__}.{self.fn.__qualname__}>"


def _prime(config: ChainConfig) -> None:
    """Create the chain's clients during Lambda's init phase, which the first hop's timeout does not pay for;
    a failure only leaves them to be made at first use, where it is reported as it was before."""
    try:
        from ..aws.world import prime

        prime(config)
    except Exception as exc:  # an optimisation must not break the import of the function
        logging.getLogger("recurse_lambda").warning(
            "recurse-lambda could not create its clients at init: %s", exc
        )


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
