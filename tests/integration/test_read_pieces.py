"""Bodies read into pooled buffers over a real HTTP stack: the gateway, a body cut short, a slow proxy."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
from botocore.config import Config

from recurse_lambda.s3 import LineReader, PinnedSource, _prefetch
from recurse_lambda.s3._body import BufferPool, _http_response, read_into

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from proxy import ShapingProxy

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


def test_closing_a_reader_through_a_slow_proxy_stops_its_gets_within_a_piece(
    juicefs_s3: Any, juicefs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-off closes the reader: GETs in flight stop after the piece they read, not at their range's end.

    Through a proxy giving each connection 2 MB/s after 50 ms, a range of 8 MiB takes 4.2 s and a piece of
    256 KiB 0.13 s. Closing just after a GET started must take under 2 s (wide margins for a loaded
    machine); reading whole ranges, it takes about 4 s.
    """
    monkeypatch.setattr(_prefetch, "PIECE", 256 * 1024)
    monkeypatch.setattr(_prefetch, "DELIVERY", 64 * 1024)
    monkeypatch.setattr(_prefetch, "CEILING", 3)  # so that the object has ranges left to start
    setup = juicefs_s3.client()
    # ~36 MiB: ranges are left to start once the depth is 3.
    text = b"".join(b"%08d some text on a line\n" % i for i in range(1_300_000))
    setup.put_object(Bucket=juicefs_bucket, Key="text", Body=text)
    url = urlparse(juicefs_s3.endpoint_url)
    assert url.hostname is not None and url.port is not None
    proxy = ShapingProxy((url.hostname, url.port), latency=0.05, bandwidth=2e6).start()
    try:
        slow = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{proxy.port}",
            region_name="us-east-1",
            aws_access_key_id=juicefs_s3.access_key,
            aws_secret_access_key=juicefs_s3.secret_key,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=22),
        )
        reader = LineReader(PinnedSource(slow, juicefs_bucket, "text", pins={}), encoding=None)
        batches = reader.batches(1000)
        fetcher = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (fetcher and fetcher.depth == 3):
            next(batches)  # until the reader waited for the slow GETs: then several are in flight
            fetcher = reader._fetcher
        assert isinstance(fetcher, _prefetch.RangeFetcher) and fetcher.depth == 3
        planned = fetcher._next
        while fetcher._next == planned and time.monotonic() < deadline:
            next(batches)  # until the reader moves on to the next range: a GET has just started behind
        assert fetcher._next > planned
        began = time.monotonic()
        reader.close()
        took = time.monotonic() - began
    finally:
        proxy.close()
    assert took < 2.0
    assert not [t for t in threading.enumerate() if t.name.startswith("recurse-lambda-prefetch")]
