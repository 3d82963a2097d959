"""What a safe point costs: the runner's loop against a bare generator loop, in the same run (DESIGN §11).

The same generator (``N`` yields, no work between them) is consumed three ways, A B A B, for several rounds:

* ``bare`` — ``for _ in gen: pass``;
* ``stateless`` — a one-invocation chain through the runner (``handler.handle(event, FakeContext, World)``) with
  the real :class:`SystemClock`, a remaining time far beyond the run (no hand-off) and no ledger;
* ``ledger`` — the same with an :class:`InMemoryLedger` and the default checkpoint settings;
* ``abare`` — the same as an async generator, ``async for _ in agen: pass`` on an event loop;
* ``async`` — the async generator as a one-invocation stateless chain (the async runner: docs/async.md).

``per_yield_us`` is (median runner time − median bare time) / N, in microseconds; the target is ≤ 2 µs. The async
runner's ``async_per_yield_us`` is (median async − median abare) / N; its target is ≤ 5 µs. The last line printed
is one JSON object. Run: ``python benchmarks/overhead.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from recurse_lambda import InMemoryLedger, SystemClock, WarmState, World, recursive
from recurse_lambda.local import FakeContext

TARGET_US = 2.0
ASYNC_TARGET_US = 5.0


class NoInvoker:
    """The chain must finish in one invocation: a hand-off here is a bug in the benchmark."""

    def invoke_async(self, function: str, payload: bytes) -> None:
        raise AssertionError("the benchmark's chain handed off")


def gen_body(n: int) -> Iterator[None]:
    for _ in range(n):
        yield


def bare(n: int) -> float:
    t0 = time.perf_counter()
    for _ in gen_body(n):
        pass
    return time.perf_counter() - t0


async def agen_body(n: int) -> AsyncIterator[None]:
    for _ in range(n):
        yield


def abare(n: int) -> float:
    async def consume() -> float:
        t0 = time.perf_counter()
        async for _ in agen_body(n):
            pass
        return time.perf_counter() - t0

    return asyncio.run(consume())


def make_runner(n: int, *, ledger: bool, is_async: bool = False) -> Callable[[], float]:
    @recursive(max_hops=10)
    def sync_chain(event: Any, state: Any, run: Any) -> Iterator[None]:
        for _ in range(n):
            yield

    @recursive(max_hops=10)
    async def async_chain(event: Any, state: Any, run: Any) -> AsyncIterator[None]:
        for _ in range(n):
            yield

    chain = async_chain if is_async else sync_chain

    clock = SystemClock()
    warm = WarmState()  # one container: learned timings carry over from round to round, as in Lambda
    counter = iter(range(1_000_000))

    def once() -> float:
        world = World(
            clock=clock, invoker=NoInvoker(), warm=warm, ledger=InMemoryLedger() if ledger else None
        )
        context = FakeContext(
            clock=clock,
            deadline=clock.now() + 1e6,
            aws_request_id=f"00000000-0000-4000-8000-{next(counter):012d}",
        )
        t0 = time.perf_counter()
        response = chain.handle({"n": n}, context, world)
        elapsed = time.perf_counter() - t0
        if response.get("outcome") != "succeeded":
            raise AssertionError(f"the benchmark's chain did not finish in one invocation: {response}")
        return elapsed

    return once


def profile(n: int, *, ledger: bool) -> None:
    import cProfile
    import pstats

    once = make_runner(n, ledger=ledger)
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="yields per measurement (1000000)")
    parser.add_argument("--rounds", type=int, default=7, help="A B A B rounds; medians are reported (7)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one runner pass")
    args = parser.parse_args(argv)
    n = args.n

    variants: dict[str, Callable[[], float]] = {
        "bare": lambda: bare(n),
        "stateless": make_runner(n, ledger=False),
        "ledger": make_runner(n, ledger=True),
        "abare": lambda: abare(n),
        "async": make_runner(n, ledger=False, is_async=True),
    }
    for fn in variants.values():  # warm up: imports, the container's learned timings, the CPU's caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    gc.collect()
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # A B C, C B A, ...
        for name in order:
            times[name].append(variants[name]())
    med = {name: statistics.median(ts) for name, ts in times.items()}

    print(
        f"N = {n} yields, {args.rounds} rounds (A B C / C B A alternating), Python {sys.version.split()[0]}"
    )
    print(f"{'variant':<10} {'median s':>9} {'min s':>9} {'max s':>9} {'ns/yield':>9} {'x bare':>7}")
    for name, ts in times.items():
        print(
            f"{name:<10} {med[name]:>9.4f} {min(ts):>9.4f} {max(ts):>9.4f} {med[name] / n * 1e9:>9.1f} "
            f"{med[name] / med['bare']:>7.2f}"
        )
    per = {name: (med[name] - med["bare"]) / n * 1e6 for name in ("stateless", "ledger")}
    paired = {
        name: statistics.median((a - b) / n * 1e6 for a, b in zip(times[name], times["bare"], strict=True))
        for name in ("stateless", "ledger")
    }
    for name in per:
        verdict = "ok" if per[name] <= TARGET_US else "MISSED"
        print(
            f"runner overhead ({name}): {per[name]:.3f} µs per yield (paired per round: {paired[name]:.3f}), "
            f"target ≤ {TARGET_US} µs: {verdict}"
        )
    async_per = (med["async"] - med["abare"]) / n * 1e6
    async_paired = statistics.median(
        (a - b) / n * 1e6 for a, b in zip(times["async"], times["abare"], strict=True)
    )
    verdict = "ok" if async_per <= ASYNC_TARGET_US else "MISSED"
    print(
        f"async runner overhead (stateless): {async_per:.3f} µs per yield beside the sync one's "
        f"{per['stateless']:.3f} (paired per round: {async_paired:.3f}), target ≤ {ASYNC_TARGET_US} µs: {verdict}"
    )
    if args.profile:
        profile(n, ledger=False)

    summary = {
        "per_yield_us": round(max(per.values()), 4),
        "per_yield_us_stateless": round(per["stateless"], 4),
        "per_yield_us_ledger": round(per["ledger"], 4),
        "bare_loop_ns_per_yield": round(med["bare"] / n * 1e9, 2),
        "runner_to_bare_ratio": round(med["stateless"] / med["bare"], 2),
        "async_per_yield_us": round(async_per, 4),
        "async_bare_loop_ns_per_yield": round(med["abare"] / n * 1e9, 2),
        "n": n,
        "rounds": args.rounds,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
