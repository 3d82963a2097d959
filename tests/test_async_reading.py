"""``abatches``: a reader's batches as an async iterator read on a thread (never blocking the loop), and
examples/async_line_count.py, which uses it: line_count's exact contract, and its ledger history."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import async_line_count, line_count
from recurse_lambda import RecursiveHandler, Run
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
from recurse_lambda.s3._aiter import abatches
from recurse_lambda.s3._lines import LineReader
from tests.test_examples import BUCKET, FAULTS, PER_CHUNK, TIMEOUT, GetObjectLog, count_lines, paced
from tests.test_readers import MemorySource


async def collect(it: Any) -> list[Any]:
    return [b async for b in it]


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=3000).map(lambda b: b.replace(b"\x00", b"\n")),
    records=st.integers(1, 40),
    depth=st.integers(1, 4),
    range_size=st.sampled_from([64, 1024]),
)
def test_abatches_gives_exactly_the_readers_batches(
    data: bytes, records: int, depth: int, range_size: int
) -> None:
    want = [
        (b.records, b.start, b.end)
        for b in LineReader(MemorySource(data), range_size=range_size, encoding=None).batches(records)
    ]
    reader = LineReader(MemorySource(data), range_size=range_size, encoding=None)
    got = asyncio.run(collect(abatches(reader, records, depth=depth)))
    assert [(b.records, b.start, b.end) for b in got] == want


class GatedSource(MemorySource):
    """Each read waits for the test to open the gate."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def read(self, start: int, end: int) -> bytes:
        self.waiting.set()
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return super().read(start, end)


def test_a_blocked_read_does_not_block_the_loop() -> None:
    source = GatedSource(b"a\nb\nc\n")
    reader = LineReader(source, range_size=64, prefetch=0, encoding=None)

    async def main() -> tuple[int, list[Any]]:
        ticks = 0
        it = abatches(reader, 1)
        first = asyncio.ensure_future(it.__anext__())
        while not source.waiting.is_set() or ticks < 20:  # the loop runs while the read is blocked
            ticks += 1
            await asyncio.sleep(0.001)
        assert not first.done()
        source.gate.set()
        batches = [await first, *[b async for b in it]]
        return ticks, batches

    ticks, batches = asyncio.run(main())
    assert ticks >= 20 and [b.records for b in batches] == [[b"a"], [b"b"], [b"c"]]


class CountingReader:
    """A reader whose batches() counts what it produced and whether it was closed."""

    def __init__(self, n: int) -> None:
        self.produced = 0
        self.closed = threading.Event()
        self.n = n

    def batches(self, records: int | None = None, *, max_bytes: int | None = None) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.produced += 1
                yield i
        finally:
            self.closed.set()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_the_thread_reads_at_most_depth_batches_ahead_and_aclose_stops_and_closes_it(depth: int) -> None:
    reader = CountingReader(1000)

    async def main() -> None:
        it = abatches(reader, depth=depth)
        assert await it.__anext__() == 0
        for _ in range(50):
            await asyncio.sleep(0.001)
        assert reader.produced <= 1 + depth
        await it.aclose()
        assert reader.closed.is_set()  # aclose returned after the thread closed the reader
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()

    asyncio.run(main())


def test_async_with_closes_and_errors_reach_the_consumer() -> None:
    class Failing(CountingReader):
        def batches(self, records: int | None = None, *, max_bytes: int | None = None) -> Iterator[int]:
            yield 1
            raise ValueError("bad record")

    async def main() -> list[int]:
        got: list[int] = []
        async with abatches(Failing(0)) as it:
            async for b in it:
                got.append(b)
        return got

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(main())


# -- the example --------------------------------------------------------------------------------------------


def apaced(handler: RecursiveHandler, clock: VirtualClock) -> RecursiveHandler:
    """The async twin of test_examples.paced: each chunk costs PER_CHUNK virtual seconds."""

    async def fn(event: Any, state: Any, run: Run) -> AsyncGenerator[None, None]:
        chunks = handler.fn(event, state, run)
        try:
            async for _ in chunks:
                clock.advance(PER_CHUNK)
                yield
        finally:
            await chunks.aclose()

    fn.__qualname__ = handler.fn.__qualname__
    return RecursiveHandler(fn, handler.config)


def run_example(
    handler: RecursiveHandler, wrap: Any, log: GetObjectLog, seed: int, faults: FaultPlan | None
) -> Any:
    clock = VirtualClock()
    sim = Simulator(
        wrap(handler, clock),
        timeout=TIMEOUT,
        clock=clock,
        ledger="memory",
        s3_client=log.factory,
        faults=faults,
        seed=seed,
    )
    report = sim.run({"bucket": BUCKET, "key": "text.txt"})
    rows = [(r.kind, r.outcome, r.hop, r.chunks) for r in report.rows]
    return report, (report.status, report.result, report.last_state, sim.commits, rows)


@pytest.fixture
def text(moto_s3: Any) -> bytes:
    from tests.test_examples import data_of

    data = data_of("text")
    moto_s3.create_bucket(Bucket=BUCKET)
    moto_s3.put_object(Bucket=BUCKET, Key="text.txt", Body=data)
    return data


def test_async_line_count_has_line_counts_contract_and_history_under_faults(text: bytes) -> None:
    expected = count_lines(text)
    succeeded = 0
    for seed in range(4):
        report, history = run_example(async_line_count.handler, apaced, GetObjectLog(), seed, FAULTS)
        _, sync_history = run_example(line_count.handler, paced, GetObjectLog(), seed, FAULTS)
        assert history == sync_history, report.timeline()
        if report.status == "SUCCEEDED":
            succeeded += 1
            assert report.result == expected
    assert succeeded


def test_async_line_count_runs_several_hops_without_faults(text: bytes) -> None:
    report, _ = run_example(async_line_count.handler, apaced, GetObjectLog(), 0, None)
    report.raise_for_status()
    assert report.result == count_lines(text) and report.hops >= 3


def test_recurse_lambda_simulate_runs_the_async_example(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    from pathlib import Path

    from recurse_lambda.cli import main

    data = b"".join(b"line %d\r\n" % i if i % 3 else b"\n" for i in range(5_000)) + b"no newline"
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    event = json.dumps({"bucket": "demo-bucket", "key": "d.txt"})
    args = ["simulate", "examples.async_line_count:handler", "--event", event]
    args += ["--put", f"{path}=s3://demo-bucket/d.txt", "--timeout", "1", "--faults", "crash=0.2", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED" and summary["result"] == count_lines(data)
