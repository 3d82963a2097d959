"""Async handlers: an async generator is a chain whose ``yield`` s are safe points, driven with the sync loop's
decisions (same budget, checkpoints, hand-offs, and so the same ledger history), on a loop the runner owns."""

from __future__ import annotations

import ast
import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recurse_lambda import InMemoryLedger, Run, WarmState, World, recursive
from recurse_lambda.chain.run import OutOfTime
from recurse_lambda.local import FakeContext, FaultPlan, VirtualClock
from tests.conftest import simulate

ROOT = Path(__file__).resolve().parents[1]


class Sum(BaseModel):
    i: int = 0
    total: int = 0


def sync_chain(clock: VirtualClock, durations: list[float], **options: Any) -> Any:
    @recursive(state=Sum, **options)
    def handler(event: Any, state: Sum, run: Run) -> Generator[None, None, dict[str, int]]:
        while state.i < len(durations):
            clock.advance(durations[state.i])
            state.total += state.i * 7 + 1
            state.i += 1
            yield
        return {"i": state.i, "total": state.total}

    return handler


def async_chain(clock: VirtualClock, durations: list[float], **options: Any) -> Any:
    @recursive(state=Sum, **options)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        while state.i < len(durations):
            clock.advance(durations[state.i])
            await asyncio.sleep(0)  # a real suspension: the chunk goes through the loop
            state.total += state.i * 7 + 1
            state.i += 1
            yield
        run.result = {"i": state.i, "total": state.total}

    handler.fn.__qualname__ = "handler"  # the first-chunk marker is keyed by name: the same for both
    return handler


faults = st.builds(
    FaultPlan,
    crash=st.sampled_from([0.0, 0.05, 0.15, 0.3]),
    error=st.sampled_from([0.0, 0.05, 0.2]),
    hang=st.sampled_from([0.0, 0.05, 0.1]),
    duplicate=st.sampled_from([0.0, 0.2, 0.6]),
    throttle=st.sampled_from([0.0, 0.2, 0.5]),
    recycle=st.sampled_from([0.0, 0.5, 1.0]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=faults,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    timeout=st.sampled_from([2.0, 5.0, 15.0]),
    retries=st.integers(0, 2),
    every=st.sampled_from([None, 1, 5, 25]),
)
def test_async_and_sync_handlers_have_the_same_result_and_ledger_history_under_faults(
    plan, seed, n, timeout, retries, every
):
    rng = random.Random(seed)
    durations = [min(0.2 * timeout, rng.lognormvariate(-3.0, 1.0)) for _ in range(n)]
    runs = []
    for make in (sync_chain, async_chain):
        clock = VirtualClock()
        handler = make(clock, durations, checkpoint_every_chunks=every, max_attempts=retries + 1)
        sim = simulate(
            handler, timeout=timeout, clock=clock, faults=plan, seed=seed, max_retry_attempts=retries
        )
        report = sim.run({"job": seed})
        rows = [(r.kind, r.outcome, r.hop, r.chunks, r.start, r.end) for r in report.rows]
        runs.append((report.status, report.result, report.last_state, sim.commits, rows))
    assert runs[0] == runs[1]
    assert runs[1][0] in ("SUCCEEDED", "FAILED")


def test_a_coroutine_is_a_one_hop_chain() -> None:
    @recursive
    async def handler(event: Any, state: Any, run: Run) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"echo": event["x"], "hop": run.hop}

    report = simulate(handler, timeout=5.0).run({"x": 3}).raise_for_status()
    assert report.result == {"echo": 3, "hop": 0} and len(report.rows) == 1


def test_an_async_chain_hands_off_and_its_event_loop_is_the_containers() -> None:
    clock = VirtualClock()
    loops: list[int] = []

    @recursive(state=Sum)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        loops.append(id(asyncio.get_running_loop()))
        while state.i < 40:
            clock.advance(0.25)
            state.i += 1
            yield
        run.result = state.i

    sim = simulate(handler, timeout=2.0, clock=clock, concurrent=False)
    report = sim.run({}).raise_for_status()
    assert report.result == 40 and report.hops >= 5
    assert {r.container for r in report.rows} == {0}
    assert len(set(loops)) == 1  # one warm container: one loop, reused by every hop


def test_tasks_an_invocation_leaves_running_are_cancelled_when_it_ends() -> None:
    left: list[asyncio.Task[None]] = []

    @recursive
    async def handler(event: Any, state: Any, run: Run) -> str:
        left.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))
        await asyncio.sleep(0)
        return "done"

    simulate(handler, timeout=5.0).run({}).raise_for_status()
    assert left[0].cancelled()


def test_setting_run_result_before_a_yield_fails_loudly() -> None:
    @recursive(state=Sum)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        run.result = "too early"
        yield

    report = simulate(handler, timeout=5.0).run({})
    assert report.status == "FAILED" and "run.result was set before a yield" in (report.error or "")


def test_an_error_in_an_async_chunk_is_retried_like_a_sync_one() -> None:
    calls: list[int] = []

    @recursive(state=Sum)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        calls.append(run.attempt or 0)
        if len(calls) == 1:
            raise RuntimeError("flaky")
        yield
        run.result = "ok"

    report = simulate(handler, timeout=5.0).run({}).raise_for_status()
    assert report.result == "ok" and report.retries == 1 and calls == [1, 2]


def test_run_within_raises_out_of_time_near_the_deadline_and_the_next_hop_awaits_again() -> None:
    clock = VirtualClock()
    tries: list[tuple[int, bool]] = []

    @recursive(state=Sum)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        while state.i < 3:
            # The third chunk of hop 0 works until 0.2 s before the deadline: inside the hand-off reserve.
            clock.advance(1.6 if state.i == 2 and run.hop == 0 else 0.1)
            try:
                value = await run.within(asyncio.sleep(0, result=1))
            except OutOfTime:
                tries.append((run.hop, False))
                yield  # hand off: the next hop tries again
                continue
            tries.append((run.hop, True))
            state.i += value
            yield
        run.result = state.i

    report = simulate(handler, timeout=2.0, clock=clock).run({}).raise_for_status()
    assert report.result == 3
    assert tries == [(0, True), (0, True), (0, False), (1, True)]


def test_run_within_times_out_an_await_that_outlasts_its_bound() -> None:
    @recursive
    async def handler(event: Any, state: Any, run: Run) -> str:
        never = asyncio.Event()
        try:
            await run.within(never.wait(), seconds=0.001)
        except OutOfTime as exc:
            assert isinstance(exc, TimeoutError)
            return "timed out"
        return "finished"

    assert simulate(handler, timeout=5.0).run({}).raise_for_status().result == "timed out"


def test_run_within_lets_the_awaitables_own_timeout_through() -> None:
    async def own() -> None:
        raise TimeoutError("the API's own")

    @recursive
    async def handler(event: Any, state: Any, run: Run) -> str:
        try:
            await run.within(own())
        except OutOfTime:
            return "ours"
        except TimeoutError as exc:
            return str(exc)
        return "none"

    assert simulate(handler, timeout=5.0).run({}).raise_for_status().result == "the API's own"


def test_an_async_handler_called_inside_a_running_loop_says_how_to_call_it() -> None:
    @recursive
    async def handler(event: Any, state: Any, run: Run) -> int:
        return 1

    clock = VirtualClock()
    world = World(clock=clock, invoker=None, warm=WarmState(), ledger=InMemoryLedger())  # type: ignore[arg-type]
    context = FakeContext(clock=clock, deadline=5.0, aws_request_id="r1", function_name="f")

    async def inside() -> Any:
        return handler.handle({}, context, world)

    response = asyncio.run(inside())
    assert response["outcome"] == "failed" and "already running" in response["error"]


def test_importing_and_running_sync_chains_does_not_load_the_async_runner() -> None:
    code = (
        "import sys\n"
        "from recurse_lambda import recursive\n"
        "from recurse_lambda.local import Simulator\n"
        "@recursive\n"
        "def h(event, state, run):\n"
        "    yield\n"
        "    return 1\n"
        "assert Simulator(h, ledger='memory').run({}).result == 1\n"
        "print(sorted(m for m in sys.modules if m.endswith(('adrive', '_aiter'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_the_async_modules_import_asyncio_at_module_level() -> None:
    # Importing the package loads asyncio today only through pydantic_core (measured with -X importtime):
    # no module of ours may add to that, so that a lighter pydantic would make `import recurse_lambda` asyncio-free.
    allowed = {"recurse_lambda/chain/adrive.py", "recurse_lambda/s3/_aiter.py"}
    offenders = []
    for path in sorted((ROOT / "recurse_lambda").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "asyncio" or n.startswith("asyncio.") for n in names) and rel not in allowed:
                offenders.append(rel)
    assert offenders == []


@pytest.mark.parametrize("n", [1, 7])
def test_sharded_style_direct_world_drive_of_an_async_generator(n: int) -> None:
    clock = VirtualClock()
    handler = async_chain(clock, [0.01] * n)
    world = World(clock=clock, invoker=None, warm=WarmState(), ledger=InMemoryLedger())  # type: ignore[arg-type]
    context = FakeContext(clock=clock, deadline=60.0, aws_request_id="r1", function_name="f")
    response = handler.handle({"job": 1}, context, world)
    assert response["outcome"] == "succeeded"
    assert response["result"] == {"i": n, "total": sum(i * 7 + 1 for i in range(n))}


def test_the_pytest_plugins_simulate_fixture_runs_async_handlers(simulate: Any) -> None:
    @recursive(state=Sum)
    async def handler(event: Any, state: Sum, run: Run) -> AsyncGenerator[None, None]:
        while state.i < 3:
            state.i += 1
            yield
        run.result = state.i

    assert simulate(handler, {}, chunk_cost=1.0).raise_for_status().result == 3
