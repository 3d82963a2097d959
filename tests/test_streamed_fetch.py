"""Ranges read in pieces as they arrive, into reused buffers: same bytes, sooner, in bounded memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recurse_lambda.errors import ObjectChangedError, S3Error
from recurse_lambda.s3 import _prefetch
from recurse_lambda.s3._body import BufferPool, read_into
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._prefetch import AUTO_PREFETCH, RangeFetcher, _Auto
from tests.conftest import prefetch_threads, read_in_hops

pytestmark = pytest.mark.usefixtures("no_prefetch_thread_before_or_after")


class Body:
    """A response body read ``n`` bytes at a time (what ``read_into`` falls back to), cut short at ``cut``."""

    def __init__(self, data: bytes, cut: int | None = None, gate: threading.Event | None = None) -> None:
        self.data = data if cut is None else data[:cut]
        self.at = 0
        self.gate = gate
        self.closed = False

    def read(self, n: int) -> bytes:
        if self.at and self.gate is not None:
            assert self.gate.wait(30)  # everything after the first piece waits for the test
        data = self.data[self.at : self.at + n]
        self.at += len(data)
        return data


class PiecedSource:
    """An in-memory object whose GETs are read in pieces into the fetcher's buffers (``iter_pieces``).

    ``cuts``: offsets at which a GET's body ends early (once each), so that the fetcher must ask again;
    ``delay``: seconds each piece takes; ``fail_at``: a GET reaching this offset breaks there.
    """

    def __init__(
        self,
        data: bytes,
        *,
        cuts: frozenset[int] = frozenset(),
        delay: float = 0.0,
        fail_at: int | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.data = data
        self.cuts = set(cuts)
        self.delay = delay
        self.fail_at = fail_at
        self.gate = gate
        self.gets: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]

    def iter_pieces(self, start: int, end: int, pool: BufferPool) -> Iterator[memoryview]:
        end = min(end, self.size)
        with self.lock:
            self.gets.append((start, end))
            cut = min((c for c in self.cuts if start < c < end), default=None)
            self.cuts.discard(cut) if cut is not None else None
        body = Body(self.data[start:end], None if cut is None else cut - start, self.gate)
        for view in read_into(body, pool):
            if self.delay:
                threading.Event().wait(self.delay)
            if self.fail_at is not None and start <= self.fail_at < start + len(view):
                raise ObjectChangedError("bkt", "key", '"old"', '"new"')
            yield view
            start += len(view)


def lines_data(count: int) -> bytes:
    return b"".join(b"line %05d %s\n" % (i, b"x" * (i % 37)) for i in range(count))


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_prefetch, "FIRST_RANGE", 100)
    monkeypatch.setattr(_prefetch, "PIECE", 64)
    monkeypatch.setattr(_prefetch, "DELIVERY", 16)


def test_pieces_are_handed_on_before_their_get_is_complete(small_pieces: None) -> None:
    gate = threading.Event()
    data = lines_data(50)
    source = PiecedSource(data, gate=gate)
    fetcher = RangeFetcher(source, 0, range_size=_Auto(len(data)), prefetch=AUTO_PREFETCH)
    try:
        first = [next(fetcher) for _ in range(4)]  # the first piece (64 bytes), in deliveries of 16
        assert b"".join(d for _, d in first) == data[:64]
        assert [o for o, _ in first] == [0, 16, 32, 48]
        assert not gate.is_set()  # the first GET's body is still open: the rest waits for the gate
    finally:
        gate.set()
    rest = b"".join(d for _, d in fetcher)
    assert data[:64] + rest == data


def test_the_buffers_are_reused_whatever_the_size(small_pieces: None) -> None:
    data = lines_data(3000)  # ~80 KB: 1,250 pieces of 64 bytes, in ranges of 640
    source = PiecedSource(data)
    fetcher = RangeFetcher(source, 0, range_size=_Auto(640), prefetch=3)
    pool = fetcher._pool
    assert pool is not None
    got = []
    for _, piece in fetcher:
        assert len(piece) <= 16  # handed on in deliveries
        got.append(piece)
    assert b"".join(got) == data
    assert len(source.gets) == 1 + (len(data) - 100 + 639) // 640
    # At most the pieces of the 3 GETs ahead and of the one read (10 each), and one being filled.
    assert pool.made <= (3 + 1) * 10 + 1 < len(data) // 64
    assert fetcher._pool is None  # closed at the end: the buffers went with it


def test_a_short_answer_is_completed_and_a_failure_comes_after_the_bytes_before_it(
    small_pieces: None,
) -> None:
    data = lines_data(400)
    source = PiecedSource(data, cuts=frozenset({150, 151, 700, 1333}))
    assert b"".join(d for _, d in RangeFetcher(source, 0, range_size=_Auto(500), prefetch=2)) == data
    assert (150, 600) in source.gets and (151, 600) in source.gets  # asked again from where it stopped

    source = PiecedSource(data, fail_at=1000)
    got = bytearray()
    with pytest.raises(ObjectChangedError):
        for offset, piece in RangeFetcher(source, 0, range_size=_Auto(500), prefetch=2):
            assert offset == len(got)
            got += piece
    assert len(got) >= 900 and bytes(got) == data[: len(got)]  # the pieces before the failure came


def test_a_get_answering_nothing_is_an_error(small_pieces: None) -> None:
    class Empty(PiecedSource):
        def iter_pieces(self, start: int, end: int, pool: BufferPool) -> Iterator[memoryview]:
            return iter(())

    with pytest.raises(S3Error, match="no data at offset 0"):
        list(RangeFetcher(Empty(b"abc"), 0, range_size=_Auto(500), prefetch=2))


def test_closing_stops_a_get_after_its_current_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each piece takes 0.2 s and a range has 20: closing waits for a piece, not for whole ranges (4 s).

    Wide margins for a loaded machine: closing must take under 2 s.
    """
    monkeypatch.setattr(_prefetch, "FIRST_RANGE", 64)
    monkeypatch.setattr(_prefetch, "PIECE", 64)
    data = bytes(64 * 200)
    source = PiecedSource(data, delay=0.2)
    fetcher = RangeFetcher(source, 0, range_size=_Auto(64 * 20), prefetch=3)
    next(fetcher)
    next(fetcher)  # the second range is being read, and three more ahead of it
    began = time.monotonic()
    fetcher.close()
    assert time.monotonic() - began < 2.0
    assert prefetch_threads() == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(0, 120),
    first=st.integers(1, 200),
    range_size=st.integers(1, 400),
    piece=st.integers(1, 90),
    delivery=st.integers(1, 90),
    cuts=st.frozensets(st.integers(1, 4000), max_size=6),
    resume=st.integers(0, 120),
    batch=st.integers(1, 9),
)
@example(count=3, first=1, range_size=1, piece=1, delivery=1, cuts=frozenset({1}), resume=0, batch=1)
def test_lines_read_in_pieces_are_every_line_once_from_any_resume_point(
    count: int,
    first: int,
    range_size: int,
    piece: int,
    delivery: int,
    cuts: frozenset[int],
    resume: int,
    batch: int,
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_prefetch, "FIRST_RANGE", first)
        patch.setattr(_prefetch, "PIECE", piece)
        patch.setattr(_prefetch, "DELIVERY", delivery)
        lines = [b"line %d %s" % (i, b"y" * (i * 7 % 50)) for i in range(count)]
        data = b"".join(line + b"\n" for line in lines)
        source = PiecedSource(data, cuts=cuts)
        resume = min(resume, count)
        start = sum(len(line) + 1 for line in lines[:resume])
        got, position = read_in_hops(
            lambda at: LineReader(source, at, range_size=_Auto(range_size), encoding=None), start, batch
        )
        assert got == lines[resume:]
        assert position == len(data)
