"""Reading a GET's body into reused buffers: no fresh allocation, and no copy, per piece.

A range read with ``body.read()`` is a fresh buffer each time. Freed and allocated again, those buffers are
what the C allocator returns to the system and takes back page by page (read in fresh pieces, the reader
spent about 0.3 s of CPU per GB more on those page faults, ``benchmarks/s3_read.py``). The fetcher therefore
keeps a :class:`BufferPool` and reads each piece of a body straight into a pooled buffer.

urllib3's ``readinto`` reads into a temporary buffer and copies it (urllib3 2.x), so for a plain botocore
``StreamingBody`` over urllib3 the pieces are read with ``readinto`` of the ``http.client`` response
underneath (socket to buffer, one copy, done by the kernel), and the connection is then handed back to the
pool as urllib3 does after a complete read. Anything else (a checksum-validating body, another HTTP stack, a
test double) is read through its public ``read(n)`` and copied into the buffer.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["BufferPool", "read_into"]


class BufferPool:
    """Buffers of ``size`` bytes, reused: :meth:`take` one (a new one when none is free), :meth:`give` it back.

    The pool holds at most what was in use at once (the fetcher bounds that: the pieces of the GETs it
    keeps ahead), and is freed with the fetcher.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        #: Buffers made (for tests and benchmarks: the pool's high-water mark).
        self.made = 0

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
            self.made += 1
        return bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            self._free.append(buffer)


def _http_response(body: Any) -> tuple[Any, http.client.HTTPResponse] | None:
    """The urllib3 response and the ``http.client`` response under a plain botocore ``StreamingBody``."""
    from botocore.response import StreamingBody

    if type(body) is not StreamingBody:  # a subclass may check what it reads (checksums): leave it be
        return None
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or fp.chunked or not hasattr(raw, "release_conn"):
        return None
    return raw, fp


def read_into(body: Any, pool: BufferPool) -> Iterator[memoryview]:
    """The body, as views of pooled buffers (each full but maybe the last), until it ends or breaks.

    A body cut short just ends (the caller compares the bytes it got with what it asked for); an error
    reading it is raised. After a complete read the connection goes back to the client's pool.
    """
    direct = _http_response(body)
    while True:
        buffer = pool.take()
        view = memoryview(buffer)
        got = 0
        while got < len(view):
            if direct is not None:
                n = direct[1].readinto(view[got:])
            else:
                data = body.read(len(view) - got)
                n = len(data)
                view[got : got + n] = data
            if not n:
                break
            got += n
        if got:
            yield view[:got]
        else:
            pool.give(buffer)
        if got < len(view):
            if direct is not None and direct[1].length == 0:
                direct[0].release_conn()  # read to its end: the connection can serve the next request
            return
