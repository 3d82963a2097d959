"""The local services an end-to-end run needs (docs/local-lambda.md): S3, a DynamoDB with the ledger table, and a
:class:`~recurse_lambda.local.lambda_runtime.LocalLambda` running the handler. No pytest here: the
``recurse-lambda emulate`` command uses this module; the fixtures are in ``lambda_fixture``.

- :class:`Dynalite`: an independent DynamoDB (the npm package ``dynalite``, LevelDB/in-memory) on a free
  loopback port, installed with npm into a cache directory on first use.
- :class:`MotoDynamoDB`: moto's server as the DynamoDB, when ``node`` is not available.
- :func:`ledger_server`: dynalite when ``node`` and ``npm`` are on the PATH, else moto's server.
- :func:`create_ledger_table`: the ledger table, waiting only as long as the server needs.
- :class:`Emulation`: all of it together, started and stopped as one; runs chains and waits for their end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .. import ChainRecord
from ..aws import DynamoDBLedger
from .lambda_runtime import LocalLambda

__all__ = [
    "Dynalite",
    "DynamoDBServer",
    "Emulation",
    "MotoDynamoDB",
    "create_ledger_table",
    "dynamodb_client",
    "ledger_server",
]

DYNALITE_VERSION = "3"
CACHE_ENV = "RECURSE_LAMBDA_DYNALITE_DIR"


class DynamoDBServer(Protocol):
    name: str

    @property
    def endpoint_url(self) -> str: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "recurse-lambda", "dynalite"
    )
    return Path(base)


class Dynalite:
    """dynalite on ``127.0.0.1`` at a free port, in memory; ``npm install dynalite`` into ``cache_dir`` first."""

    name = "dynalite"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _cache_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._endpoint: str | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("node") is not None and shutil.which("npm") is not None

    def install(self) -> Path:
        """The dynalite script, installed with npm on first use (the only network access, to the registry)."""
        script = self.cache_dir / "node_modules" / "dynalite" / "cli.js"
        if not script.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    "npm",
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(self.cache_dir),
                    f"dynalite@{DYNALITE_VERSION}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        return script

    def start(self) -> Dynalite:
        script = self.install()
        for _ in range(5):  # another process may take the port between choosing and binding it: try again
            port = _free_port()
            self._proc = subprocess.Popen(
                [
                    "node",
                    str(script),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--createTableMs",
                    "0",
                    "--deleteTableMs",
                    "0",
                    "--updateTableMs",
                    "0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            endpoint = f"http://127.0.0.1:{port}"
            if _wait_http(endpoint, self._proc):
                self._endpoint = endpoint
                return self
            self.stop()
        raise RuntimeError("dynalite did not start")

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("dynalite is not running")
        return self._endpoint

    def stop(self) -> None:
        proc, self._proc, self._endpoint = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Dynalite:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _wait_http(endpoint: str, proc: subprocess.Popen[bytes], limit: float = 15.0) -> bool:
    end = time.time() + limit
    while time.time() < end and proc.poll() is None:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answered: it is up
        except OSError:
            time.sleep(0.05)
    return False


class MotoDynamoDB:
    """moto's server (threaded, in this process) as the DynamoDB."""

    name = "moto"

    def __init__(self) -> None:
        self._server: Any = None
        self._endpoint: str | None = None

    def start(self) -> MotoDynamoDB:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._endpoint = f"http://{host}:{port}"
        return self

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the moto server is not running")
        return self._endpoint

    def stop(self) -> None:
        server, self._server, self._endpoint = self._server, None, None
        if server is not None:
            server.stop()


def ledger_server() -> DynamoDBServer:
    """dynalite when node and npm are available, else moto's server (neither started yet)."""
    return Dynalite() if Dynalite.available() else MotoDynamoDB()


def dynamodb_client(endpoint_url: str) -> Any:
    """A DynamoDB client for a local endpoint, with dummy credentials and no profile."""
    from .embedded_s3 import isolated_session

    return isolated_session("testing", "testing").client("dynamodb", endpoint_url=endpoint_url)


def create_ledger_table(client: Any, name: str, *, ttl: bool = False) -> None:
    """The ledger table (key ``chain_id``); TTL on ``expires_at`` only when asked (dynalite has no TTL)."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "chain_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "chain_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    end = time.time() + 30
    while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE" and time.time() < end:
        time.sleep(0.05)
    if ttl:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )


class Emulation:
    """S3, a DynamoDB holding a fresh ledger table, and a :class:`LocalLambda` running ``handler`` with both:
    what ``recurse-lambda emulate`` starts. Use as a context manager, or :meth:`start` and :meth:`stop`.

    ``s3`` is ``"moto"`` (moto's server in this process) or ``"juicefs"`` (the JuiceFS gateway). ``ledger`` is
    ``"auto"`` (dynalite when node and npm are available, else moto's server), ``"dynalite"`` or ``"moto"``;
    ``ledger_endpoint`` uses a DynamoDB that is already running instead (the table is created in it). The
    function gets ``RECURSE_LAMBDA_TABLE`` and the two endpoints in its environment (``environ`` adds to them);
    the other keyword arguments go to :class:`LocalLambda` (``timeout``, ``workers``, ``duplicates`` ...).
    """

    def __init__(
        self,
        handler: str,
        task_root: str | os.PathLike[str],
        *,
        s3: str = "moto",
        ledger: str = "auto",
        ledger_endpoint: str | None = None,
        environ: Mapping[str, str] | None = None,
        **lambda_options: Any,
    ) -> None:
        if s3 not in ("moto", "juicefs"):
            raise ValueError(f"s3 must be 'moto' or 'juicefs', not {s3!r}")
        if ledger not in ("auto", "dynalite", "moto"):
            raise ValueError(f"ledger must be 'auto', 'dynalite' or 'moto', not {ledger!r}")
        self.handler = handler
        self.task_root = task_root
        self.s3_name = s3
        self.ledger_name = ("dynalite" if Dynalite.available() else "moto") if ledger == "auto" else ledger
        self._given_ledger_endpoint = ledger_endpoint
        if ledger_endpoint is not None:
            self.ledger_name = "given"
        self.environ = dict(environ or {})
        self.lambda_options = lambda_options
        self.table = f"recurse-lambda-{uuid.uuid4().hex[:8]}"
        self._stack: contextlib.ExitStack | None = None
        self._s3: Any = None
        self._fn: LocalLambda | None = None
        self._ledger: DynamoDBLedger | None = None
        self._ledger_endpoint: str | None = None

    def start(self) -> Emulation:
        """Start S3, the DynamoDB (unless given), the table and the local Lambda; on a failure, stop what started."""
        if self._stack is not None:
            return self  # running already
        with contextlib.ExitStack() as stack:
            if self.s3_name == "juicefs":
                from .juicefs import JuiceFSGateway

                self._s3 = stack.enter_context(JuiceFSGateway())
            else:
                from .embedded_s3 import EmbeddedS3

                self._s3 = stack.enter_context(EmbeddedS3())
            if self._given_ledger_endpoint is not None:
                self._ledger_endpoint = self._given_ledger_endpoint
            else:
                if self.ledger_name == "dynalite" and not Dynalite.available():
                    raise RuntimeError("dynalite needs node and npm on the PATH")
                server: DynamoDBServer = Dynalite() if self.ledger_name == "dynalite" else MotoDynamoDB()
                server.start()
                stack.callback(server.stop)
                self._ledger_endpoint = server.endpoint_url
            client = dynamodb_client(self._ledger_endpoint)
            create_ledger_table(client, self.table)
            self._ledger = DynamoDBLedger(self.table, client=lambda: client)
            environ = {
                "RECURSE_LAMBDA_TABLE": self.table,
                "AWS_ENDPOINT_URL_S3": self._s3.endpoint_url,
                "AWS_ENDPOINT_URL_DYNAMODB": self._ledger_endpoint,
            }
            if self.s3_name == "juicefs":  # the gateway checks its own credentials; DynamoDB takes any
                environ["AWS_ACCESS_KEY_ID"] = self._s3.access_key
                environ["AWS_SECRET_ACCESS_KEY"] = self._s3.secret_key
            fn = LocalLambda(
                self.handler, self.task_root, environ={**environ, **self.environ}, **self.lambda_options
            )
            self._fn = stack.enter_context(fn)
            self._stack = stack.pop_all()
        return self

    def stop(self) -> None:
        """Stop everything :meth:`start` started (the local Lambda first, then the servers)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Emulation:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def fn(self) -> LocalLambda:
        if self._fn is None or self._stack is None:
            raise RuntimeError("the emulation is not running; call start() or use it in a with block")
        return self._fn

    @property
    def ledger(self) -> DynamoDBLedger:
        """The ledger the function uses (on the table this emulation created)."""
        if self._ledger is None:
            raise RuntimeError("the emulation is not running")
        return self._ledger

    @property
    def s3_endpoint(self) -> str:
        return str(self._s3.endpoint_url)

    @property
    def ledger_endpoint(self) -> str:
        if self._ledger_endpoint is None:
            raise RuntimeError("the emulation is not running")
        return self._ledger_endpoint

    def s3_client(self) -> Any:
        """A boto3 S3 client for the emulation's S3 (its credentials, path-style)."""
        return self._s3.client()

    def put(self, bucket: str, key: str, data: bytes | os.PathLike[str]) -> None:
        """Store an object (bytes, or a local file's content), creating the bucket if needed."""
        client = self.s3_client()
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket=bucket)
        if isinstance(data, bytes):
            client.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            client.upload_file(os.fspath(data), bucket, key)

    def invoke(self, event: Any) -> None:
        """Start a chain as a trigger would: an asynchronous (``Event``) invoke through the Invoke API."""
        import json

        from .embedded_s3 import isolated_session

        client = isolated_session("testing", "testing").client("lambda", endpoint_url=self.fn.endpoint_url)
        answer = client.invoke(
            FunctionName=self.fn.name, InvocationType="Event", Payload=json.dumps(event).encode()
        )
        if answer["StatusCode"] != 202:
            raise RuntimeError(f"the local Lambda answered {answer['StatusCode']} to an Event invoke")

    def chain(self) -> ChainRecord | None:
        """The chain started first in this emulation's table (a sharded job's shards start after it), or None."""
        records = self.ledger.list()
        return min(records, key=lambda r: r.started_at) if records else None

    def run(self, event: Any, limit: float = 120.0) -> ChainRecord:
        """Start a chain with ``event`` and wait for its end (any terminal status) and for the workers to be idle.

        Raises ``TimeoutError`` (with the end of the function's logs) when it has not ended after ``limit`` s.
        """
        self.invoke(event)
        return self.wait(limit)

    def wait(self, limit: float = 120.0) -> ChainRecord:
        """Wait for :meth:`chain` to end (see :meth:`run`)."""
        end = time.time() + limit
        while time.time() < end:
            record = self.chain()
            if record is not None and record.status.terminal:
                self.fn.wait_idle(max(end - time.time(), 1.0))
                return record
            time.sleep(0.1)
        raise TimeoutError(
            f"the chain did not end in {limit} s; the function's logs end:\n{self.fn.logs()[-4000:]}"
        )
