"""``recurse-lambda simulate``: run any ``@recursive`` handler as a chain in the simulator, against local S3."""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import re
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..chain.handler import RecursiveHandler
from ..core.state_codec import strict_dumps
from ..local import ChainReport, CpuClock, FaultPlan, SimClock, Simulator, VirtualClock, WallClock
from .common import (
    UsageError,
    WatchedHandler,
    add_timeline_option,
    check_timeline_path,
    cwd_first_on_path,
    generic_progress,
    parse_event,
    preload,
    resolve_handler,
    runner_logs,
    warm_up,
    write_timeline,
)

# Loose on purpose (legacy us-east-1 buckets may hold capitals and underscores), but S3 and moto refuse names
# shorter than 3 characters: checked here so that `s3://b/k` is a usage error with a message, not a 400.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="run a @recursive handler as a chain in the local simulator",
        description=(
            "Run MODULE:FUNCTION (a @recursive handler, imported from the current directory as `python -m` "
            "would) as a chain of simulated Lambda invocations, against an embedded S3 (or --s3-endpoint). "
            "Exit status: 0 when the chain SUCCEEDED, 1 otherwise, 2 for a usage error."
        ),
    )
    p.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. examples.line_count:handler")
    p.add_argument("--event", default="{}", help="the first event: JSON, @FILE or @- (default: {})")
    p.add_argument(
        "--timeout", type=float, default=1.0, help="the simulated function's timeout in seconds (default: 1)"
    )
    p.add_argument(
        "--put",
        action="append",
        default=[],
        metavar="LOCAL=s3://BUCKET/KEY",
        help="upload a local file first, creating the bucket if needed (repeatable)",
    )
    p.add_argument(
        "--faults", default="", metavar="SPEC", help="e.g. duplicate=0.3,crash=0.2,throttle=0.2,recycle=0.5"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fault schedule and request ids")
    p.add_argument("--json", action="store_true", help="end with one JSON line: the chain's summary")
    p.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="use this S3-compatible endpoint (credentials from the environment)",
    )
    p.add_argument("--stateless", action="store_true", help="no ledger: the classic at-least-once chain")
    p.add_argument(
        "--clock",
        choices=CLOCKS,
        default=None,
        help=(
            "what a chunk's time is measured in: virtual (moves only when advanced: by --chunk-cost, the "
            "simulator's waits, or the handler; exact and repeatable), cpu (the CPU time of the thread running "
            "the invocations) or wall (real seconds). Default: wall, or virtual with --chunk-cost"
        ),
    )
    p.add_argument(
        "--virtual",
        action="store_true",
        help="the same as --clock virtual",
    )
    p.add_argument(
        "--chunk-cost",
        type=float,
        default=None,
        metavar="SECONDS",
        help="virtual seconds each chunk costs, added at every safe point (needs the virtual clock)",
    )
    add_timeline_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="the runner's info logs and tracebacks")
    p.set_defaults(command=run)


@dataclass(frozen=True)
class Upload:
    local: Path
    bucket: str
    key: str


def parse_put(spec: str) -> Upload:
    """``LOCAL=s3://BUCKET/KEY``; the last ``=s3://`` splits, so a local path may hold ``=``."""
    local, sep, rest = spec.rpartition("=s3://")
    bucket, _, key = rest.partition("/")
    if not sep or not local or not bucket or not key:
        raise UsageError(f"--put expects LOCAL=s3://BUCKET/KEY, got {spec!r}")
    if not _BUCKET_NAME.match(bucket):
        raise UsageError(
            f"--put: {bucket!r} is not a valid S3 bucket name (3-63 characters: letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit)"
        )
    path = Path(local)
    if not path.is_file():
        raise UsageError(f"--put: no such file: {local}")
    return Upload(path, bucket, key)


def parse_faults(spec: str) -> FaultPlan:
    try:
        return FaultPlan.parse(spec)
    except ValueError as exc:
        raise UsageError(f"--faults {spec!r}: {exc}") from exc


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists (it may already be ours)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = client.meta.region_name
    extra: dict[str, Any] = {}
    if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(Bucket=bucket, **extra)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


@contextlib.contextmanager
def s3_clients(endpoint: str | None, *, eager: bool) -> Iterator[Callable[[], Any]]:
    """A zero-argument S3 client factory: the given endpoint's, or an embedded S3's.

    The embedded S3 starts now when ``eager`` (there are files to upload), else on the first client asked
    for, so a handler that never touches S3 runs without moto.
    """
    from ..local.embedded_s3 import EmbeddedS3, MissingExtraError, environment_clients

    if endpoint is not None:
        yield environment_clients(endpoint)
        return
    server = EmbeddedS3()
    if eager:
        try:
            server.start()
        except MissingExtraError as exc:
            raise UsageError(f"{exc} (or pass --s3-endpoint URL)") from exc

    def client() -> Any:
        return server.start().client()

    try:
        yield client
    finally:
        server.stop()


CLOCKS = ("virtual", "cpu", "wall")


def choose_clock(args: argparse.Namespace) -> str:
    """The clock named by ``--clock`` / ``--virtual`` / ``--chunk-cost``; a usage error when they disagree."""
    clock: str | None = args.clock
    if args.virtual:
        if clock not in (None, "virtual"):
            raise UsageError(f"--virtual and --clock {clock} disagree")
        clock = "virtual"
    if args.chunk_cost is not None:
        if not args.chunk_cost >= 0:
            raise UsageError("--chunk-cost must be a non-negative number of seconds")
        if clock not in (None, "virtual"):
            raise UsageError(
                f"--chunk-cost advances the virtual clock; with --clock {clock} a chunk costs what it really takes"
            )
        clock = "virtual"
    return clock or "wall"


def make_clock(name: str) -> SimClock:
    clocks: dict[str, type[SimClock]] = {"virtual": VirtualClock, "cpu": CpuClock, "wall": WallClock}
    return clocks[name]()


def paced(handler: RecursiveHandler, clock: VirtualClock, cost: float) -> RecursiveHandler:
    """``handler`` with each chunk (the work before a ``yield``) costing ``cost`` more virtual seconds: the clock
    moves inside the chunk, so the runner measures it as the chunk's own time (as the pytest plugin's
    ``chunk_cost=`` does)."""
    inner = handler.fn

    def pace(chunks: Generator[Any, Any, Any]) -> Generator[None, None, Any]:
        try:
            while True:
                try:
                    next(chunks)
                except StopIteration as stop:
                    clock.advance(cost)  # the last chunk costs as much as the others
                    return stop.value
                clock.advance(cost)
                yield
        finally:
            chunks.close()  # a hand-off or a kill closes the user's generator too

    @functools.wraps(inner)  # the runner keys warm-container markers by the function's qualified name
    def fn(event: Any, state: Any, run: Any) -> Any:
        out = inner(event, state, run)
        return pace(out) if inspect.isgenerator(out) else out

    return RecursiveHandler(fn, handler.config)


def print_report(report: ChainReport, as_json: bool, clock: str = "wall") -> None:
    summary = report.summary()
    # Which clock the figures are in: with "virtual" every field is exact and repeatable for a seed and faults;
    # with "wall" or "cpu" the durations (duration_s, billed_s, utilization) are measured and vary run to run.
    summary["clock"] = clock
    if as_json:
        if report.status != "SUCCEEDED":
            summary["last_state"] = report.last_state
        print(strict_dumps(summary, default=str, sort_keys=True), flush=True)
        return
    print(report.timeline())
    if report.status == "SUCCEEDED":
        print(f"result: {strict_dumps(report.result, default=str)}")
    else:
        print(f"chain {report.status}: {report.error or 'no error recorded'}")
        if report.last_state is not None:
            print(f"last committed state: {strict_dumps(report.last_state, default=str)}")


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    clock_name = choose_clock(args)
    event = parse_event(args.event)
    faults = parse_faults(args.faults)
    uploads = [parse_put(spec) for spec in args.put]
    check_timeline_path(args.timeline)
    with cwd_first_on_path():
        handler = resolve_handler(args.target)
        with s3_clients(args.s3_endpoint, eager=bool(uploads)) as factory:
            if uploads:
                client = factory()
                for up in uploads:
                    ensure_bucket(client, up.bucket)
                    client.upload_file(str(up.local), up.bucket, up.key)
                    warm_up(factory(), up.bucket, up.key)
                    print(f"uploaded {up.local} to s3://{up.bucket}/{up.key}", file=sys.stderr)
            clock = make_clock(clock_name)
            if args.chunk_cost is not None and isinstance(clock, VirtualClock):
                handler = paced(handler, clock, args.chunk_cost)
            sim = Simulator(
                WatchedHandler(handler, (lambda view: None) if args.quiet else generic_progress(sys.stderr)),
                timeout=args.timeout,
                clock=clock,
                ledger=None if args.stateless else "memory",
                faults=faults,
                seed=args.seed,
                s3_client=factory,
            )
            preload()
            with runner_logs(sys.stderr, args.verbose):
                report = sim.run(event)
    written = write_timeline(report, args.timeline, f"recurse-lambda simulate {args.target}")
    print_report(report, args.json, clock_name)
    return 0 if report.status == "SUCCEEDED" and written else 1
