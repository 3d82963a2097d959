"""One execution environment of the local Lambda: a Lambda Runtime API server on loopback and the
``python -m awslambdaric MODULE.FUNCTION`` process it feeds, with the deadline watchdog.

The Runtime API is the one AWS documents (``/2018-06-01/runtime/...``), as far as AWS's runtime interface
client uses it: ``GET invocation/next`` (long poll), ``POST invocation/{id}/response``, ``POST
invocation/{id}/error`` and ``POST init/error``. A worker runs one invocation at a time. At the deadline the
process is killed with SIGKILL and a new one is started on the same ``TMPDIR``: memory is lost, ``/tmp`` kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Invocation", "Result", "Worker"]

PREFIX = "/2018-06-01/runtime"
INIT_LIMIT = 10.0  # Lambda's init phase limit: an environment that is not ready by then fails the invocation


@dataclass
class Invocation:
    """One delivery of an event to a worker (a retry is a new Invocation with the same request id)."""

    request_id: str
    payload: bytes
    function_arn: str
    attempt: int = 1
    kind: str = "event"  # event | retry | duplicate | sync | destination


@dataclass
class Result:
    """How an invocation ended: ``ok`` with the response body, or an error (function error, timeout, crash)."""

    ok: bool
    body: bytes = b""
    error_type: str | None = None  # Unhandled, Runtime.ExitError, Sandbox.Timedout, Runtime.InitError ...
    duration: float = 0.0
    log: list[str] = field(default_factory=list)


class _Slot:
    """The invocation a worker is running, and the Runtime API's view of it."""

    def __init__(self, inv: Invocation, timeout: float) -> None:
        self.inv = inv
        self.timeout = timeout
        self.handed_out = threading.Event()
        self.done = threading.Event()
        self.started = 0.0
        self.result: Result | None = None

    def finish(self, result: Result) -> bool:
        if self.done.is_set():
            return False
        self.result = result
        self.done.set()
        return True


class _RuntimeAPIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the runtime client keeps its connection open between requests
    server: _RuntimeAPIServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output is the function's logs
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/invocation/next":
            self._reply(404, b'{"errorType":"InvalidRequest"}')
            return
        worker = self.server.worker
        generation = worker.generation
        while True:  # long poll, until an invocation is queued or this process was replaced
            if worker.generation != generation or worker.stopping:
                self._reply(410, b'{"errorType":"Gone"}')
                return
            try:
                slot = worker.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            break
        slot.started = time.time()
        deadline_ms = int((slot.started + slot.timeout) * 1000)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": slot.inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": slot.inv.function_arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(slot.started):08x}-{slot.inv.request_id.replace('-', '')[:24]}",
        }
        worker.current = slot
        slot.handed_out.set()
        self._reply(200, slot.inv.payload, headers)

    def do_POST(self) -> None:
        body = self._body()
        worker = self.server.worker
        if self.path == f"{PREFIX}/init/error":
            worker.init_error = body
            slot = worker.current
            if slot is not None:
                slot.finish(Result(False, body, "Runtime.InitError", time.time() - slot.started))
            self._reply(202, b'{"status":"OK"}')
            return
        parts = self.path.removeprefix(f"{PREFIX}/invocation/").split("/")
        slot = worker.current
        if len(parts) != 2 or parts[1] not in ("response", "error"):
            self._reply(404, b'{"errorType":"InvalidRequest"}')
            return
        if slot is None or slot.inv.request_id != parts[0] or slot.done.is_set():
            self._reply(400, b'{"errorType":"InvalidStateTransition"}')
            return
        duration = time.time() - slot.started
        if parts[1] == "response":
            slot.finish(Result(True, body, None, duration))
        else:
            kind = self.headers.get("Lambda-Runtime-Function-Error-Type") or "Unhandled"
            slot.finish(Result(False, body, kind, duration))
        self._reply(202, b'{"status":"OK"}')


class _RuntimeAPIServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed process's connection: expected
            super().handle_error(request, client_address)

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        super().__init__(("127.0.0.1", 0), _RuntimeAPIHandler)


class Worker:
    """An execution environment: a Runtime API on a free loopback port and its awslambdaric process."""

    def __init__(
        self, number: int, handler: str, environ: dict[str, str], cwd: str, tmp_dir: Path, log_dir: Path
    ) -> None:
        self.number = number
        self.handler = handler
        self.cwd = cwd
        self.tmp_dir = tmp_dir
        self.log_path = log_dir / f"worker-{number}.log"
        self.pending: queue.Queue[_Slot] = queue.Queue()
        self.current: _Slot | None = None
        self.generation = 0
        self.stopping = False
        self.init_error: bytes | None = None
        self.restarts = 0  # processes started after the first (a timeout, a crash or an init error)
        self.invocations = 0
        self._server = _RuntimeAPIServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"runtime-api-{number}")
        self._thread.daemon = True
        self._thread.start()
        self.runtime_api = f"127.0.0.1:{self._server.server_address[1]}"
        self.environ = {**environ, "AWS_LAMBDA_RUNTIME_API": self.runtime_api, "TMPDIR": str(tmp_dir)}
        tmp_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawn()

    def _spawn(self) -> None:
        self.generation += 1
        self.init_error = None
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", self.handler],
            cwd=self.cwd,
            env=self.environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _restart(self) -> None:
        self._kill()
        self.restarts += 1
        self._spawn()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def run(self, inv: Invocation, timeout: float, kill_after: float | None = None) -> Result:
        """Run one invocation to its end: a response, an error, a crash, or SIGKILL at the deadline (or
        ``kill_after`` seconds into the invocation: an injected fault)."""
        self.invocations += 1
        if self._proc is None or self._proc.poll() is not None:  # died while idle (an init error, say)
            self._restart()
        slot = _Slot(inv, timeout)
        self.pending.put(slot)
        limit = time.time() + INIT_LIMIT
        while not slot.handed_out.wait(0.05):  # the init phase does not count against the timeout
            if self._proc is None or self._proc.poll() is not None or time.time() > limit:
                with contextlib.suppress(queue.Empty):
                    self.pending.get_nowait()
                error = self.init_error or b'{"errorMessage":"the runtime exited during init"}'
                self._restart()
                return Result(False, error, "Runtime.InitError")
        while not slot.done.wait(0.01):
            elapsed = time.time() - slot.started
            if elapsed >= timeout:
                self._restart()  # SIGKILL, and a fresh process on the same TMPDIR
                message = f"Task timed out after {timeout:.2f} seconds"
                slot.finish(Result(False, json.dumps({"errorMessage": message}).encode(), "Sandbox.Timedout"))
                break
            if kill_after is not None and elapsed >= kill_after:
                self._restart()
                body = json.dumps(
                    {"errorType": "Runtime.ExitError", "errorMessage": "killed (injected fault)"}
                )
                slot.finish(Result(False, body.encode(), "Runtime.ExitError", elapsed))
                break
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self._restart()
                body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": f"exit status {code}"})
                slot.finish(Result(False, body.encode(), "Runtime.ExitError", elapsed))
                break
        self.current = None
        assert slot.result is not None
        if slot.result.error_type in ("Runtime.InitError",):
            self._restart()
        return slot.result

    def stop(self) -> None:
        self.stopping = True
        self._kill()
        self._server.shutdown()
        self._server.server_close()
        self._log.close()
