"""The recursive-loop guard: fail a chain at its start when Lambda would stop it after ~16 hops (DESIGN §6).

Lambda's recursive loop detection stops a chain of invocations, direct self-invocation included, after about
16 of them when the function's ``RecursiveLoop`` setting is ``Terminate`` (the default). A chain would then
die in mid-run with nothing but an on-failure record. :class:`RecursionGuard` asks once per container
(``GetFunctionRecursionConfig``) and turns ``Terminate`` into a clear error before any work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import RecursionNotAllowed
from . import clients

__all__ = ["RecursionGuard", "RecursionNotAllowed"]

# Answers that will not change by asking again: skip the check for the container's life.
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "UnknownOperationException",
        "ResourceNotFoundException",
        "InvalidParameterValueException",
    }
)


def _unqualified(function: str) -> str:
    """The function's ARN without a version or alias: the recursion setting belongs to the function."""
    parts = function.split(":")
    if len(parts) == 8 and parts[0] == "arn" and parts[5] == "function":
        return ":".join(parts[:7])
    return function


class RecursionGuard:
    """Checks once per container that the function may invoke itself without limit.

    ``check()`` raises :class:`RecursionNotAllowed` when the setting is ``Terminate``. When the question
    cannot be answered (the role may not call ``lambda:GetFunctionRecursionConfig``, the API is unknown to
    this botocore or unreachable) it warns once and lets the chain run: the check is a convenience, and
    Lambda's on-failure record still names the cause if the loop is stopped.

    ``Allow`` and a definite "cannot ask" are cached for the instance's life (keep one per container). A
    ``Terminate`` answer is not: it is asked again at the next chain's start, so a fix made with
    ``PutFunctionRecursionConfig`` takes effect without waiting for the container to be recycled. A transient
    error (throttling, a network failure) is not cached either.
    """

    def __init__(
        self,
        function_name_or_arn: str,
        client: Callable[[], Any] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.function = _unqualified(function_name_or_arn)
        self._get_client = client if client is not None else clients.getter("lambda")
        self._warn = warn if warn is not None else logging.getLogger("recurse_lambda").warning
        self._settled: str | None = None  # "Allow" (or another non-Terminate answer), or "skipped"
        self._warned = False
        self.calls = 0  # GetFunctionRecursionConfig requests made

    @property
    def setting(self) -> str | None:
        """The cached answer: the RecursiveLoop value, ``"skipped"``, or None when not settled yet."""
        return self._settled

    def check(self) -> None:
        if self._settled is not None:
            return
        try:
            client = self._get_client()
            if not hasattr(client, "get_function_recursion_config"):  # a botocore older than the API (2024)
                self._skip("this botocore does not know GetFunctionRecursionConfig", settled=True)
                return
            self.calls += 1
            response = client.get_function_recursion_config(FunctionName=self.function)
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            code = str(error.get("Code") or "Unknown")
            self._skip(f"{code}: {error.get('Message') or ''}".rstrip(": "), settled=code in _DENIED)
            return
        except BotoCoreError as exc:
            self._skip(f"{type(exc).__name__}: {exc}", settled=False)
            return
        value = str(response.get("RecursiveLoop") or "")
        if value == "Terminate":
            raise RecursionNotAllowed(self.function)
        if not value:
            self._skip("the answer named no RecursiveLoop setting", settled=True)
            return
        self._settled = value

    def _skip(self, why: str, *, settled: bool) -> None:
        if settled:
            self._settled = "skipped"
        if not self._warned:
            self._warned = True
            self._warn(
                f"recurse-lambda could not check the RecursiveLoop setting of {self.function} ({why}); the "
                "check is skipped. If the setting is Terminate, Lambda stops chains after about 16 "
                "invocations: set RecursiveLoop to Allow, grant lambda:GetFunctionRecursionConfig on the "
                "function, or turn the check off"
            )
