"""A fake ``LambdaContext`` whose remaining time comes from a clock that ticks."""

from __future__ import annotations

from typing import Any

from .. import Clock  # the public API (tests/test_layers.py, rule d)


class FakeContext:
    """Every attribute of the Python runtime's ``LambdaContext``; remaining time is ``deadline - clock.now()``."""

    def __init__(
        self,
        *,
        clock: Clock,
        deadline: float,
        aws_request_id: str,
        function_name: str = "recurse-lambda-sim",
        function_version: str = "$LATEST",
        region: str = "us-east-1",
        account: str = "123456789012",
        alias: str | None = None,
        memory_limit_in_mb: int = 1024,
    ) -> None:
        self._clock = clock
        self._deadline = deadline
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.invoked_function_arn = f"{arn}:{alias}" if alias else arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)  # the runtime gives a string
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"2026/01/01/[{function_version}]{aws_request_id[:32]}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.now()) * 1000))

    def __repr__(self) -> str:
        return f"FakeContext(request_id={self.aws_request_id!r}, remaining_ms={self.get_remaining_time_in_millis()})"
