"""S3Cache: a cold fetch versus a warm revalidated hit of one large object, on a real S3-compatible server.

Starts a JuiceFS gateway on 127.0.0.1 (stopped after). Rounds alternate A B A C: A is a cold fetch (a fresh
cache), B a warm hit (one long-lived cache: a GET with IfNoneMatch answered 304), C the same conditional GET
made bare through botocore, without the cache: the floor a warm hit cannot go below. Quotes medians; the
body bytes of the warm hits are counted on the wire (response Content-Length and 304 bodies), not assumed.
The last line printed is one JSON object.

    python benchmarks/cache.py [--size-mib 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

try:
    import recurse_lambda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recurse_lambda.local.juicefs import JuiceFSGateway
from recurse_lambda.s3._cache import S3Cache

MiB = 1024 * 1024
BUCKET = "bench-cache"
KEY = "blob.bin"


class BodyBytes:
    """Counts GetObject body bytes on the wire: Content-Length of 200s, the read length of anything else."""

    def __init__(self, client: Any) -> None:
        self.total = 0
        self.statuses: list[int] = []
        client.meta.events.register("after-call.s3.GetObject", self._on_response)

    def _on_response(self, http_response: Any, **_: Any) -> None:
        self.statuses.append(http_response.status_code)
        if http_response.status_code == 200:
            self.total += int(http_response.headers.get("content-length", 0))
        else:
            self.total += len(http_response.content)


def warm_hit(cache: S3Cache, client: Any, size: int) -> float:
    t0 = time.perf_counter()
    got = cache.get(client, BUCKET, KEY)
    elapsed = time.perf_counter() - t0
    assert len(got) == size
    return elapsed


def bare_304(client: Any, etag: str) -> float:
    t0 = time.perf_counter()
    try:
        client.get_object(Bucket=BUCKET, Key=KEY, IfNoneMatch=etag)
    except client.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "304"
    else:
        raise AssertionError("expected a 304")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    size = args.size_mib * MiB
    max_bytes = max(256 * MiB, size)

    with JuiceFSGateway() as gateway:
        setup = gateway.client()
        setup.create_bucket(Bucket=BUCKET)
        payload = os.urandom(size)
        setup.put_object(Bucket=BUCKET, Key=KEY, Body=payload)

        cold_client, warm_client = gateway.client(), gateway.client()
        warm = S3Cache(max_bytes=max_bytes)
        # Untimed warm-up: open both clients' connections and fill the warm cache.
        assert S3Cache(max_bytes=max_bytes).get(cold_client, BUCKET, KEY) == payload
        assert warm.get(warm_client, BUCKET, KEY) == payload
        del payload
        wire = BodyBytes(warm_client)
        before = warm.stats

        cold_s: list[float] = []
        warm_s: list[float] = []
        floor_s: list[float] = []  # a bare conditional GET (no cache): the round trip a warm hit cannot beat
        floor_client = gateway.client()
        etag = warm_client.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
        for _ in range(args.rounds):
            for after_cold in (warm_hit, bare_304):
                cache = S3Cache(max_bytes=max_bytes)
                gc.collect()
                t0 = time.perf_counter()
                got = cache.get(cold_client, BUCKET, KEY)
                cold_s.append(time.perf_counter() - t0)
                assert len(got) == size
                del got, cache
                gc.collect()
                if after_cold is warm_hit:
                    warm_s.append(warm_hit(warm, warm_client, size))
                else:
                    floor_s.append(bare_304(floor_client, etag))

        after = warm.stats
        stats_body_bytes = after.bytes_downloaded - before.bytes_downloaded
        revalidations = after.revalidations - before.revalidations

    cold, hot, floor = (statistics.median(x) for x in (cold_s, warm_s, floor_s))
    print(f"object: {args.size_mib} MiB, rounds: {args.rounds} (A B A C: cold, warm hit, cold, bare 304)")
    print("cold s: " + " ".join(f"{t:.4f}" for t in cold_s))
    print("warm s: " + " ".join(f"{t:.4f}" for t in warm_s))
    print("bare 304 s: " + " ".join(f"{t:.4f}" for t in floor_s))
    print(f"median cold {cold:.4f} s ({size / cold / MiB:.0f} MiB/s), median warm {hot * 1000:.2f} ms")
    print(f"median bare conditional GET without the cache {floor * 1000:.2f} ms (the warm hit's floor)")
    print(f"warm/cold = {hot / cold:.4f} ({hot / cold * 100:.2f} %)")
    print(
        f"warm hits: {revalidations} revalidations, statuses {sorted(set(wire.statuses))}, "
        f"body bytes on the wire {wire.total}, by cache stats {stats_body_bytes}"
    )
    result = {
        "cold_s": round(cold, 6),
        "warm_s": round(hot, 6),
        "warm_body_bytes": max(wire.total, stats_body_bytes),
        "ratio": round(hot / cold, 6),
        "bare_304_s": round(floor, 6),
        "size_bytes": size,
        "rounds": args.rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
