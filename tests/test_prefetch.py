"""Background prefetch: it really runs ahead, never past the end, surfaces errors, and leaves no thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from recurse_lambda.errors import ObjectChangedError
from recurse_lambda.s3._jsonl import JsonLinesReader
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._prefetch import RangeFetcher
from recurse_lambda.s3._readers import ChunkReader

PREFIX = "recurse-lambda-prefetch"
WAIT = 5.0


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(PREFIX) and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_before_or_after() -> Any:
    assert prefetch_threads() == []
    yield
    assert prefetch_threads() == []


class CountingSource:
    """An in-memory object that records reads (and the thread they ran on); may fail at one offset."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self.data = data
        self.fail_at = fail_at
        self.reads: list[tuple[int, int, str]] = []
        self.lock = threading.Lock()
        self.read_event = threading.Event()

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        with self.lock:
            self.reads.append((start, end, threading.current_thread().name))
        self.read_event.set()
        if self.fail_at is not None and start >= self.fail_at:
            raise ObjectChangedError("bkt", "key", '"old"', '"new"')
        return self.data[start:end]


DATA = b"".join(b"record %04d\n" % i for i in range(200))  # 2400 bytes


def test_the_next_range_is_fetched_while_the_current_one_is_parsed() -> None:
    source = CountingSource(DATA)
    fetcher = RangeFetcher(source, 0, range_size=100, prefetch=2)
    offset, data = next(fetcher)
    assert (offset, data) == (0, DATA[:100])
    deadline = threading.Event()
    for _ in range(int(WAIT * 100)):  # the caller does nothing: the background thread still reads ahead
        with source.lock:
            if len(source.reads) >= 3:
                break
        deadline.wait(0.01)
    with source.lock:
        assert [(s, e) for s, e, _ in source.reads] == [(0, 100), (100, 200), (200, 300)]
        assert all(name.startswith(PREFIX) for _, _, name in source.reads)
    fetcher.close()


def test_prefetch_zero_reads_in_the_callers_thread_and_starts_no_thread() -> None:
    source = CountingSource(DATA)
    reader = LineReader(source, range_size=100, encoding=None, prefetch=0)
    total = 0
    for batch in reader.batches(3):
        assert prefetch_threads() == []
        total += len(batch)
    assert total == 200
    assert {name for _, _, name in source.reads} == {threading.current_thread().name}


@pytest.mark.parametrize("prefetch", [1, 2, 5])
@pytest.mark.parametrize("start", [0, 1, 1150, len(DATA) - 1])
def test_never_reads_past_the_end_nor_twice(prefetch: int, start: int) -> None:
    source = CountingSource(DATA)
    chunks = list(ChunkReader(source, start, chunk_size=97, prefetch=prefetch))
    assert b"".join(chunks) == DATA[start:]
    spans = sorted((s, e) for s, e, _ in source.reads)
    assert all(start <= s < e <= len(DATA) for s, e in spans)
    assert sum(e - s for s, e in spans) == len(DATA) - start  # each byte requested once
    assert prefetch_threads() == []  # exhaustion alone stops the threads


def test_an_empty_remainder_makes_no_request_and_no_thread() -> None:
    source = CountingSource(DATA)
    assert list(LineReader(source, len(DATA), prefetch=3)) == []
    assert source.reads == []


def test_breaking_out_of_the_loop_stops_the_thread() -> None:
    source = CountingSource(DATA)
    reader = LineReader(source, range_size=50, encoding=None, prefetch=3)
    for batch in reader.batches(1):
        assert batch.records == [b"record 0000"]
        assert prefetch_threads() != []
        break
    # The generator was closed when the loop let go of it: the reader closed its fetcher.
    assert prefetch_threads() == []


def test_close_mid_read_leaves_no_thread_and_stops_fetching() -> None:
    source = CountingSource(DATA)
    reader = ChunkReader(source, chunk_size=10, prefetch=4)
    batches = reader.batches(1)
    next(batches)
    reader.close()
    assert prefetch_threads() == []
    reads = len(source.reads)
    assert reads <= 1 + 4 + 1  # the taken range, the ones prefetched, and at most one being planned
    with pytest.raises(ValueError, match="closed"):
        next(batches)


def test_context_manager_stops_the_thread() -> None:
    with JsonLinesReader(CountingSource(b"1\n" * 500), range_size=16, prefetch=2) as reader:
        assert next(iter(reader.batches(1))).records == [1]
    assert prefetch_threads() == []


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_background_errors_surface_in_the_reading_thread(prefetch: int) -> None:
    source = CountingSource(DATA, fail_at=1000)
    reader = LineReader(source, range_size=100, encoding=None, prefetch=prefetch)
    seen: list[bytes] = []
    with pytest.raises(ObjectChangedError) as info:
        for batch in reader.batches(5):
            seen.extend(batch)
    assert info.value.expected_etag == '"old"' and info.value.current_etag == '"new"'
    assert seen == DATA[: DATA.rindex(b"\n", 0, 1000)].split(b"\n")[: len(seen)]
    assert len(seen) >= 80
    assert prefetch_threads() == []


def test_fetcher_argument_checks() -> None:
    source = CountingSource(DATA)
    with pytest.raises(ValueError):
        RangeFetcher(source, 0, range_size=0, prefetch=1)
    with pytest.raises(ValueError):
        RangeFetcher(source, 0, range_size=10, prefetch=-1)
    with pytest.raises(ValueError, match="past the end"):
        next(RangeFetcher(source, len(DATA) + 1, range_size=10, prefetch=1))
