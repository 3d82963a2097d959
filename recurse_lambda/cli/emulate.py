"""``recurse-lambda emulate``: run a ``@recursive`` handler as a chain through the local Lambda (AWS's runtime
client in worker processes, boto3 ``Invoke`` over HTTP), with S3 and the ledger on loopback servers that this
command starts and stops (docs/local-lambda.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from typing import Any, TextIO

from ..core.state_codec import strict_dumps
from .common import UsageError, cwd_first_on_path, parse_event, resolve_handler
from .simulate import parse_put  # one --put syntax for both commands

FAULTS = ("duplicate", "kill", "throttle")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "emulate",
        help="run a @recursive handler as a chain through a local Lambda (real processes, real HTTP)",
        description=(
            "Run MODULE:FUNCTION (a @recursive handler in the current directory) as a chain of invocations of a "
            "local Lambda: AWS's runtime interface client (awslambdaric) in worker processes, every hand-off a "
            "boto3 Invoke over HTTP, S3 (moto's server or the JuiceFS gateway) and the ledger (dynalite when "
            "node is available, else moto's server) on 127.0.0.1. The ledger table is passed to the function "
            "as RECURSE_LAMBDA_TABLE (read by ledger_from_env()). Everything started is stopped at the end. "
            "Exit status: 0 when the chain SUCCEEDED, 1 otherwise, 2 for a usage error."
        ),
    )
    p.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. examples.line_count:handler")
    p.add_argument("--event", default="{}", help="the first event: JSON, @FILE or @- (default: {})")
    p.add_argument("--workers", type=int, default=2, help="worker processes, the concurrency (default: 2)")
    p.add_argument(
        "--timeout", type=float, default=3.0, help="the function's timeout in seconds (default: 3)"
    )
    p.add_argument(
        "--put",
        action="append",
        default=[],
        metavar="LOCAL=s3://BUCKET/KEY",
        help="upload a local file first, creating the bucket if needed (repeatable)",
    )
    p.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="probabilities per delivery, e.g. duplicate=0.3,kill=0.2,throttle=0.1 (kill: SIGKILL before the "
        "deadline; throttle: 429 to an invoke)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the function (repeatable)",
    )
    p.add_argument("--s3", choices=("moto", "juicefs"), default="moto", help="the S3 server (default: moto)")
    p.add_argument(
        "--ledger",
        choices=("auto", "dynalite", "moto"),
        default="auto",
        help="the DynamoDB server (default: dynalite when node and npm are available, else moto)",
    )
    p.add_argument(
        "--limit", type=float, default=600.0, help="give up after this many seconds (default: 600)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the fault schedule")
    p.add_argument("--json", action="store_true", help="end with one JSON line: the chain's summary")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(command=run)


def parse_faults(spec: str) -> dict[str, float]:
    """``duplicate=P,kill=P,throttle=P`` (each optional, a probability in [0, 1])."""
    faults = dict.fromkeys(FAULTS, 0.0)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in faults:
            raise UsageError(f"--faults {spec!r}: expected NAME=P with NAME in {', '.join(FAULTS)}")
        try:
            p = float(value)
        except ValueError:
            raise UsageError(f"--faults {spec!r}: {value!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"--faults {spec!r}: {name} must be a probability in [0, 1]")
        faults[name] = p
    return faults


def parse_env(specs: list[str]) -> dict[str, str]:
    env = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise UsageError(f"--env expects NAME=VALUE, got {spec!r}")
        env[name] = value
    return env


def lambda_handler_name(target: str) -> str:
    """``MODULE:FUNCTION`` as Lambda's handler setting, ``MODULE.FUNCTION``."""
    module, _, attr = target.partition(":")
    if "." in attr:
        raise UsageError(f"{target}: Lambda's handler must be a module-level name (MODULE:FUNCTION)")
    return f"{module}.{attr}"


def start_emulation(
    args: argparse.Namespace, handler: str, environ: dict[str, str], faults: dict[str, float]
) -> Any:
    """S3, the ledger and the local Lambda, started (see :class:`~recurse_lambda.local.lambda_services.Emulation`)."""
    from ..local.embedded_s3 import MissingExtraError
    from ..local.juicefs import JuiceFSError
    from ..local.lambda_services import Dynalite, Emulation

    if args.ledger == "dynalite" and not Dynalite.available():
        raise UsageError("--ledger dynalite needs node and npm on the PATH")
    em = Emulation(
        handler,
        os.getcwd(),
        s3=args.s3,
        ledger=args.ledger,
        environ=environ,
        name=handler.rpartition(".")[0].replace(".", "-").replace("_", "-")[:64] or "function",
        workers=args.workers,
        timeout=args.timeout,
        duplicates=faults["duplicate"],
        kills=faults["kill"],
        throttles=faults["throttle"],
        seed=args.seed,
    )
    try:
        return em.start()
    except (MissingExtraError, JuiceFSError) as exc:
        raise UsageError(f"--s3 {args.s3}: {exc}") from exc


def hop_line(record: dict[str, Any], elapsed: float) -> str:
    hop = "-" if record.get("hop") is None else str(record["hop"])
    library = record.get("library_time")
    lib = "" if library is None else f"  library {library * 1000:5.0f} ms"
    return (
        f"[{elapsed:7.2f}s] hop {hop:>3}  {record.get('outcome') or '?':<12} chunks {record.get('chunks', 0):>4}  "
        f"{record.get('duration') or 0:6.3f} s{lib}"
    )


class Watch:
    """Follows a run: new hop records and failed deliveries, printed as they appear; the chain's record."""

    def __init__(self, em: Any, stream: TextIO | None) -> None:
        self.em = em
        self.stream = stream
        self.began = time.monotonic()
        self.hops: list[dict[str, Any]] = []
        self.terminal: list[dict[str, Any]] = []
        self._seen: set[tuple[Any, ...]] = set()
        self._deliveries = 0

    def _print(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)

    def poll(self) -> None:
        fn = self.em.fn
        elapsed = time.monotonic() - self.began
        fresh = []
        for record in fn.log_records():
            if record.get("kind") not in ("hop", "terminal"):
                continue
            key = tuple(
                str(record.get(k)) for k in ("kind", "request_id", "hop", "attempt", "outcome", "time")
            )
            if key not in self._seen:
                self._seen.add(key)
                fresh.append(record)
        fresh.sort(key=lambda r: r.get("time") or 0.0)
        for record in fresh:
            if record["kind"] == "hop":
                self.hops.append(record)
                self._print(hop_line(record, elapsed))
            else:
                self.terminal.append(record)
        deliveries = list(fn.deliveries)
        for inv, result in deliveries[self._deliveries :]:
            if not result.ok:
                self._print(
                    f"[{elapsed:7.2f}s]   ! {inv.kind} {inv.request_id[:8]} attempt {inv.attempt}: "
                    f"{result.error_type}"
                )
        self._deliveries = len(deliveries)


def summary(watch: Watch, record: Any, seconds: float, timed_out: bool) -> dict[str, Any]:
    fn = watch.em.fn
    library = [h["library_time"] for h in watch.hops if h.get("library_time") is not None]
    errors: dict[str, int] = {}
    for _, result in fn.deliveries:
        if not result.ok:
            errors[str(result.error_type)] = errors.get(str(result.error_type), 0) + 1
    status = "NOT_STARTED" if record is None else str(record.status)
    if record is None and watch.terminal:
        status = str(watch.terminal[0].get("status"))
    return {
        "status": "TIMED_OUT" if timed_out else status,
        "chain_id": None if record is None else record.chain_id,
        "result": None if record is None else record.result,
        "error": None if record is None else record.error,
        "hops": None if record is None else record.hop + 1,
        "invocations": len(fn.deliveries),
        "failed_deliveries": errors,
        "retries": sum(inv.kind == "retry" for inv, _ in fn.deliveries),
        "duplicates": sum(inv.kind == "duplicate" for inv, _ in fn.deliveries),
        "on_failure_records": len(fn.failures),
        "worker_restarts": fn.worker_restarts,
        "library_ms_median": round(statistics.median(library) * 1000, 1) if library else None,
        "library_ms_max": round(max(library) * 1000, 1) if library else None,
        "seconds": round(seconds, 2),
        "s3": watch.em.s3_name,
        "ledger": watch.em.ledger_name,
    }


def print_summary(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(strict_dumps(info, default=str, sort_keys=True), flush=True)
        return
    print(
        f"chain {info['chain_id']}: {info['status']} after {info['hops']} hops, {info['invocations']} invocations, "
        f"{info['seconds']} s"
    )
    if info["failed_deliveries"]:
        failed = ", ".join(f"{k} x{v}" for k, v in sorted(info["failed_deliveries"].items()))
        print(f"failed deliveries: {failed}; retries {info['retries']}, duplicates {info['duplicates']}")
    if info["library_ms_median"] is not None:
        print(f"library time per hop: median {info['library_ms_median']} ms, max {info['library_ms_max']} ms")
    if info["status"] == "SUCCEEDED":
        print(f"result: {strict_dumps(info['result'], default=str)}")
    else:
        print(f"error: {info['error'] or 'no error recorded'}")


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    event = parse_event(args.event)
    faults = parse_faults(args.faults)
    uploads = [parse_put(spec) for spec in args.put]
    extra_env = parse_env(args.env)
    if importlib.util.find_spec("awslambdaric") is None:
        raise UsageError("emulate needs AWS's runtime interface client: pip install 'recurse-lambda[lambda]'")
    with cwd_first_on_path():
        resolve_handler(args.target)  # fails early, with a usage error, on a bad target
    handler = lambda_handler_name(args.target)
    stream = None if args.quiet else sys.stderr

    def say(line: str) -> None:
        if stream is not None:
            print(line, file=stream, flush=True)

    say(f"starting S3 ({args.s3}), the ledger and {args.workers} workers of {handler} ...")
    em = start_emulation(args, handler, extra_env, faults)
    try:  # started: stopped whatever happens next (an error, Ctrl-C)
        fn = em.fn
        say(f"S3 at {em.s3_endpoint}, DynamoDB ({em.ledger_name}) at {em.ledger_endpoint}, table {em.table}")
        for up in uploads:
            em.put(up.bucket, up.key, up.local)
            say(f"uploaded {up.local} to s3://{up.bucket}/{up.key}")
        say(f"local Lambda {fn.name} at {fn.endpoint_url}: {args.workers} workers, timeout {args.timeout} s")
        began = time.monotonic()
        em.invoke(event)
        watch = Watch(em, stream)
        record, timed_out, idle_polls = None, False, 0
        while True:
            watch.poll()
            record = em.chain()
            if record is not None and record.status.terminal:
                break
            if record is None and watch.terminal:  # a stateless chain (no ledger): its terminal log record
                break
            if time.monotonic() - began > args.limit:
                timed_out = True
                break
            # Nothing queued or running for a second, and no end: nothing will happen any more.
            idle_polls = idle_polls + 1 if fn.wait_idle(timeout=0.25, settle=0.2) else 0
            if idle_polls >= 5:
                break
        seconds = time.monotonic() - began
        fn.wait_idle(timeout=5.0, settle=0.3)  # late duplicates, so their records are counted too
        watch.poll()
        info = summary(watch, record, seconds, timed_out)
    finally:
        em.stop()
    print_summary(info, args.json)
    return 0 if info["status"] == "SUCCEEDED" else 1
