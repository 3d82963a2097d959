"""The Lambda self-invoke adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..errors import HandOffError, InvokeThrottled


def _retry_after(error: ClientError) -> float | None:
    response: dict[str, Any] = error.response
    raw = response.get("retryAfterSeconds")
    if raw is None:
        raw = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


class LambdaInvoker:
    """Invokes a function asynchronously through a boto3 Lambda client (created on first use)."""

    def __init__(self, client_getter: Callable[[], Any]) -> None:
        self._get_client = client_getter

    def _lambda(self) -> Any:
        return self._get_client()

    def invoke_async(self, function: str, payload: bytes) -> None:
        try:
            response = self._lambda().invoke(FunctionName=function, InvocationType="Event", Payload=payload)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "TooManyRequestsException":
                raise InvokeThrottled(f"invoke of {function} throttled", _retry_after(exc)) from exc
            raise HandOffError(f"invoke of {function} failed: {code or exc}") from exc
        status = response.get("StatusCode")
        if status != 202:
            raise HandOffError(f"asynchronous invoke of {function} answered status {status}, expected 202")
