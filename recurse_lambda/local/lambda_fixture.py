"""The local services an end-to-end run needs, and pytest fixtures that start them (docs/local-lambda.md).

- :class:`Dynalite`: an independent DynamoDB (the npm package ``dynalite``, LevelDB/in-memory) on a free
  loopback port, installed with npm into a cache directory on first use.
- :class:`MotoDynamoDB`: moto's server as the DynamoDB, when ``node`` is not available.
- :func:`ledger_server`: dynalite when ``node`` and ``npm`` are on the PATH, else moto's server.
- :func:`create_ledger_table`: the ledger table, waiting only as long as the server needs.
- The fixtures ``ledger_endpoint`` (session-wide DynamoDB) and ``local_lambda`` (a factory of started
  :class:`~recurse_lambda.local.lambda_runtime.LocalLambda`, all stopped after the test); import them into a
  ``conftest.py`` with ``from recurse_lambda.local.lambda_fixture import ledger_endpoint, local_lambda``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest

from .lambda_runtime import LocalLambda

__all__ = [
    "Dynalite",
    "MotoDynamoDB",
    "create_ledger_table",
    "ledger_endpoint",
    "ledger_server",
    "local_lambda",
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


@pytest.fixture(scope="session")
def ledger_endpoint() -> Iterator[str]:
    """The endpoint of a DynamoDB on loopback for the session: dynalite if node is there, else moto's server."""
    server = ledger_server()
    server.start()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture
def local_lambda() -> Iterator[Callable[..., LocalLambda]]:
    """A factory: ``local_lambda("module.handler", task_root, timeout=1.0, ...)`` returns a started
    :class:`LocalLambda`; every one is stopped when the test ends."""
    started: list[LocalLambda] = []

    def make(handler: str, task_root: str | os.PathLike[str], **options: Any) -> LocalLambda:
        fn = LocalLambda(handler, task_root, **options).start()
        started.append(fn)
        return fn

    try:
        yield make
    finally:
        for fn in reversed(started):
            with contextlib.suppress(Exception):
                fn.stop()
