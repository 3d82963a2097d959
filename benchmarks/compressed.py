"""Reading compressed objects on a JuiceFS gateway: the line reader against gzip.open and zstandard, and the chain.

Starts a JuiceFS gateway on 127.0.0.1 (stopped after) and uploads a generated text object (``--mib`` MiB of
lines, decompressed) twice: as one gzip member (level 6) and as zstd frames of 16 MiB (level 3). Then, in the
same run, rounds of four contenders in rotation (A B A B), each in a fresh forked process so that its peak RSS
is its own:

- ``gzip`` / ``zstd``: ``run.s3``'s line reader (``LineReader`` over a ``PinnedSource``, ``compression="auto"``,
  ``encoding=None``), every batch, the library's own client configuration;
- ``gzip_baseline``: ``gzip.open`` over a boto3 ``get_object`` stream; ``zstd_baseline``: ``zstandard``'s
  ``stream_reader`` over one (``read_across_frames=True``); both read 1 MiB at a time and split it into lines
  with ``bytes.split`` (the same work as the reader: decompressed lines, in memory one block at a time).

MB/s count decompressed bytes; figures are medians over the rounds. Then the chain: the gzip object read in
``--hops`` hops, each a new reader (and a new pin record, as a later hop has) resuming from the previous hop's
``batch.cursor`` through its JSON form, and stopping at the first batch past ``size * k / hops``; its total
decompression work (bytes decompressed, those skipped to reach a cursor included) relative to the content's size.
``rss_mb`` is the largest peak RSS of the reader runs (not of this parent, which made the data).

    python benchmarks/compressed.py [--mib 256] [--hops 20] [--rounds 3]

Last line: one JSON object with gzip_mb_s, gzip_baseline_mb_s, zstd_mb_s, zstd_baseline_mb_s, chain_work_ratio,
rss_mb, and more.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import io
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import zstandard

BUCKET = "compressed-bench"
MiB = 1024 * 1024
BLOCK = MiB


def text(size: int) -> bytes:
    """About ``size`` bytes of lines of random hex words (compresses about 2.5x with gzip -6)."""
    rng = random.Random(0)
    words = [rng.randbytes(rng.randrange(2, 9)).hex() for _ in range(5000)]
    lines = [" ".join(rng.choices(words, k=rng.randrange(3, 30))) + "\n" for _ in range(20_000)]
    block = "".join(lines).encode()
    return (block * (size // len(block) + 1))[:size]


def zstd_frames(data: bytes, frame: int = 16 * MiB) -> bytes:
    c = zstandard.ZstdCompressor(level=3)
    return b"".join(c.compress(data[i : i + frame]) for i in range(0, len(data), frame))


# -- the contenders, each in a forked process ---------------------------------------------------------------


def split_lines(read: Callable[[int], bytes]) -> tuple[int, int]:
    """(lines, bytes) of a decompressed stream, read a block at a time and split like the reader does."""
    carry, lines, total = b"", 0, 0
    while block := read(BLOCK):
        total += len(block)
        pieces = (carry + block).split(b"\n")
        carry = pieces.pop()
        lines += len(pieces)
    return lines + (1 if carry else 0), total


def contender(client: Any, name: str, key: str) -> tuple[int, int]:
    if name.endswith("_baseline"):
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
        if name.startswith("gzip"):
            with gzip.open(body) as f:
                return split_lines(f.read)
        reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
        return split_lines(reader.read)
    from recurse_lambda.s3 import LineReader, PinnedSource
    from recurse_lambda.s3._formats import open_reader

    lines = 0
    with open_reader(LineReader, PinnedSource(client, BUCKET, key, pins={}), 0, encoding=None) as r:
        for batch in r.batches():
            lines += len(batch.records)
        assert r.compression == name, r.compression
        return lines, r.position


def chain_work(client: Any, key: str, size: int, hops: int) -> dict[str, Any]:
    """The gzip object in ``hops`` hops, each resuming from the last one's cursor through JSON."""
    from recurse_lambda.s3 import LineReader, PinnedSource
    from recurse_lambda.s3._formats import open_reader

    pins: dict[str, Any] = {}
    cursor, work, lines, sizes, took = "0", 0, 0, [], 0
    for hop in range(hops):
        stop = size * (hop + 1) // hops
        pins = json.loads(json.dumps(pins))  # what a later hop gets back from the ledger
        r = open_reader(
            LineReader, PinnedSource(client, BUCKET, key, pins=pins), json.loads(cursor), encoding=None
        )
        with r:
            for batch in r.batches():
                lines += len(batch.records)
                cursor = json.dumps(batch.cursor)
                if batch.end >= stop:
                    break
            decoded = r.decompressed_ranges
            assert decoded is not None
            work += decoded.stream.decompressed
            took = r.position
        sizes.append(len(cursor))
    assert took == size, (took, size)
    return {"work": work, "lines": lines, "cursor_bytes": max(sizes)}


def forked(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()`` in a forked child, with its wall and CPU seconds and its own peak RSS (MiB)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(rd)
        code = 0
        try:
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            out.update(wall=wall, cpu=cpu, rss=after.ru_maxrss / 1024, load=os.getloadavg()[0])
            os.write(wr, json.dumps(out).encode())
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("a benchmark child failed (its traceback is above)")
    return dict(json.loads(data))


def library_client(endpoint: str, gateway: Any) -> Any:
    import boto3
    from botocore.config import Config

    from recurse_lambda.aws.clients import client_config

    config = client_config("s3").merge(Config(s3={"addressing_style": "path"}))
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=gateway.access_key,
        aws_secret_access_key=gateway.secret_key,
        region_name="us-east-1",
        config=config,
    )


def prepare(client: Any, keys: dict[str, str], size: int) -> dict[str, Any]:
    """Make the content, upload it gzip- and zstd-compressed; its size, lines and stored sizes."""
    raw = text(size)
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    client.create_bucket(Bucket=BUCKET)
    stored = {}
    for kind, compress in (
        ("gzip", lambda: gzip.compress(raw, 6, mtime=0)),
        ("zstd", lambda: zstd_frames(raw)),
    ):
        body = compress()
        stored[kind] = len(body)
        client.upload_fileobj(io.BytesIO(body), BUCKET, keys[kind])
        del body
    return {"size": len(raw), "lines": lines, "stored": stored}


def rate(n: int, seconds: float) -> float:
    return round(n / seconds / 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="decompressed size of the object (256)")
    parser.add_argument("--hops", type=int, default=20, help="hops of the chain (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four contenders (3)")
    args = parser.parse_args()

    from recurse_lambda.local.juicefs import JuiceFSGateway

    began = time.perf_counter()
    print(f"load at start: {os.getloadavg()} on {os.cpu_count()} CPUs", file=sys.stderr)
    with JuiceFSGateway() as gateway:
        endpoint = gateway.endpoint_url
        keys = {"gzip": "text.gz", "zstd": "text.zst"}
        # Made and uploaded in a child: this parent, which the contenders are forked from, never holds the data.
        made = forked(lambda: prepare(gateway.client(), keys, args.mib * MiB))
        size, lines, stored = made["size"], made["lines"], made["stored"]
        print(
            f"{size / MiB:.0f} MiB decompressed, {lines} lines; gzip (one member) {stored['gzip'] / MiB:.1f} MiB, "
            f"zstd ({-(-size // (16 * MiB))} frames) {stored['zstd'] / MiB:.1f} MiB",
            file=sys.stderr,
        )

        names = ("gzip", "gzip_baseline", "zstd", "zstd_baseline")
        figs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                key = keys[name.split("_")[0]]

                def one(name: str = name, key: str = key) -> dict[str, Any]:
                    got = contender(library_client(endpoint, gateway), name, key)
                    return {"got": list(got)}

                fig = forked(one)
                assert fig["got"] == [lines, size], (name, fig["got"], lines, size)
                figs[name].append(fig)
                print(
                    f"round {r} {name:<14} {rate(size, fig['wall']):7.1f} MB/s  cpu {fig['cpu']:5.2f} s  "
                    f"rss {fig['rss']:6.1f} MiB  load {fig['load']:.1f}",
                    file=sys.stderr,
                )
        chain = forked(lambda: chain_work(library_client(endpoint, gateway), keys["gzip"], size, args.hops))
        assert chain["lines"] == lines, (chain["lines"], lines)

    results: dict[str, Any] = {}
    for name in names:
        results[f"{name}_mb_s"] = rate(size, statistics.median(f["wall"] for f in figs[name]))
    for kind in ("gzip", "zstd"):
        results[f"{kind}_vs_baseline"] = round(results[f"{kind}_mb_s"] / results[f"{kind}_baseline_mb_s"], 2)
        results[f"{kind}_cpu_s"] = round(statistics.median(f["cpu"] for f in figs[kind]), 2)
        results[f"{kind}_baseline_cpu_s"] = round(
            statistics.median(f["cpu"] for f in figs[f"{kind}_baseline"]), 2
        )
    results["chain_work_ratio"] = round(chain["work"] / size, 3)
    results["chain_hops"] = args.hops
    results["chain_s"] = round(chain["wall"], 1)
    results["cursor_bytes"] = chain["cursor_bytes"]
    results["rss_mb"] = round(max(f["rss"] for n in ("gzip", "zstd") for f in figs[n]), 1)
    results["baseline_rss_mb"] = round(max(f["rss"] for n in names if "baseline" in n for f in figs[n]), 1)
    results["chain_rss_mb"] = round(chain["rss"], 1)
    results.update(mib=args.mib, rounds=args.rounds, gateway="juicefs", cpus=os.cpu_count())
    results["load"] = round(os.getloadavg()[0], 1)
    print(f"took {time.perf_counter() - began:.0f} s", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
