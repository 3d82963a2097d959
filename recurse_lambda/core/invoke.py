"""How a hop starts the next one: the :class:`Invoker` protocol and the choice of target."""

from __future__ import annotations

from typing import Any

from .ports import Invoker

__all__ = ["Invoker", "same_version_target"]


def same_version_target(context: Any) -> str:
    """The ARN of the exact code this invocation runs, so a deploy in mid-chain never mixes code.

    ``invoked_function_arn`` may carry an alias (``:prod``) or no qualifier at all; the published version
    behind it is ``function_version``. ``$LATEST`` cannot be pinned, so it stays unqualified.
    """
    arn = str(context.invoked_function_arn)
    parts = arn.split(":")
    base = ":".join(parts[:7]) if len(parts) >= 7 and parts[5] == "function" else arn
    version = str(getattr(context, "function_version", "$LATEST") or "$LATEST")
    return base if version == "$LATEST" else f"{base}:{version}"
