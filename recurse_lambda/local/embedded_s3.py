"""An S3 server in this process, for the demo and the simulator: moto's ``ThreadedMotoServer`` on loopback.

Needs the ``local`` extra (``pip install 'recurse-lambda[local]'``). The clients it hands out carry dummy
credentials and are bound to its loopback endpoint, whatever the process's AWS configuration says, so no
request ever reaches AWS. moto keeps its buckets in process-wide state: two servers in one process share them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..errors import ConfigurationError

__all__ = ["EmbeddedS3", "MissingExtraError", "environment_clients", "isolated_session"]

REGION = "us-east-1"
_INSTALL_HINT = "pip install 'recurse-lambda[local]'"


class MissingExtraError(ConfigurationError, ImportError):
    """The embedded S3 needs moto, which comes with the ``local`` extra."""


def _threaded_moto_server() -> Any:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise MissingExtraError(
            f"the embedded S3 needs moto's server ({exc}); install it with: {_INSTALL_HINT}"
        ) from exc
    return ThreadedMotoServer


def _config(isolated: bool) -> Any:
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # An empty dict, not None: botocore would otherwise pick HTTP(S)_PROXY up and route loopback through it.
        proxies={} if isolated else None,
    )


def isolated_session(access_key: str, secret_key: str) -> Any:
    """A boto3 session with these credentials that reads no AWS_PROFILE and no config or credentials file.

    A developer's profile (or a missing one) must neither break a local run nor lend it real credentials.
    """
    import boto3
    import botocore.session

    isolated = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    return boto3.session.Session(
        botocore_session=isolated,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )


def environment_clients(endpoint_url: str) -> Callable[[], Any]:
    """A factory of path-style S3 clients for a user-given endpoint; credentials and region from the environment.

    The clients share one session, so only the first pays for loading botocore's service model.
    """
    import boto3

    session = boto3.session.Session()
    region = session.region_name or REGION
    lock = threading.Lock()

    def client() -> Any:
        with lock:
            return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=_config(False))

    return client


class EmbeddedS3:
    """moto's S3 on ``127.0.0.1`` at a free port, started by :meth:`start` or ``with EmbeddedS3() as s3:``.

    :meth:`client` is a zero-argument factory, so it can be passed as the simulator's ``s3_client``.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server: Any = None
        self._endpoint: str | None = None
        self._werkzeug_level: int | None = None
        self._session: Any = None
        # A boto3 session is not safe to share between threads while it creates clients; one session keeps
        # the parsed service models, so every client after the first costs milliseconds, not 150 ms.
        self._lock = threading.Lock()

    def start(self) -> EmbeddedS3:
        """Start the server unless it runs already; returns ``self``."""
        with self._lock:
            if self._server is None:
                self._start()
        return self

    def _start(self) -> None:
        server_cls = _threaded_moto_server()
        # werkzeug logs every request to stderr unless its logger already has a level; quieten it while we run.
        werkzeug = logging.getLogger("werkzeug")
        if werkzeug.level == logging.NOTSET:
            self._werkzeug_level = werkzeug.level
            werkzeug.setLevel(logging.WARNING)
        # Port 0: the server binds a free port itself, so there is no window for another process to take it.
        server = server_cls(ip_address=self.host, port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._endpoint = f"http://{host}:{port}"

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the embedded S3 is not running; call start() or use it in a with block")
        return self._endpoint

    def client(self) -> Any:
        """A new boto3 S3 client for this server (path-style, us-east-1, dummy credentials)."""
        endpoint = self.endpoint_url
        with self._lock:
            if self._session is None:
                self._session = isolated_session("testing", "testing")
            return self._session.client("s3", endpoint_url=endpoint, config=_config(True))

    def stop(self) -> None:
        with self._lock:
            server, self._server, self._endpoint, self._session = self._server, None, None, None
        if server is not None:
            server.stop()
        if self._werkzeug_level is not None:
            logging.getLogger("werkzeug").setLevel(self._werkzeug_level)
            self._werkzeug_level = None

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedS3({self._endpoint or 'stopped'})"
