"""Render the timeline pictures shown in docs/simulator.md, from the current code.

Run from the repository root (needs ``rsvg-convert``: Debian's ``librsvg2-bin``)::

    python docs/img/render.py            # writes docs/img/timeline-*.svg and timeline-*.png
    python docs/img/render.py --svg-only # the SVG files only (no rsvg-convert needed)

Each run is simulated in virtual time with a fixed seed, so the pictures are the same on every machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's recurse_lambda, not an installed one

from pydantic import BaseModel  # noqa: E402

from recurse_lambda import Run, recursive  # noqa: E402
from recurse_lambda.local import ChainReport, FaultPlan, Simulator, VirtualClock  # noqa: E402


class Counted(BaseModel):
    i: int = 0
    total: int = 0


def chain(clock: VirtualClock) -> Any:
    """A chain that sums squares; each number is a chunk costing ``event["chunk"]`` virtual seconds."""

    @recursive(state=Counted)
    def handler(event: dict[str, Any], state: Counted, run: Run) -> Generator[None, None, dict[str, int]]:
        while state.i < event["n"]:
            clock.advance(event["chunk"])
            state.total += state.i * state.i
            state.i += 1
            yield
        return {"total": state.total}

    return handler


def demo() -> ChainReport:
    """A healthy chain: 3,000 chunks of 20 ms under a 5 s timeout, about a dozen hops."""
    clock = VirtualClock()
    sim = Simulator(chain(clock), timeout=5.0, clock=clock, ledger="memory")
    return sim.run({"n": 3000, "chunk": 0.02})


def faults(seed: int = 11) -> ChainReport:
    """The same chain with hangs (timeouts), crashes and duplicate deliveries injected."""
    clock = VirtualClock()
    plan = FaultPlan(duplicate=0.3, crash=0.1, hang=0.15)
    sim = Simulator(chain(clock), timeout=5.0, clock=clock, ledger="memory", faults=plan, seed=seed)
    return sim.run({"n": 2000, "chunk": 0.02})


def long_chain() -> ChainReport:
    """300 hops of about a second each."""
    clock = VirtualClock()
    sim = Simulator(chain(clock), timeout=1.2, clock=clock, ledger="memory")
    return sim.run({"n": 32500, "chunk": 0.01})


PICTURES = {
    "timeline-demo": (demo, "a healthy chain: 3,000 chunks under a 5 s timeout"),
    "timeline-faults": (faults, "the same kind of chain with timeouts, crashes and duplicates injected"),
    "timeline-300-hops": (long_chain, "a 300-hop chain"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg-only", action="store_true", help="write the SVG files, not the PNGs")
    parser.add_argument("--out", type=Path, default=HERE, help="the folder to write to (default: docs/img)")
    args = parser.parse_args(argv)
    converter = shutil.which("rsvg-convert")
    if not args.svg_only and converter is None:
        print("rsvg-convert not found: apt-get install librsvg2-bin, or pass --svg-only", file=sys.stderr)
        return 2
    for name, (run, title) in PICTURES.items():
        report = run()
        svg = report.write_timeline(args.out / f"{name}.svg", title=title)
        print(f"{svg}: {report.hops} hops, {report.invocations} invocations, status {report.status}")
        if not args.svg_only and converter is not None:
            png = args.out / f"{name}.png"
            subprocess.run([converter, "--zoom", "1", "-o", str(png), str(svg)], check=True)
            print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
