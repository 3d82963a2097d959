"""A shaping HTTP proxy for benchmarks: S3's latency and per-connection bandwidth in front of a local server.

Each client connection gets its own connection to the upstream server (so a client's connection pool maps one to
one onto upstream connections, as with S3). Per connection:

* every request is held for ``latency`` seconds before it is forwarded: the response's first byte arrives that
  much later (the time to first byte a ranged GET on S3 takes, tens of milliseconds from Lambda);
* the response bytes flow at most at ``bandwidth`` bytes per second (S3 gives roughly 50-90 MB/s per
  connection), paced in slices of at most :data:`SLICE` bytes; idle time earns no credit.

Bytes are moved from socket to socket by ``splice(2)`` through a pipe, never copied into Python, so the proxy
costs little CPU. Requests are parsed only to find where each ends (headers, then ``Content-Length`` bytes);
chunked request bodies and pipelining are not supported (boto3 uses neither for GET, HEAD or PUT with a length).
Linux only.

Run it alone (it prints its port, then serves until killed)::

    python benchmarks/proxy.py --upstream 127.0.0.1:9000 --latency-ms 30 --mb-s 80

or from Python, in its own process so that its CPU is not counted with the client's::

    with ProxyProcess("127.0.0.1", 9000, latency=0.030, bandwidth=80e6) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

SLICE = 256 * 1024  # bytes moved per pacing step (3.3 ms at 80 MB/s)
PIPE_SIZE = 1024 * 1024  # asked for with F_SETPIPE_SZ; the kernel's default is 64 KiB
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_MAX_HEADER = 64 * 1024


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # a smaller pipe still works, in more steps
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _close(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


class _Pacer:
    """At most ``rate`` bytes per second; the schedule restarts when the sender was idle (no saved credit)."""

    __slots__ = ("_next", "_rate")

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._next = 0.0

    def before(self) -> None:
        if self._rate is None:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        else:
            self._next = now

    def after(self, nbytes: int) -> None:
        if self._rate is not None:
            self._next += nbytes / self._rate


def _pump(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
    """Upstream to client: splice through a pipe, paced; at EOF, half-close the other side."""
    r, w = _pipe()
    pacer = _Pacer(rate)
    step = SLICE if rate is not None else PIPE_SIZE
    try:
        while True:
            # Wait for data before starting the clock: time spent waiting is not bandwidth used.
            got = os.splice(src.fileno(), w, step)
            if got == 0:
                break
            pacer.before()
            left = got
            while left:
                left -= os.splice(r, dst.fileno(), left)
            pacer.after(got)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        _close(dst, socket.SHUT_WR)


def _requests(src: socket.socket, dst: socket.socket, latency: float) -> None:
    """Client to upstream: each request (headers, then Content-Length bytes) held ``latency`` s, then sent."""
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                more = src.recv(65536)
                if not more:
                    return
                buf += more
                if len(buf) > _MAX_HEADER:
                    raise OSError("request headers too long")
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if latency:
                time.sleep(latency)
            dst.sendall(head + b"\r\n\r\n")
            while length:
                if not buf:
                    buf = src.recv(min(length, 1 << 20))
                    if not buf:
                        return
                part, buf = buf[:length], buf[length:]
                dst.sendall(part)
                length -= len(part)
    except OSError:
        pass
    finally:
        _close(dst, socket.SHUT_WR)


class ShapingProxy:
    """The proxy itself, serving on threads of the calling process (see :class:`ProxyProcess` for benchmarks)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.latency = latency
        self.bandwidth = bandwidth
        self._listener = socket.create_server((host, port), backlog=128)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def start(self) -> ShapingProxy:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._listener.close()

    def _connection(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client, self.bandwidth), daemon=True)
        back.start()
        _requests(client, upstream, self.latency)
        back.join()
        client.close()
        upstream.close()


class ProxyProcess:
    """A :class:`ShapingProxy` in a child process (its CPU is its own); ``endpoint_url`` once started."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, latency: float = 0.0, bandwidth: float | None = None
    ) -> None:
        self._argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--upstream",
            f"{upstream_host}:{upstream_port}",
            "--latency-ms",
            str(latency * 1000),
            "--mb-s",
            str(bandwidth / 1e6 if bandwidth is not None else 0),
        ]
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyProcess:
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self._proc.kill()
            raise RuntimeError(f"the proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="delay before each request (30)")
    parser.add_argument("--mb-s", type=float, default=80.0, help="MB/s per connection, 0 for unlimited (80)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (a free one)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = ShapingProxy(
        (host, int(port)),
        latency=args.latency_ms / 1000,
        bandwidth=args.mb_s * 1e6 if args.mb_s > 0 else None,
        port=args.port,
    )
    print(proxy.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        proxy.serve_forever()


if __name__ == "__main__":
    main()
