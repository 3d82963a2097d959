"""Bodies read into pooled buffers over a real HTTP stack: the gateway, and a body cut short."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from recurse_lambda.s3 import PinnedSource
from recurse_lambda.s3._body import BufferPool, _http_response, read_into

MiB = 1024 * 1024


def connection_pools(client: Any) -> list[Any]:
    manager = client._endpoint.http_session._manager
    return [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 (it cannot be iterated)


def test_pieces_are_read_into_the_pool_without_copies_and_the_connection_is_kept(
    juicefs_s3: Any, juicefs_bucket: str
) -> None:
    client = juicefs_s3.client()
    data = os.urandom(5 * MiB + 123)
    client.put_object(Bucket=juicefs_bucket, Key="blob", Body=data)
    # The direct path exists for this botocore and urllib3: if their internals change, this says so.
    body = client.get_object(Bucket=juicefs_bucket, Key="blob", Range="bytes=0-9")["Body"]
    assert _http_response(body) is not None
    assert body.read() == data[:10]

    source = PinnedSource(client, juicefs_bucket, "blob", pins={})
    pool = BufferPool(MiB)
    for start, end in [(0, 3 * MiB), (3 * MiB, len(data)), (17, 2 * MiB + 5), (0, len(data))]:
        views = list(source.iter_pieces(start, end, pool))
        assert b"".join(views) == data[start:end]
        assert [len(v) for v in views[:-1]] == [MiB] * (len(views) - 1)
        for view in views:
            pool.give(view.obj)  # type: ignore[arg-type]
    assert pool.made <= 6  # the largest read's pieces, then reused
    (pool_,) = connection_pools(client)
    assert pool_.num_connections == 1  # every GET went back to the pool: one connection served all


class CutServer:
    """Answers every request with a 206 that announces 100 bytes and sends 40, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    more = conn.recv(65536)
                    if not more:
                        break
                    buf += more
                conn.sendall(
                    b'HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nETag: "e"\r\n'
                    b"Content-Range: bytes 0-99/1000\r\n\r\n" + b"x" * 40
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def cut_server() -> Iterator[CutServer]:
    server = CutServer()
    yield server
    server.close()


def test_a_body_cut_short_ends_early_and_its_connection_is_not_reused(cut_server: CutServer) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{cut_server.port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    for _ in range(2):
        body = client.get_object(Bucket="b", Key="k", Range="bytes=0-99")["Body"]
        assert _http_response(body) is not None
        pool = BufferPool(64)
        got = b"".join(read_into(body, pool))
        body.close()
        assert got == b"x" * 40  # what came; the fetcher asks again for the rest
    assert cut_server.accepted == 2  # the cut connection was closed, not handed back
