from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import settings
from moto import mock_aws
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.local import Simulator, VirtualClock

# In CI (`CI` set, as .ci/run and most CI services do) the properties run the same examples every time, so that
# a run that lands is repeatable (Hypothesis's `derandomize` seeds its generator from a hash of the test); on a
# developer's machine they explore new examples on every run, and keep what fails in .hypothesis/.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


class Counter(BaseModel):
    i: int = 0
    total: int = 0


def expected(n: int) -> dict[str, int]:
    return {"i": n, "total": sum(i * i for i in range(n))}


def counting_handler(clock: VirtualClock, log: list[tuple[str, int]] | None = None, **options: Any):
    """A chain that sums squares, one number per chunk; each chunk costs ``event["chunk"]`` virtual seconds."""

    @recursive(state=Counter, **options)
    def handler(event: dict[str, Any], state: Counter, run: Run) -> Generator[None, None, dict[str, int]]:
        while state.i < event["n"]:
            clock.advance(event.get("chunk", 0.1))
            if log is not None:
                log.append((run.idempotency_key(), state.i))
            state.total += state.i * state.i
            state.i += 1
            yield
        return {"i": state.i, "total": state.total}

    return handler


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 client inside moto, with dummy credentials so nothing can reach a real endpoint."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


def simulate(handler: Any, **options: Any) -> Simulator:
    """A simulator with an in-memory ledger unless the test says otherwise (the handlers here declare none)."""
    options.setdefault("ledger", "memory")
    return Simulator(handler, **options)


def prefetch_threads() -> list[threading.Thread]:
    """The range fetchers' threads still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("recurse-lambda-prefetch") and t.is_alive()]


@pytest.fixture
def no_prefetch_thread_before_or_after() -> Iterator[None]:
    """Fails a test that starts with fetching threads about, or leaves one behind."""
    assert prefetch_threads() == []
    yield
    assert prefetch_threads() == []


def read_in_hops(make_reader: Callable[[int], Any], start: int, batch: int) -> tuple[list[Any], int]:
    """Every record from ``start``, in hops of two batches of ``batch``, each resumed at the last ``batch.end``
    by a new reader (``make_reader(position)``); the records and the final position."""
    got: list[Any] = []
    position = start
    while True:
        reader = make_reader(position)
        batches = reader.batches(batch)
        b = None
        for _ in range(2):
            b = next(batches, None)
            if b is None:
                break
            got.extend(b.records)
            position = b.end
        done = reader.done or b is None
        reader.close()
        if done:
            return got, position
