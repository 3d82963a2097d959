"""The cost of tracing (recurse_lambda/chain/trace.py) per safe point: off, and on with OpenTelemetry.

A chain of ``--chunks`` empty chunks (a bare ``yield``) runs in the simulator on a wall clock with a long timeout,
so that it is one hop of pure runner overhead, with a checkpoint every ``--every`` chunks (in-memory ledger). It
runs with tracing off, then on with an SDK TracerProvider exporting to an in-memory exporter (every span kept),
then on with a provider whose sampler drops everything. For each: microseconds per safe point (the best of
``--repeat`` runs), and the extra cost over "off". Last line: one JSON object with off_us, on_us, on_unsampled_us,
on_extra_us, unsampled_extra_us, spans_per_chain.

    python benchmarks/tracing.py --chunks 20000 --every 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from recurse_lambda import RecursiveHandler
from recurse_lambda.config import ChainConfig
from recurse_lambda.local import Simulator, WallClock


@dataclasses.dataclass(frozen=True)
class TracedConfig(ChainConfig):
    tracer: Any = None  # the proposed ChainConfig option, until config.py has it


def chunks(event: Any, state: Any, run: Any) -> Any:
    for _ in range(event["n"]):
        yield
    return event["n"]


def per_safe_point(config: ChainConfig, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        sim = Simulator(RecursiveHandler(chunks, config), timeout=3600.0, clock=WallClock(), ledger="memory")
        t0 = time.perf_counter()
        report = sim.run({"n": n})
        best = min(best, time.perf_counter() - t0)
        assert report.status == "SUCCEEDED" and report.hops == 1, report.summary()
    return best / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=20_000)
    p.add_argument("--every", type=int, default=100, help="checkpoint every N chunks")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    exporter = InMemorySpanExporter()
    kept = TracerProvider()
    kept.add_span_processor(SimpleSpanProcessor(exporter))
    dropped = TracerProvider(sampler=ALWAYS_OFF)
    base = TracedConfig(checkpoint_every_chunks=args.every)
    off = per_safe_point(base, args.chunks, args.repeat)
    on = per_safe_point(dataclasses.replace(base, tracer=kept), args.chunks, args.repeat)
    spans = len(exporter.get_finished_spans()) // args.repeat
    unsampled = per_safe_point(dataclasses.replace(base, tracer=dropped), args.chunks, args.repeat)
    print(f"tracing off:            {off:7.2f} µs per safe point")
    print(f"tracing on (exported):  {on:7.2f} µs per safe point ({spans} spans per chain)")
    print(f"tracing on (unsampled): {unsampled:7.2f} µs per safe point")
    result = {
        "off_us": round(off, 3),
        "on_us": round(on, 3),
        "on_unsampled_us": round(unsampled, 3),
        "on_extra_us": round(on - off, 3),
        "unsampled_extra_us": round(unsampled - off, 3),
        "spans_per_chain": spans,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
