"""A local Lambda that runs the real thing: AWS's runtime interface client in worker processes, fed through the
Lambda Runtime API, and invoked through the Lambda Invoke API over HTTP on loopback (docs/local-lambda.md).

Standard library plus ``awslambdaric`` (the ``lambda`` extra). What it emulates of the Lambda service:

- ``Invoke`` (``POST /2015-03-31/functions/{name}/invocations``): ``Event`` answers 202 and queues the event,
  ``RequestResponse`` answers 200 with the function's response (``X-Amz-Function-Error`` on an error),
  ``DryRun`` 204. :meth:`LocalLambda.throttle` makes the next requests answer 429 TooManyRequestsException.
- ``GetFunctionRecursionConfig`` (``GET /2024-08-31/functions/{name}/recursion-config``).
- Asynchronous invocation: a queue, warm workers reused, retries of a failed or timed-out event with the same
  request id after ``retry_delays``, optional duplicate deliveries (a new request id, as in the simulator), and
  the on-failure destination record handed back to the function synchronously, as the template's forwarder does.
- Each worker: its own Runtime API, ``TMPDIR`` and process, killed with SIGKILL at its timeout and restarted.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from ._invoke_api import InvokeServer
from ._lambda_worker import Invocation, Result, Worker

__all__ = ["ACCOUNT", "FailureRecord", "LocalLambda", "Invocation", "Result"]

ACCOUNT = "123456789012"
PASS_THROUGH = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB")


@dataclass
class FailureRecord:
    """An on-failure destination record, and what handing it back to the function answered."""

    record: dict[str, Any]
    forwarded: Result | None = None


@dataclass(order=True)
class _Queued:
    due: float
    seq: int
    inv: Invocation = field(compare=False)


def _library_path() -> str:
    """The directory holding the ``recurse_lambda`` package this process runs: workers import the same one."""
    return str(Path(__file__).resolve().parents[2])


class LocalLambda:
    """One function, run by ``workers`` awslambdaric processes behind an Invoke endpoint on 127.0.0.1.

    ``handler`` is Lambda's ``MODULE.FUNCTION``, imported from ``task_root``. ``environ`` adds to the function's
    environment (the ledger table, say); ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL_DYNAMODB`` pass through
    from this process unless given. ``retry_delays`` are the waits before the retries of a failed asynchronous
    event (Lambda: about 60 and 120 s; scaled down by default). ``duplicates`` is the probability that an
    accepted event is delivered a second time. ``kills`` is the probability that an asynchronous delivery's
    worker is killed with SIGKILL at a random moment before its deadline (a ``Runtime.ExitError``, retried);
    ``throttles`` the probability that an invoke is answered 429. ``forward_failures`` hands each on-failure record back to the
    function (a ``RequestResponse`` invoke), as the template's forwarder does.
    """

    def __init__(
        self,
        handler: str,
        task_root: str | os.PathLike[str],
        *,
        name: str = "function",
        workers: int = 2,
        timeout: float = 3.0,
        memory: int = 1024,
        region: str = "us-east-1",
        environ: Mapping[str, str] | None = None,
        retry_delays: Sequence[float] = (1.0, 2.0),
        duplicates: float = 0.0,
        duplicate_delay: float = 0.5,
        kills: float = 0.0,
        throttles: float = 0.0,
        forward_failures: bool = True,
        recursive_loop: str = "Allow",
        python_path: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        self.handler = handler
        self.task_root = str(Path(task_root).resolve())
        self.name = name
        self.region = region
        self.arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"
        self.timeout = timeout
        self.memory = memory
        self.retry_delays = tuple(retry_delays)
        self.duplicates = duplicates
        self.duplicate_delay = duplicate_delay
        self.kills = kills
        self.throttles = throttles
        self.forward_failures = forward_failures
        self.recursive_loop = recursive_loop
        self.workers_wanted = workers
        self.extra_environ = dict(environ or {})
        self.python_path = [self.task_root, *python_path, _library_path()]
        self.rng = random.Random(seed)
        self.failures: list[FailureRecord] = []  # on-failure destination records, in order
        self.deliveries: list[tuple[Invocation, Result]] = []  # every invocation that ran, and how it ended
        self.accepted = 0  # asynchronous invokes answered 202
        self.throttled = 0  # invokes answered 429
        self._throttle_next = 0
        self._queue: list[_Queued] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._idle: list[Worker] = []
        self._workers: list[Worker] = []
        self._running = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._dir: Path | None = None
        self._endpoint: str | None = None

    # ------------------------------------------------------------------------------------------ life cycle

    def start(self) -> LocalLambda:
        self._dir = Path(tempfile.mkdtemp(prefix=f"local-lambda-{self.name}-"))
        self._server = InvokeServer(self)
        self._endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._spawn_thread(self._server.serve_forever, "invoke-api")
        environ = self.function_environ()
        for n in range(self.workers_wanted):
            worker = Worker(
                n, self.handler, environ, self.task_root, self._dir / f"tmp-{n}", self._dir / "logs"
            )
            self._workers.append(worker)
            self._idle.append(worker)
        for n in range(self.workers_wanted):
            self._spawn_thread(self._dispatch, f"dispatch-{n}")
        return self

    def _spawn_thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def function_environ(self) -> dict[str, str]:
        """The environment of a worker process: Lambda's variables, dummy credentials, loopback endpoints."""
        keep = ("PATH", "LANG", "LC_ALL", "HOME", "SYSTEMROOT")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": "local",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_FORMAT": "JSON",
                "AWS_LAMBDA_LOG_LEVEL": "INFO",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "LAMBDA_TASK_ROOT": self.task_root,
                "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
                "_HANDLER": self.handler,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                # No profile, config or credentials file of the developer reaches the function.
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_ENDPOINT_URL_LAMBDA": self.endpoint_url,
                "PYTHONPATH": os.pathsep.join(self.python_path),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_environ)
        return env

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the local Lambda is not running; call start() or use it in a with block")
        return self._endpoint

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for worker in self._workers:
            worker.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._server = self._endpoint = self._dir = None

    def __enter__(self) -> LocalLambda:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ controls

    def throttle(self, requests: int = 1) -> None:
        """Answer the next ``requests`` invokes with 429 TooManyRequestsException (botocore retries some)."""
        with self._cond:
            self._throttle_next += requests

    def take_throttle(self) -> bool:
        """Whether this invoke is to be throttled (429): counts it down from :meth:`throttle`."""
        with self._cond:
            if self._throttle_next > 0:
                self._throttle_next -= 1
                self.throttled += 1
                return True
            if self.throttles and self.rng.random() < self.throttles:
                self.throttled += 1
                return True
            return False

    def logs(self) -> str:
        """Everything the worker processes wrote (the function's logs, JSON lines), worker by worker."""
        if self._dir is None:
            return ""
        return "".join(p.read_text(errors="replace") for p in sorted((self._dir / "logs").glob("*.log")))

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log records of the workers (the library's hop records among them), worker by worker, each
        with ``worker`` (its number) added."""
        if self._dir is None:
            return []
        records = []
        for path in sorted((self._dir / "logs").glob("worker-*.log")):
            worker = int(path.stem.removeprefix("worker-"))
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        message = record.get("message")
                        if isinstance(message, str) and message.startswith("{"):
                            with contextlib.suppress(ValueError):
                                record = {**record, **json.loads(message)}
                        records.append({**record, "worker": worker})
        return records

    @property
    def worker_restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    def wait_idle(self, timeout: float = 60.0, settle: float = 0.3) -> bool:
        """Wait until nothing is queued or running for ``settle`` seconds; False when ``timeout`` passes first."""
        end = time.time() + timeout
        quiet_since: float | None = None
        while time.time() < end:
            with self._cond:
                idle = not self._queue and self._running == 0
            if idle:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since >= settle:
                    return True
            else:
                quiet_since = None
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------------------------------------ invoking

    def invoke_async(self, payload: bytes) -> str:
        """Queue an event as ``InvocationType=Event`` does; returns its request id."""
        inv = Invocation(str(uuid.uuid4()), payload, self.arn)
        self._enqueue(inv, 0.0)
        self.accepted += 1
        if self.duplicates and self.rng.random() < self.duplicates:
            dup = Invocation(str(uuid.uuid4()), payload, self.arn, kind="duplicate")
            self._enqueue(dup, self.rng.uniform(0.0, self.duplicate_delay))
        return inv.request_id

    def invoke_sync(self, payload: bytes, kind: str = "sync") -> Result:
        """Run an event as ``RequestResponse`` does, on the next free worker, and return how it ended."""
        inv = Invocation(str(uuid.uuid4()), payload, self.arn, kind=kind)
        worker = self._take_worker()
        try:
            return self._run(worker, inv)
        finally:
            self._release(worker)

    def _enqueue(self, inv: Invocation, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._queue, _Queued(time.time() + delay, next(self._seq), inv))
            self._cond.notify_all()

    def _take_worker(self) -> Worker:
        with self._cond:
            while not self._idle:
                if self._stopping:
                    raise RuntimeError("the local Lambda stopped")
                self._cond.wait(0.1)
            self._running += 1
            return self._idle.pop()  # the most recently used: warm workers are reused first

    def _release(self, worker: Worker) -> None:
        with self._cond:
            self._running -= 1
            self._idle.append(worker)
            self._cond.notify_all()

    def _run(self, worker: Worker, inv: Invocation) -> Result:
        kill_after = None
        if self.kills and inv.kind != "destination" and self.rng.random() < self.kills:
            kill_after = self.rng.uniform(0.0, self.timeout)
        result = worker.run(inv, self.timeout, kill_after=kill_after)
        with self._cond:
            self.deliveries.append((inv, result))
        return result

    def _dispatch(self) -> None:
        """One of ``workers`` threads: take the next due event and a free worker, run it, retry or give up."""
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.time()
                    if self._queue and self._queue[0].due <= now and self._idle:
                        inv = heapq.heappop(self._queue).inv
                        worker = self._idle.pop()
                        self._running += 1
                        break
                    wait = self._queue[0].due - now if self._queue else 0.1
                    self._cond.wait(min(max(wait, 0.005), 0.1))
            try:
                result = self._run(worker, inv)
            finally:
                self._release(worker)
            if not result.ok and not self._stopping:
                self._retry_or_give_up(inv, result)

    def _retry_or_give_up(self, inv: Invocation, result: Result) -> None:
        if inv.kind == "destination":
            return  # the forwarder's own invoke is synchronous: the forwarder, not Lambda, handles its failure
        if inv.attempt <= len(self.retry_delays):
            retry = Invocation(inv.request_id, inv.payload, inv.function_arn, inv.attempt + 1, "retry")
            self._enqueue(retry, self.retry_delays[inv.attempt - 1])
            return
        record = self.failure_record(inv, result, "RetriesExhausted")
        failure = FailureRecord(record)
        with self._cond:
            self.failures.append(failure)
        if self.forward_failures:
            failure.forwarded = self._forward(record)

    def failure_record(self, inv: Invocation, result: Result, condition: str) -> dict[str, Any]:
        """The record Lambda sends to an on-failure destination for an event it gave up on."""
        try:
            payload: Any = json.loads(inv.payload)
        except ValueError:
            payload = inv.payload.decode(errors="replace")
        try:
            response: Any = json.loads(result.body)
        except ValueError:
            response = result.body.decode(errors="replace")
        return {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestContext": {
                "requestId": inv.request_id,
                "functionArn": f"{self.arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": inv.attempt,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": response,
        }

    def _forward(self, record: dict[str, Any], attempts: int = 5) -> Result:
        """Hand a record back to the function synchronously; on an error, try again (SQS would redeliver)."""
        result = Result(False)
        for n in range(attempts):
            result = self.invoke_sync(json.dumps(record).encode(), kind="destination")
            if result.ok or self._stopping:
                break
            time.sleep(self.retry_delays[0] if self.retry_delays else 0.1 * (n + 1))
        return result
