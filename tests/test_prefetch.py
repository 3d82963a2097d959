"""Background prefetch: it really runs ahead, never past the end, surfaces errors, and leaves no thread."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda.errors import ObjectChangedError
from recurse_lambda.s3._jsonl import JsonLinesReader
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._prefetch import (
    AUTO_PREFETCH,
    AUTO_RANGE_SIZE,
    CEILING,
    FIRST_RANGE,
    RangeFetcher,
    concurrency_limit,
    memory_budget,
)
from recurse_lambda.s3._readers import ChunkReader
from tests.conftest import prefetch_threads, read_in_hops

pytestmark = pytest.mark.usefixtures("no_prefetch_thread_before_or_after")
PREFIX = "recurse-lambda-prefetch"
WAIT = 5.0


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


# -- adaptive concurrency (the default) ---------------------------------------------------------------------


class SlowSource:
    """An in-memory object whose reads take ``delay`` seconds each (a GET's latency), concurrently."""

    def __init__(self, data: bytes, delay: float, client: Any = None) -> None:
        self.data = data
        self.delay = delay
        self._client = client
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.started = 0
        self.finished = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        with self.lock:
            self.active += 1
            self.started += 1
            self.peak = max(self.peak, self.active)
        try:
            threading.Event().wait(self.delay)
            return self.data[start:end]
        finally:
            with self.lock:
                self.active -= 1
                self.finished += 1


def pool_client(connections: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(max_pool_connections=connections),
    )


BIG = bytes(range(256)) * 4096  # 1 MiB


def test_the_default_depth_grows_while_the_caller_waits_up_to_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    source = SlowSource(BIG, 0.05, client=pool_client(6))
    fetcher = RangeFetcher(source, 0, range_size=16 * 1024, prefetch=AUTO_PREFETCH)
    assert concurrency_limit(source, 16 * 1024) == 5  # the pool less one
    got = b"".join(data for _, data in fetcher)
    assert got == BIG
    assert fetcher.depth == 5 and source.peak == 5  # grew from 2, never past the limit


def test_the_depth_grows_to_what_littles_law_asks_in_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # A GET takes 200 ms and the caller almost no time: Little's law asks for far more GETs than the ceiling
    # (unless the caller took 20 ms per range), so the first time the caller is about to wait after a range
    # was measured, the depth goes straight there (no doubling ramp 3, 6, 10, which would cost a GET's time
    # per step), and the new GETs start before that wait, not after it.
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    source = SlowSource(BIG[: 512 * 1024], 0.2, client=pool_client(64))
    fetcher = RangeFetcher(source, 0, range_size=16 * 1024, prefetch=AUTO_PREFETCH)
    depths = []
    for _ in fetcher:
        if not depths or depths[-1] != fetcher.depth:
            depths.append(fetcher.depth)
    assert depths[-1] == CEILING == 10
    assert depths == [2, 10]  # 2 for the first range (nothing measured yet), then the ceiling
    assert fetcher.waited >= 0.2  # at least the first GET's time: the caller had nothing else to do


def test_an_explicit_prefetch_is_kept_however_long_the_caller_waits() -> None:
    source = SlowSource(BIG[: 64 * 1024], 0.02)
    fetcher = RangeFetcher(source, 0, range_size=4096, prefetch=2)
    assert b"".join(data for _, data in fetcher) == BIG[: 64 * 1024]
    assert fetcher.depth == 2 and source.peak <= 2


def test_the_depth_stays_put_when_the_caller_is_the_limit() -> None:
    source = CountingSource(DATA)  # answers at once
    fetcher = RangeFetcher(source, 0, range_size=100, prefetch=AUTO_PREFETCH)
    for _ in fetcher:
        threading.Event().wait(0.03)  # the caller's own work is what takes time
    assert fetcher.depth <= 3  # 2, or 3 if the very first GET kept it waiting


def test_the_memory_budget_bounds_the_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")  # a quarter: 32 MiB
    assert memory_budget() == 32 * 1024 * 1024
    assert concurrency_limit(CountingSource(DATA), 8 * 1024 * 1024) == 3  # 3 in flight + 1 parsed = 32 MiB
    assert concurrency_limit(CountingSource(DATA), 64 * 1024 * 1024) == 1  # always at least one
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    assert concurrency_limit(CountingSource(DATA), 1024) == 9  # botocore's pool of 10, less one
    assert concurrency_limit(SlowSource(DATA, 0, client=pool_client(64)), 1024) == 10  # the ceiling
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1")  # 256 KiB: three 64 KiB ranges in flight
    source = SlowSource(BIG, 0.02)
    fetcher = RangeFetcher(source, 0, range_size=64 * 1024, prefetch=AUTO_PREFETCH)
    assert b"".join(data for _, data in fetcher) == BIG
    assert fetcher.depth == 3 and source.peak == 3


def test_closing_stops_every_get_in_flight_within_one_get() -> None:
    """A hand-off closes the reader: the GETs in flight run in parallel, so closing waits for one, not depth.

    Wide margins for a loaded machine: 1 s GETs, at least three in flight (waited for, not assumed), and closing
    must take less than two of them (one after the other they would take three or more).
    """
    delay = 1.0
    source = SlowSource(bytes(64 * 1024), delay)
    reader = ChunkReader(source, chunk_size=1024)  # the default: adaptive
    try:
        batches = reader.batches()
        for _ in range(4):
            next(batches)  # each one waited for a GET: the depth grew
        assert reader._fetcher is not None and reader._fetcher.depth > 2
        waited = time.monotonic() + 30.0
        while True:
            with source.lock:
                in_flight = source.active
            if in_flight > 2 or time.monotonic() > waited:
                break
            time.sleep(0.01)
        assert in_flight > 2
        began = time.monotonic()
    finally:
        reader.close()
    took = time.monotonic() - began
    assert took < 2 * delay < in_flight * delay  # not one after the other


def test_the_automatic_range_size_starts_small_and_chunks_keep_their_size() -> None:
    source = CountingSource(bytes(20 * 1024 * 1024))
    sizes = [len(data) for _, data in RangeFetcher(source, 0, range_size=AUTO_RANGE_SIZE, prefetch=0)]
    assert sizes == [
        FIRST_RANGE,
        8 * 1024 * 1024,
        8 * 1024 * 1024,
        20 * 1024 * 1024 - FIRST_RANGE - 16 * 1024 * 1024,
    ]
    assert [len(c) for c in ChunkReader(source)] == [8 * 1024 * 1024, 8 * 1024 * 1024, 4 * 1024 * 1024]
    assert AUTO_PREFETCH == 2 and repr(AUTO_PREFETCH) == "auto(2)"


class JitterSource:
    """Reads that take a random few milliseconds: completions come in any order."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data = data
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        with self.lock:
            delay = self.rng.random() * 0.004
        threading.Event().wait(delay)
        return self.data[start:end]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=60
    ),
    range_size=st.integers(1, 300),
    resume=st.integers(0, 60),
    batch=st.integers(1, 7),
    seed=st.integers(0, 1000),
)
def test_adaptive_prefetch_reads_every_line_once_from_any_resume_point(
    lines: list[bytes], range_size: int, resume: int, batch: int, seed: int
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    source = JitterSource(data, seed)
    resume = min(resume, len(lines))
    start = sum(len(line) + 1 for line in lines[:resume])
    got, position = read_in_hops(
        lambda at: LineReader(source, at, range_size=range_size, encoding=None), start, batch
    )
    assert got == lines[resume:]
    assert position == len(data)
