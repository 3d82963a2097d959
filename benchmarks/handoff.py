"""What one hop costs with the DynamoDB ledger: DynamoDB requests per hop, and the library's CPU per hand-off.

Real hops against moto in **server mode** (the real HTTP protocol: botocore serialises, signs and parses every
request): a ``ThreadedMotoServer`` on 127.0.0.1 and a free port, started and stopped here. A ``@recursive``
handler with ``ledger=DynamoDBLedger(...)`` and a signing key runs ~200 hops, one per call of
``handler.handle(event, FakeContext(...), World(...))``; each hop does a few trivial chunks and hands off
(``policy=after_chunks``), and the payload it sends is fed to the next call, as Lambda would.

The invoker is a recording fake in front of the real :class:`LambdaInvoker`: it keeps the payload for the next
hop, and (by default, ``--invoke moto``) makes the real boto3 ``Invoke(InvocationType="Event")`` call to moto's
Lambda endpoint, which answers 202 and runs nothing (``use_docker`` off), so the invoke call's own client-side
cost is part of the figure. ``--invoke fake`` drops the payload into a list instead (no HTTP at all).

**Method: CPU time of the calling thread.** The server runs in other threads; while the caller waits for its
answer it is blocked on a socket and accrues no CPU time, so ``time.thread_time()`` in the calling thread counts
the library and its client side (botocore, urllib3) and excludes the server. The world's clock is a
:class:`ThreadCpuClock` (``now()`` is ``time.thread_time()``), so the runner's own measurement of each hand-off —
from closing the generator through encoding and signing the envelope, the conditional ``hand_off`` write and the
invoke call — is that hand-off's CPU time; the ledger and invoker are wrapped to split it up. Figures are the
median over the hops after ``--warmup`` (first requests open connections and load botocore models).

Requests are counted with a botocore hook (``before-call.dynamodb.*``) on the ledger's client. The normal path
is ``start`` (hop 0 only) + ``claim`` + ``hand_off`` (or ``finish`` on the last hop); in-hop checkpoints are off
here (each adds one request). Run: ``python benchmarks/handoff.py`` (``--help`` for the knobs); the last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import boto3
from pydantic import BaseModel

from recurse_lambda import InvocationStats, Run, WarmState, World, after_chunks, recursive
from recurse_lambda.aws import DynamoDBLedger, LambdaInvoker
from recurse_lambda.local import FakeContext

TARGET_REQUESTS = 3
TARGET_CPU_MS = 5.0
FUNCTION = "handoff-bench"


class ThreadCpuClock:
    """``now()`` is the calling thread's CPU time (so measured spans exclude waiting); wall time for timestamps."""

    def now(self) -> float:
        return time.thread_time()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Progress(BaseModel):
    """A typical cursor: a byte offset, counters and a small accumulator (about 1 KB of JSON)."""

    offset: int = 0
    lines: int = 0
    bytes: int = 0
    counts: dict[str, int] = {}


class Timed:
    """Wraps an object and adds each method call's CPU time (calling thread) to ``spent[name]``."""

    def __init__(self, inner: Any, spent: dict[str, list[float]]) -> None:
        self._inner = inner
        self._spent = spent

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                self._spent.setdefault(name, []).append(time.thread_time() - t0)

        return timed


class Recording:
    """The fake invoker: keeps each payload for the next hop; optionally makes the real invoke call first."""

    def __init__(self, real: LambdaInvoker | None) -> None:
        self.real = real
        self.payloads: list[bytes] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        if self.real is not None:
            self.real.invoke_async(function, payload)
        self.payloads.append(payload)


@contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def lambda_function(url: str, clients: Callable[[str], Any]) -> None:
    """A function for moto to accept asynchronous invokes of, without Docker (it never runs)."""
    request = urllib.request.Request(
        f"{url}/moto-api/config", data=json.dumps({"lambda": {"use_docker": False}}).encode(), method="POST"
    )
    urllib.request.urlopen(request).read()
    role = clients("iam").create_role(RoleName="bench", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return None\n")
    clients("lambda").create_function(
        FunctionName=FUNCTION,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )


def run(hops: int, chunks: int, invoke: str, warmup: int) -> dict[str, Any]:
    with moto_server() as url:
        options = {"endpoint_url": url, "region_name": "us-east-1"}
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        made: dict[str, Any] = {}

        def clients(service: str) -> Any:
            if service not in made:
                made[service] = boto3.client(service, **options, **keys)
            return made[service]

        DynamoDBLedger.create_table(clients("dynamodb"), "chains")
        real = None
        if invoke == "moto":
            lambda_function(url, clients)
            real = LambdaInvoker(lambda: clients("lambda"))
        return drive(hops, chunks, clients, Recording(real), warmup)


def drive(
    hops: int, chunks: int, clients: Callable[[str], Any], invoker: Recording, warmup: int
) -> dict[str, Any]:
    ddb = clients("dynamodb")
    requests: list[str] = []
    ddb.meta.events.register("before-call.dynamodb.*", lambda model, **kw: requests.append(model.name))
    spent: dict[str, list[float]] = {}
    ledger = Timed(DynamoDBLedger("chains", client=lambda: ddb), spent)
    total = hops * chunks

    @recursive(
        state=Progress,
        ledger=ledger,
        policy=after_chunks(chunks),
        max_hops=hops + 1,
        checkpoint_every_seconds=None,
    )
    def handler(event: Any, state: Progress, run: Run) -> Iterator[None]:
        while state.lines < total:
            state.lines += 1
            state.offset += 4096
            state.bytes += 4096
            key = f"k{state.lines % 40:02d}"
            state.counts[key] = state.counts.get(key, 0) + 1
            yield
        return {"lines": state.lines}

    stats: list[InvocationStats] = []
    clock = ThreadCpuClock()
    world = World(
        clock=clock,
        invoker=Timed(invoker, spent),
        warm=WarmState(),  # one warm container for the whole chain
        ledger=ledger,
        environ={"RECURSE_LAMBDA_SIGNING_KEY": "bench-signing-key-0123456789abcdef"},
        observer=stats.append,
    )
    event: Any = {"bucket": "data", "key": "2026/01/events-000001.jsonl", "shard": 0}
    per_hop, hop_cpu = [], []
    for hop in range(hops + 1):
        ctx = FakeContext(
            clock=clock,
            deadline=clock.now() + 900.0,
            aws_request_id=f"00000000-0000-4000-8000-{hop:012d}",
            function_name=FUNCTION,
        )
        requests.clear()
        t0 = time.thread_time()
        out = handler.handle(event, ctx, world)
        hop_cpu.append(time.thread_time() - t0)
        per_hop.append(len(requests))
        if out["outcome"] != "handed_off":
            if out["outcome"] != "succeeded" or out["result"] != {"lines": total}:
                raise AssertionError(f"the benchmark's chain ended badly: {out}")
            break
        event = json.loads(invoker.payloads[-1])
    else:
        raise AssertionError("the chain did not finish")

    floor = []  # the cheapest DynamoDB request botocore can make, on the same client: its per-request floor
    for _ in range(50):
        t0 = time.thread_time()
        ddb.list_tables(Limit=1)
        floor.append(time.thread_time() - t0)

    handoffs = [s.handoff_time for s in stats if s.outcome == "handed_off"][warmup:]
    ledger_ms = spent["hand_off"][warmup:]
    invoke_ms = spent["invoke_async"][warmup:]
    payload = len(invoker.payloads[-1])
    return {
        "hops": len(per_hop),
        "per_hop": per_hop,
        "handoffs": handoffs,
        "ledger": ledger_ms,
        "invoke": invoke_ms,
        "hop_cpu": hop_cpu[warmup:],
        "claim": spent["claim"][warmup:],
        "payload_bytes": payload,
        "floor": floor[10:],
    }


def ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hops", type=int, default=200, help="hand-offs in the chain (200)")
    parser.add_argument("--chunks", type=int, default=5, help="chunks per hop (5)")
    parser.add_argument(
        "--warmup", type=int, default=10, help="first hand-offs left out of the CPU figures (10)"
    )
    parser.add_argument(
        "--invoke",
        choices=("moto", "fake"),
        default="moto",
        help="moto: the real boto3 Invoke against moto's Lambda endpoint (default); fake: no invoke call",
    )
    args = parser.parse_args(argv)

    r = run(args.hops, args.chunks, args.invoke, args.warmup)
    per_hop = r["per_hop"]
    mean_requests = sum(per_hop) / len(per_hop)
    handoff, ledger, invoke = ms(r["handoffs"]), ms(r["ledger"]), ms(r["invoke"])
    print(
        f"{r['hops']} hops, {args.chunks} chunks each, invoke={args.invoke}, payload {r['payload_bytes']} bytes"
    )
    print(
        f"DynamoDB requests: hop 0 {per_hop[0]}, hops 1..n-1 {sorted(set(per_hop[1:-1]))}, last {per_hop[-1]}"
    )
    print(
        f"  mean {mean_requests:.3f} per hop, max {max(per_hop)}, target ≤ {TARGET_REQUESTS}: "
        f"{'ok' if max(per_hop) <= TARGET_REQUESTS else 'MISSED'}"
    )
    print(
        f"library CPU per hand-off (median of {len(r['handoffs'])}, calling thread): {handoff:.3f} ms, "
        f"target ≤ {TARGET_CPU_MS} ms: {'ok' if handoff <= TARGET_CPU_MS else 'MISSED'}"
    )
    print(
        f"  of which ledger hand_off write {ledger:.3f} ms, invoke call {invoke:.3f} ms, "
        f"encode + sign + close {handoff - ledger - invoke:.3f} ms (medians, approximate split)"
    )
    print(
        f"  p90 {statistics.quantiles(r['handoffs'], n=10)[-1] * 1000:.3f} ms; claim {ms(r['claim']):.3f} ms; "
        f"whole hop {ms(r['hop_cpu']):.3f} ms"
    )
    print(f"  botocore's own floor: {ms(r['floor']):.3f} ms per request (ListTables on the same client)")
    summary = {
        "requests_per_hop": round(mean_requests, 3),
        "max_requests_per_hop": max(per_hop),
        "cpu_ms_per_handoff": round(handoff, 3),
        "cpu_ms_ledger_write": round(ledger, 3),
        "cpu_ms_invoke_call": round(invoke, 3),
        "cpu_ms_per_hop": round(ms(r["hop_cpu"]), 3),
        "cpu_ms_botocore_request_floor": round(ms(r["floor"]), 3),
        "hops": r["hops"],
        "invoke": args.invoke,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
