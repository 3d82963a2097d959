"""The Lambda Invoke API of :class:`~recurse_lambda.local.lambda_runtime.LocalLambda`: an HTTP server on loopback.

``Invoke`` (``POST /2015-03-31/functions/{name}/invocations``) and ``GetFunctionRecursionConfig``
(``GET /2024-08-31/functions/{name}/recursion-config``), answered as the Lambda service answers them; the
function itself (queue, workers, retries) is the ``LocalLambda`` this server is given.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from .lambda_runtime import LocalLambda

__all__ = ["InvokeHandler", "InvokeServer"]


class InvokeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: InvokeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, **extra: Any) -> None:
        body = json.dumps({"Type": "User", "message": message, **extra}).encode()
        self._reply(status, body, {"x-amzn-ErrorType": code})

    def _function(self, api: str, suffix: str) -> str | None:
        """The function named in the path (a name, a partial or full ARN, with or without a qualifier)."""
        path = urlsplit(self.path).path
        prefix = f"/{api}/functions/"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            return None
        name = unquote(path[len(prefix) : len(path) - len(suffix)])
        parts = name.split(":")
        if name.startswith("arn:") and len(parts) >= 7:
            return parts[6]
        if len(parts) >= 3 and parts[1] == "function":  # ACCOUNT:function:NAME[:QUALIFIER]
            return parts[2]
        return parts[0]

    def _known(self, name: str | None) -> bool:
        fn = self.server.fn
        if name == fn.name:
            return True
        self._error(
            404, "ResourceNotFoundException", f"Function not found: {fn.arn.replace(fn.name, str(name))}"
        )
        return False

    def do_GET(self) -> None:
        fn = self.server.fn
        for api in ("2024-08-31", "2019-09-30"):
            name = self._function(api, "/recursion-config")
            if name is not None:
                if self._known(name):
                    body = {"RecursiveLoop": fn.recursive_loop}
                    self._reply(200, json.dumps(body).encode())
                return
        self._error(404, "UnknownOperationException", f"unknown operation GET {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        name = self._function("2015-03-31", "/invocations")
        if name is None:
            self._error(404, "UnknownOperationException", f"unknown operation POST {self.path}")
            return
        if not self._known(name):
            return
        fn = self.server.fn
        qualifier = parse_qs(urlsplit(self.path).query).get("Qualifier", ["$LATEST"])[0]
        if qualifier != "$LATEST":
            self._error(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{qualifier}")
            return
        kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if fn.take_throttle():
            self._error(429, "TooManyRequestsException", "Rate Exceeded.", Reason="CallerRateLimitExceeded")
            return
        if kind == "DryRun":
            self._reply(204)
        elif kind == "Event":
            if len(payload) > 1024 * 1024:
                self._error(413, "RequestTooLargeException", "Request must be smaller than 1048576 bytes")
                return
            fn.invoke_async(payload)
            self._reply(202)
        elif kind == "RequestResponse":
            result = fn.invoke_sync(payload)
            headers = {"X-Amz-Executed-Version": "$LATEST"}
            if not result.ok:
                headers["X-Amz-Function-Error"] = "Unhandled"
            self._reply(200, result.body, headers)
        else:
            self._error(400, "InvalidParameterValueException", f"unknown invocation type {kind}")


class InvokeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fn: LocalLambda) -> None:
        self.fn = fn
        super().__init__(("127.0.0.1", 0), InvokeHandler)
