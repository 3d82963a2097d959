"""``recurse-lambda demo``: count the lines of a sample object in an embedded S3, as a chain of many hops.

Needs no AWS account and no network: the S3 is moto, in this process, on loopback; Lambda is the simulator, in
virtual time: each chunk costs a fixed number of virtual seconds (``--chunk-cost``), so the chain takes the same
number of hops on every machine, whatever its load. The handler is ``examples/line_count.py``, shipped in the wheel.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from ..chain.handler import RecursiveHandler
from ..local import Simulator, VirtualClock
from .common import (
    HopView,
    Progress,
    UsageError,
    WatchedHandler,
    add_timeline_option,
    check_timeline_path,
    load_module_from_file,
    preload,
    runner_logs,
    warm_up,
    write_timeline,
)
from .simulate import paced

BUCKET = "recurse-lambda-demo"
KEY = "sample/lines.txt"
MB = 1024 * 1024

# Words of 1 to 4 bytes per character, so lines hold multi-byte UTF-8 that ranges will cut in the middle.
_WORDS = (
    "lambda",
    "chain",
    "hop",
    "cursor",
    "ledger",
    "envelope",
    "offset",
    "safe",
    "point",
    "yield",
    "hand-off",
    "retry",
    "état",
    "naïve",
    "Grüße",
    "façade",
    "smörgåsbord",
    "данные",
    "строка",
    "日本語",
    "行",
    "数える",
    "🙂",
    "🚀",
    "∑",
    "≥",
    "π",
)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="count the lines of a sample object in an embedded S3, as a chain of many hops",
        description=(
            "Write a sample object of a few tens of MB to an in-process S3, count its lines with "
            "examples/line_count.py as a chain of simulated Lambda invocations with a short timeout, and check "
            "the result against a direct count. No AWS account and no network needed."
        ),
    )
    p.add_argument("--size-mb", type=float, default=32.0, help="size of the sample object (default: 32)")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.5,
        help="the simulated function's timeout, in virtual seconds (default: 0.5)",
    )
    p.add_argument(
        "--chunk-cost",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="virtual seconds each chunk of 20 000 lines costs (default: 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample's content")
    add_timeline_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="the runner's info logs and tracebacks")
    p.set_defaults(command=run)


def load_example() -> ModuleType:
    """``examples/line_count.py``: from the wheel (``recurse_lambda/_examples``), else from the repository."""
    name = "recurse_lambda._examples.line_count"
    if name in sys.modules:
        return sys.modules[name]
    shipped = resources.files("recurse_lambda").joinpath("_examples").joinpath("line_count.py")
    if shipped.is_file():
        with resources.as_file(shipped) as path:
            return load_module_from_file(name, path)
    # An editable install: the package lives in the repository, next to examples/.
    repo = Path(__file__).resolve().parents[2] / "examples" / "line_count.py"
    if repo.is_file():
        return load_module_from_file(name, repo)
    raise UsageError(
        "examples/line_count.py is not in this installation (neither in the wheel nor beside it)"
    )


def sample_object(size: int, seed: int) -> bytes:
    """About ``size`` bytes of lines: varied lengths, empty and very long lines, ~30 % CRLF, multi-byte UTF-8,
    and a last line without newline. The same ``seed`` gives the same bytes."""
    rng = random.Random(seed)
    pool: list[bytes] = []
    for _ in range(4096):
        roll = rng.random()
        if roll < 0.04:
            text = ""
        elif roll < 0.041:  # a few long lines (up to ~20 KB)
            text = " ".join(rng.choices(_WORDS, k=rng.randint(200, 3_000)))
        else:
            text = " ".join(rng.choices(_WORDS, k=rng.randint(1, 12)))
        pool.append(text.encode() + (b"\r\n" if rng.random() < 0.3 else b"\n"))
    average = sum(map(len, pool)) / len(pool)
    lines = rng.choices(pool, k=max(1, int(size / average)))
    return b"".join(lines) + "the last line, without a newline ✓".encode()


def count_lines(data: bytes) -> dict[str, int]:
    """The result ``line_count`` must give (its docstring's contract), computed in one pass over the bytes."""
    pieces = data.split(b"\n")
    last = pieces.pop()  # after the last "\n": the unterminated last line, or b""
    checksum = 0
    for piece in pieces:
        checksum += zlib.crc32(piece[:-1] if piece.endswith(b"\r") else piece)
    lines = len(pieces)
    if last:
        checksum += zlib.crc32(last)
        lines += 1
    return {"lines": lines, "bytes": len(data), "checksum": checksum % 2**64}


def demo_progress(size: int) -> Progress:
    def show(view: HopView) -> None:
        offset = getattr(view.state, "offset", None)
        where = (
            "" if offset is None else f"  offset {offset / MB:7.2f}/{size / MB:.2f} MB {offset / size:6.1%}"
        )
        where += "" if view.committed or offset is None else " (uncommitted)"
        hop = "-" if view.hop is None else str(view.hop)
        print(
            f"[{view.elapsed:6.2f}s] hop {hop:>3}{where}  chunks {view.chunks:>3}  {view.outcome}",
            file=sys.stderr,
            flush=True,
        )

    return show


def run(args: argparse.Namespace) -> int:
    if args.size_mb <= 0:
        raise UsageError("--size-mb must be positive")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if not args.chunk_cost > 0:
        raise UsageError("--chunk-cost must be positive")
    check_timeline_path(args.timeline)
    from ..local.embedded_s3 import EmbeddedS3, MissingExtraError

    t0 = time.monotonic()
    example = load_example()
    handler = example.handler
    if not isinstance(handler, RecursiveHandler):
        raise UsageError("the shipped examples/line_count.py has no @recursive handler")
    clock = VirtualClock()
    handler = paced(handler, clock, args.chunk_cost)
    err = sys.stderr
    try:
        server = EmbeddedS3().start()  # first: without moto, say so before spending time on the sample
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from exc
    try:
        data = sample_object(int(args.size_mb * MB), args.seed)
        expected = count_lines(data)
        size = len(data)
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=data)
        del data
        warm_up(server.client(), BUCKET, KEY)
        print(
            f"wrote s3://{BUCKET}/{KEY} ({size / MB:.1f} MB, {expected['lines']} lines) to an embedded S3 at "
            f"{server.endpoint_url}; counting it as a chain with a {args.timeout:g} s timeout, each chunk "
            f"costing {args.chunk_cost:g} s (virtual time)",
            file=err,
            flush=True,
        )
        sim = Simulator(
            WatchedHandler(handler, (lambda view: None) if args.quiet else demo_progress(size)),
            timeout=args.timeout,
            clock=clock,
            ledger="memory",
            seed=args.seed,
            s3_client=server.client,
        )
        preload()
        with runner_logs(err, args.verbose):
            report = sim.run({"bucket": BUCKET, "key": KEY})
    finally:
        server.stop()
    title = (
        f"recurse-lambda demo: {size / MB:.1f} MB, {args.timeout:g} s timeout, "
        f"{args.chunk_cost:g} s per chunk (virtual time)"
    )
    written = write_timeline(report, args.timeline, title)
    print(report.timeline())
    print(f"result:   {json.dumps(report.result)}")
    print(f"expected: {json.dumps(expected)}")
    elapsed = time.monotonic() - t0
    if report.status != "SUCCEEDED":
        print(f"demo failed: the chain ended {report.status}: {report.error}", file=err)
        return 1
    if report.result != expected:
        print("demo failed: the chain's result differs from the direct count", file=err)
        return 1
    if not written:
        return 1
    print(
        f"OK: {report.hops} hops, {report.invocations} invocations, {report.ended - report.started:.1f} s of "
        f"virtual time ({elapsed:.1f} s of real time); the chain's count matches the direct count"
    )
    return 0
