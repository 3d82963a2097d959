"""Listing a prefix: ``run.s3.keys`` as a chain under faults, against a plain ``list_objects_v2`` paginator.

Starts an S3 server on 127.0.0.1 at a free port and fills one bucket without HTTP: N keys under ``data/`` (some
with a non-ASCII character, created out of order) and a few hundred outside the prefix. ``--server juicefs``
(the default): a JuiceFS gateway, filled by ``juicefs sync`` of a local tree straight into its volume.
``--server moto``: moto's ``ThreadedMotoServer`` in a child process (it does not share the benchmark's
interpreter lock), filled through its in-process backend; much faster to fill, but moto lists the whole bucket
again for every page, so its listing slows as the bucket grows. For comparison it also times keys ``PUT`` over
HTTP by 16 threads. Then, in the same run, rounds alternate the order of the contenders (A B C D, then D C B A,
...), each listing every key under ``data/`` (1,000 keys a page):

* ``paginator``: boto3's ``list_objects_v2`` paginator (continuation tokens), one client;
* ``listing``: ``KeyLister`` (what ``run.s3.keys`` returns) iterated outside a chain, ``StartAfter`` cursors;
* ``chain``: a ``@recursive`` handler that lists with ``run.s3.keys(bucket, prefix, start_after=state.after)``,
  one batch per safe point, run as a whole chain by the simulator (virtual time: each batch costs
  ``--batch-seconds`` of a ``--timeout`` second invocation, so the chain hops every few batches) on the
  in-memory ledger, without faults;
* ``chain_faults``: the same chain under a fault plan: duplicate deliveries, random crashes and transient
  errors, recycled containers, and a crash at every named point (``after_claim`` at the 2nd invocation,
  ``before_checkpoint`` at the 3rd, ...).

Every contender folds each key into a chained SHA-256 (``h = sha256(h + key + NUL)``) and a count; the chain
keeps both in its state, so what it committed is checked, not what it happened to see. Each is asserted equal
to the fold over the expected keys sorted as UTF-8 bytes: every key exactly once, in S3's order. Rates are
keys per wall-clock second (the chain's includes the simulator, the ledger and every replayed page); medians
are quoted. The last line printed is one JSON object.

    python benchmarks/s3_list.py [--quick] [--keys 100000] [--rounds 3] [--server juicefs|moto]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKET = "bench-list"
PREFIX = "data/"
OUTSIDE = 300  # keys under other prefixes, before and after ``data/``
PUT_SAMPLE = 2000  # keys PUT over HTTP, to compare with the backend's fill
CONTENDERS = ("paginator", "listing", "chain", "chain_faults")


def expected_keys(n: int) -> list[str]:
    """The keys under ``data/``, in the order they are created (not the listing order)."""
    keys = []
    for i in range(n):
        j = (i * 7919) % n  # a permutation when n is not a multiple of 7919: created out of order
        keys.append(f"{PREFIX}{j % 97:02d}/{j:07d}{'-é' if j % 13 == 0 else ''}")
    return keys


def outside_keys() -> list[str]:
    return [f"a-before/{i:04d}" if i % 2 else f"zz-after/{i:04d}" for i in range(OUTSIDE)]


def fold(digest: bytes, keys: Iterable[str]) -> tuple[bytes, int]:
    n = 0
    for key in keys:
        digest = hashlib.sha256(digest + key.encode() + b"\0").digest()
        n += 1
    return digest, n


# -- the servers ---------------------------------------------------------------------------------------------


def serve(n: int) -> None:
    """(A child process.) moto on a free port, filled through its backend; print the endpoint, stop at stdin EOF."""
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_bucket(BUCKET, "us-east-1")
    t0 = time.perf_counter()
    for key in expected_keys(n) + outside_keys():
        backend.put_object(BUCKET, key, key.encode()[-8:])
    fill = time.perf_counter() - t0
    print(json.dumps({"endpoint": f"http://{host}:{port}", "fill_s": fill}), flush=True)
    sys.stdin.read()
    server.stop()


Server = tuple[str, Any, float, Callable[[], None]]  # endpoint, boto3 session, fill seconds, stop


def start_moto(n: int) -> Server:
    from recurse_lambda.local.embedded_s3 import isolated_session

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"the moto server did not start (exit {proc.returncode})")
    info = json.loads(line)

    def stop() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)

    return info["endpoint"], isolated_session("testing", "testing"), info["fill_s"], stop


def start_juicefs(n: int) -> Server:
    """A JuiceFS gateway, filled by ``juicefs sync`` of a local tree straight into its volume (no HTTP)."""
    import shutil
    import tempfile

    from recurse_lambda.local.embedded_s3 import isolated_session
    from recurse_lambda.local.juicefs import JuiceFSGateway, find_juicefs

    gateway = JuiceFSGateway().start()
    try:
        gateway.client().create_bucket(Bucket=BUCKET)
        t0 = time.perf_counter()
        src = Path(tempfile.mkdtemp(prefix="s3-list-"))
        try:
            keys = expected_keys(n) + outside_keys()
            for folder in {k.rsplit("/", 1)[0] for k in keys}:
                (src / folder).mkdir(parents=True, exist_ok=True)
            for key in keys:
                (src / key).write_bytes(key.encode()[-8:])
            assert gateway.directory is not None
            env = dict(os.environ, S3_LIST_META=f"sqlite3://{gateway.directory / 'meta.db'}")
            argv = [find_juicefs(), "sync", "--threads", "16", f"{src}/", f"jfs://S3_LIST_META/{BUCKET}/"]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"juicefs sync failed:\n{done.stderr[-2000:]}")
        finally:
            shutil.rmtree(src, ignore_errors=True)
        fill = time.perf_counter() - t0
    except BaseException:
        gateway.stop()
        raise
    return gateway.endpoint_url, isolated_session(gateway.access_key, gateway.secret_key), fill, gateway.stop


# -- the contenders ------------------------------------------------------------------------------------------


def paginator(client: Any) -> dict[str, Any]:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=PREFIX, PaginationConfig={"PageSize": 1000}
    )
    digest, n = fold(b"", (o["Key"] for page in pages for o in page.get("Contents", ())))
    return {"digest": digest, "n": n}


def listing(client: Any) -> dict[str, Any]:
    from recurse_lambda.s3._listing import KeyLister

    digest, n = fold(b"", (r.key for r in KeyLister(client, BUCKET, PREFIX)))
    return {"digest": digest, "n": n}


def chain(client_factory: Any, faults: bool, seed: int, timeout: float, cost: float) -> dict[str, Any]:
    from pydantic import BaseModel

    from recurse_lambda import Run, recursive
    from recurse_lambda.local import FaultPlan, Simulator, VirtualClock
    from recurse_lambda.local._faults import POINTS

    class Listed(BaseModel):
        after: str = ""
        n: int = 0
        digest: str = ""

    clock = VirtualClock()

    @recursive(state=Listed)
    def handler(event: dict[str, Any], state: Listed, run: Run) -> Generator[None, None, dict[str, Any]]:
        for batch in run.s3.keys(event["bucket"], event["prefix"], start_after=state.after).batches():
            digest, n = fold(bytes.fromhex(state.digest), (r.key for r in batch))
            state.digest, state.n, state.after = digest.hex(), state.n + n, batch.end
            clock.advance(cost)
            yield  # a safe point: the cursor and the fold are committed together
        return {"n": state.n, "digest": state.digest}

    plan = None
    if faults:
        plan = FaultPlan(
            duplicate=0.3,
            crash=0.05,
            error=0.05,
            recycle=0.3,
            # every named point, three invocations apart, so a hop does not spend all its retries on them
            crash_at=tuple((p, 3 * i + 2) for i, p in enumerate([*POINTS, "safe_point"])),
        )
    sim = Simulator(
        handler,
        timeout=timeout,
        clock=clock,
        ledger="memory",
        s3_client=client_factory,
        faults=plan,
        seed=seed,
    )
    report = sim.run({"bucket": BUCKET, "prefix": PREFIX})
    if report.status != "SUCCEEDED":
        raise RuntimeError(f"the chain ended {report.status}: {report.error}")
    return {
        "digest": bytes.fromhex(report.result["digest"]),
        "n": report.result["n"],
        "hops": report.hops,
        "invocations": report.invocations,
        "retries": report.retries,
        "duplicates_dropped": report.duplicates_dropped,
    }


# -- the driver ----------------------------------------------------------------------------------------------


def put_sample(make_client: Callable[[], Any]) -> float:
    """Keys per second PUT over HTTP by 16 threads (outside the listed prefix), to compare with the fill."""
    clients = [make_client() for _ in range(16)]

    def put(i: int) -> None:
        clients[i % 16].put_object(Bucket=BUCKET, Key=f"put-sample/{i:05d}", Body=b"x")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(PUT_SAMPLE)))
    return PUT_SAMPLE / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--keys", type=int, default=0, help="keys under the prefix (100,000; 10,000 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 keys, 2 rounds")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of every contender (3; 2 with --quick)")
    parser.add_argument("--server", choices=("juicefs", "moto"), default="juicefs")
    parser.add_argument("--timeout", type=float, default=5.0, help="the simulated invocation's seconds")
    parser.add_argument("--batch-seconds", type=float, default=1.0, help="virtual seconds each batch costs")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return

    from recurse_lambda.local.embedded_s3 import _config

    n = args.keys or (10_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 3)
    endpoint, session, fill, stop = (start_juicefs if args.server == "juicefs" else start_moto)(n)

    def make_client() -> Any:
        return session.client("s3", endpoint_url=endpoint, config=_config(True))

    want, count = fold(b"", sorted(expected_keys(n), key=str.encode))
    assert count == n
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    try:
        put_rate = put_sample(make_client)
        how = "juicefs sync into the volume" if args.server == "juicefs" else "moto's backend, in its process"
        print(
            f"{args.server} {endpoint}: {n:,} keys (+{OUTSIDE} outside the prefix) created through {how} "
            f"in {fill:.1f} s ({n / fill:,.0f} keys/s); PUT over HTTP by 16 threads: {put_rate:,.0f} keys/s"
        )
        client = make_client()
        for r in range(rounds):
            for name in CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]:  # A B C D, then D C B A
                t = time.perf_counter()
                if name == "paginator":
                    got = paginator(client)
                elif name == "listing":
                    got = listing(client)
                else:
                    got = chain(make_client, name == "chain_faults", r, args.timeout, args.batch_seconds)
                wall = time.perf_counter() - t
                assert got.pop("n") == n and got.pop("digest") == want, f"{name}: not every key once in order"
                got.update(wall=wall, keys_s=n / wall)
                results[name].append(got)
                extra = {k: v for k, v in got.items() if k not in ("wall", "keys_s")}
                print(
                    f"round {r + 1} {name:>12}: {n / wall:9,.0f} keys/s  {wall:7.2f} s  {extra or ''}",
                    flush=True,
                )
    finally:
        stop()

    med = {name: statistics.median(x["keys_s"] for x in runs) for name, runs in results.items()}
    faulty = results["chain_faults"]
    summary = {
        "keys": n,
        "rounds": rounds,
        "server": args.server,
        "fill_s": round(fill, 1),
        "http_put_keys_s": round(put_rate),
        "paginator_keys_s": round(med["paginator"]),
        "listing_keys_s": round(med["listing"]),
        "chain_clean_keys_s": round(med["chain"]),
        "chain_keys_s": round(med["chain_faults"]),
        "hops": statistics.median(x["hops"] for x in faulty),
        "hops_clean": statistics.median(x["hops"] for x in results["chain"]),
        "invocations": [x["invocations"] for x in faulty],
        "retries": [x["retries"] for x in faulty],
        "duplicates_dropped": [x["duplicates_dropped"] for x in faulty],
        "every_key_once_in_order": True,
    }
    print(
        f"medians: paginator {med['paginator']:,.0f}, listing {med['listing']:,.0f}, chain {med['chain']:,.0f}, "
        f"chain under faults {med['chain_faults']:,.0f} keys/s"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
