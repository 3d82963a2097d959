"""Reading the lines of an S3 object: the line reader against boto3, s3transfer and smart_open, at S3's latency.

Starts a JuiceFS gateway on 127.0.0.1 (stopped after), uploads a generated text object of ~100-byte lines to it
in parts, and starts two proxies in front of it (``benchmarks/proxy.py``, each in its own process): one shaping
like S3 seen from Lambda (``--latency-ms`` to first byte per request, ``--mb-s`` per connection; 30 ms and 80 MB/s
by default), and one that only relays (to state the proxy's own ceiling). The contenders, each handing every line
to the same loop body (``n += 1; nbytes += len(line)``):

* ``reader``: ``LineReader(encoding=None)`` with its defaults, a batch at a time (``for line in batch.records``);
* ``reader_old``: the same over the fetcher the reader had before its concurrency adapted (2 ranges of 8 MiB
  fetched ahead, a fresh one each time), kept here only as the baseline;
* ``boto3_iter_lines``: ``get_object()["Body"].iter_lines(chunk_size=65536)``;
* ``s3transfer``: ``download_fileobj`` (10 threads, 8 MiB parts) into a sink that splits lines as they arrive;
* ``smart_open``: ``smart_open.open("s3://...", "rb")``, line by line;
* ``raw``: the ceiling: 10 threads of 8 MiB ranged GETs whose bytes are dropped;
* ``raw_busy`` (only with ``--only``): the same beside a thread that splits lines all along, holding the
  interpreter lock as a parser does: what sharing that lock costs the fetching threads.

Every run is a fresh forked process (one client, created with boto3's defaults, as in a Lambda function), which
reports wall time, CPU time (user + system) and peak RSS (``ru_maxrss``, the absolute peak of the process).
Rounds alternate the two networks, through the shaping proxy and plain loopback (A B A B), with the contenders
rotated in each; medians are quoted, with the load average of the machine (``os.getloadavg``) during the runs.
Line and byte counts of every run are checked. The last line printed is one JSON object (sizes in MiB, rates in
MB/s = 10^6 bytes/s, CPU in s per GB = 10^9 bytes).

    python benchmarks/s3_read.py [--quick] [--rounds N] [--size-mib N] [--latency-ms 30] [--mb-s 80] [--pool N]
        [--only CONTENDER ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
try:
    import recurse_lambda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from proxy import ProxyProcess  # noqa: E402

from recurse_lambda.s3 import LineReader, PinnedSource  # noqa: E402
from recurse_lambda.s3._prefetch import ByteSource, read_full  # noqa: E402

MiB = 1024 * 1024
BUCKET = "bench-s3-read"
BLOCK = 4 * MiB  # generated text is a few distinct blocks of whole lines, repeated
PART = 32 * MiB  # multipart upload part size
DEPTHS: list[int] = []  # the adaptive depth the reader reached, in a child
WAITED: list[float] = []  # the seconds the reader's parsing thread waited for ranges, in a child
CONTENDERS = ("reader", "reader_old", "boto3_iter_lines", "s3transfer", "smart_open", "raw")
EXTRA = ("raw_busy",)  # run only when named with --only


# -- data ----------------------------------------------------------------------------------------------------


def make_blocks(count: int, seed: int = 7) -> list[bytes]:
    """``count`` blocks of about BLOCK bytes of ASCII lines (0 to ~300 bytes, ~100 on average), each ending in LF."""
    rng = random.Random(seed)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789", k=rng.randint(1, 12))) for _ in range(5000)
    ]
    blocks = []
    for _ in range(count):
        lines, size = [], 0
        while size < BLOCK:
            line = b" ".join(rng.choices(words, k=rng.choice([0, 2, 8, 16, 24, 40])))
            lines.append(line)
            size += len(line) + 1
        blocks.append(b"\n".join(lines) + b"\n")
    return blocks


def parts(blocks: list[bytes], size: int) -> Iterator[bytes]:
    """Parts of about PART bytes whose concatenation is at least ``size`` bytes of whole blocks."""
    total, i, buf = 0, 0, []
    while total < size:
        buf.append(blocks[i % len(blocks)])
        total += len(buf[-1])
        i += 1
        if sum(map(len, buf)) >= PART:
            yield b"".join(buf)
            buf = []
    if buf:
        yield b"".join(buf)


def upload(client: Any, key: str, size: int) -> tuple[int, int]:
    """Upload a text object of about ``size`` bytes in parts; its (size, lines)."""
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done, total, lines = [], 0, 0
    for number, body in enumerate(parts(make_blocks(4), size), 1):
        etag = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body)[
            "ETag"
        ]
        done.append({"ETag": etag, "PartNumber": number})
        total += len(body)
        lines += body.count(b"\n")
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    return total, lines


# -- the baseline: the reader's fetcher before its concurrency adapted ---------------------------------------


class OldRangeFetcher:
    """The previous ``RangeFetcher`` (fixed ``prefetch``, one fresh range per GET), for comparison only."""

    def __init__(self, source: ByteSource, start: int, *, range_size: int, prefetch: int) -> None:
        self._source = source
        self._next = start
        self._range_size = range_size
        self._prefetch = prefetch
        self._size = source.size
        self._pending: deque[tuple[int, Future[bytes]]] = deque()
        self._executor = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="old-prefetch")

    def __iter__(self) -> OldRangeFetcher:
        return self

    def __next__(self) -> tuple[int, bytes]:
        while len(self._pending) <= self._prefetch and self._next < self._size:
            offset, self._next = self._next, min(self._next + self._range_size, self._size)
            self._pending.append((offset, self._executor.submit(read_full, self._source, offset, self._next)))
        if not self._pending:
            self.close()
            raise StopIteration
        offset, future = self._pending.popleft()
        return offset, future.result()

    def close(self) -> None:
        for _, future in self._pending:
            future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)


class OldLineReader(LineReader):
    def _new_fetcher(self) -> Any:
        return OldRangeFetcher(self.source, self.start, range_size=8 * MiB, prefetch=2)


# -- the contenders: each hands every line to the same loop body --------------------------------------------


def count(lines: Iterable[bytes]) -> tuple[int, int]:
    n = nbytes = 0
    for line in lines:
        n += 1
        nbytes += len(line)
    return n, nbytes


def count_batches(reader: LineReader) -> tuple[int, int]:
    n = nbytes = 0
    for batch in reader.batches():
        for line in batch.records:
            n += 1
            nbytes += len(line)
    return n, nbytes


class LineSink:
    """A write-only file for ``download_fileobj``: lines split as the bytes arrive, in order."""

    def __init__(self) -> None:
        self.n = self.nbytes = 0
        self._carry = b""

    def write(self, data: bytes) -> int:
        lines = data.split(b"\n")
        if self._carry:
            lines[0] = self._carry + lines[0]
        self._carry = lines.pop()
        n = nbytes = 0
        for line in lines:
            n += 1
            nbytes += len(line)
        self.n += n
        self.nbytes += nbytes
        return len(data)


def run_contender(name: str, client: Any, key: str) -> tuple[int, int]:
    """(lines, content bytes without terminators) as ``name`` read them."""
    if name == "reader":
        reader = LineReader(PinnedSource(client, BUCKET, key, pins={}), encoding=None)
        got = count_batches(reader)
        fetcher = reader._fetcher
        DEPTHS.append(getattr(fetcher, "depth", -1))
        WAITED.append(getattr(fetcher, "waited", 0.0))
        return got
    if name == "reader_old":
        return count_batches(OldLineReader(PinnedSource(client, BUCKET, key, pins={}), encoding=None))
    if name == "boto3_iter_lines":
        return count(client.get_object(Bucket=BUCKET, Key=key)["Body"].iter_lines(chunk_size=65536))
    if name == "s3transfer":
        sink = LineSink()
        client.download_fileobj(BUCKET, key, sink)
        return sink.n, sink.nbytes
    if name == "smart_open":
        import smart_open

        with smart_open.open(f"s3://{BUCKET}/{key}", "rb", transport_params={"client": client}) as lines:
            n, nbytes = count(lines)
        return n, nbytes - n  # smart_open keeps the terminators
    if name == "raw_busy":
        stop = threading.Event()

        def split_lines() -> None:
            block = make_blocks(1)[0]
            while not stop.is_set():
                block.split(b"\n")

        busy = threading.Thread(target=split_lines)
        busy.start()
        try:
            return run_contender("raw", client, key)
        finally:
            stop.set()
            busy.join()
    if name == "raw":
        size = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]

        def get(at: int) -> int:
            body = client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={at}-{at + 8 * MiB - 1}")["Body"]
            return len(body.read())

        with ThreadPoolExecutor(10) as pool:
            got = sum(pool.map(get, range(0, size, 8 * MiB)))
        assert got == size
        return -1, -1
    raise ValueError(name)


# -- one run, in a fresh forked process ----------------------------------------------------------------------


def child(endpoint: str, name: str, key: str) -> None:
    """Print wall s, CPU s, peak RSS and the load for one run of ``name`` (forked: ``ru_maxrss`` is its own)."""
    import boto3
    from botocore.config import Config

    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    try:
        from recurse_lambda.aws.clients import client_config

        # The library's own client configuration (S3: a pool of S3_POOL = 22, as in production), unless --pool.
        pool = int(os.environ.get("S3_READ_POOL") or 0)
        config = client_config("s3").merge(
            Config(s3={"addressing_style": "path"}, **({"max_pool_connections": pool} if pool else {}))
        )
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)
        client.head_object(Bucket=BUCKET, Key=key)  # the client and one connection exist
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        got = run_contender(name, client, key)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        print(
            json.dumps(
                {
                    "wall": wall,
                    "cpu": cpu,
                    "rss": after.ru_maxrss / 1024,
                    "got": got,
                    "load": os.getloadavg()[0],
                    "depth": DEPTHS[-1] if DEPTHS else None,
                    "waited": WAITED[-1] / wall if WAITED else None,
                    "minflt": after.ru_minflt - before.ru_minflt,
                }
            ),
            flush=True,
        )
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def run(gateway: Any, endpoint: str, name: str, key: str, pool: int = 0) -> dict[str, Any]:
    env = dict(
        os.environ,
        S3_READ_POOL=str(pool),
        AWS_ACCESS_KEY_ID=gateway.access_key,
        AWS_SECRET_ACCESS_KEY=gateway.secret_key,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    )
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", None)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", endpoint, name, key]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} at {endpoint} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 64 MiB object, 2 rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each network (3)")
    parser.add_argument("--size-mib", type=int, default=None, help="object size (512)")
    parser.add_argument(
        "--latency-ms", type=float, default=30.0, help="proxy: to first byte per request (30)"
    )
    parser.add_argument("--mb-s", type=float, default=80.0, help="proxy: MB/s per connection (80)")
    parser.add_argument(
        "--pool", type=int, default=0, help="max_pool_connections of the clients (the library's: 22)"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="a subset of the contenders, or raw_busy (not run by default)"
    )
    parser.add_argument("--child", nargs=3, metavar=("ENDPOINT", "NAME", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from recurse_lambda.local.juicefs import JuiceFSGateway

    size_mib = args.size_mib or (64 if args.quick else 512)
    rounds = args.rounds or (2 if args.quick else 3)
    names = tuple(args.only) if args.only else CONTENDERS
    unknown = set(names) - set(CONTENDERS) - set(EXTRA)
    if unknown:
        parser.error(f"unknown contenders: {sorted(unknown)} (known: {CONTENDERS + EXTRA})")
    started = time.perf_counter()
    print(f"load at start: {os.getloadavg()} on {os.cpu_count()} CPUs", file=sys.stderr)
    with JuiceFSGateway() as gateway:
        setup = gateway.client()
        setup.create_bucket(Bucket=BUCKET)
        key = f"text-{size_mib}mib.txt"
        size, lines = upload(setup, key, size_mib * MiB)
        url = urlparse(gateway.endpoint_url)
        assert url.hostname is not None and url.port is not None
        shaped = ProxyProcess(
            url.hostname, url.port, latency=args.latency_ms / 1000, bandwidth=args.mb_s * 1e6
        )
        relay = ProxyProcess(url.hostname, url.port)
        with shaped, relay:
            networks = {"proxy": shaped.endpoint_url, "loopback": gateway.endpoint_url}
            results: dict[str, dict[str, list[dict[str, Any]]]] = {
                n: {c: [] for c in names} for n in networks
            }
            ceiling: dict[str, list[dict[str, Any]]] = {"relay": [], "loopback": []}
            for r in range(rounds):
                for network, endpoint in networks.items():  # A B A B
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        fig = run(gateway, endpoint, name, key, args.pool)
                        expect = (-1, -1) if name.startswith("raw") else (lines, size - lines)
                        assert tuple(fig["got"]) == expect, (network, name, fig["got"], expect)
                        results[network][name].append(fig)
                        print(
                            f"round {r} {network:<8} {name:<17} {size / fig['wall'] / 1e6:7.1f} MB/s "
                            f"cpu {fig['cpu'] / size * 1e9:5.2f} s/GB rss {fig['rss']:6.1f} MiB "
                            f"faults {fig['minflt'] / size * 1e9 / 1000:6.0f}k/GB load {fig['load']:.1f}"
                            + (f" depth {fig['depth']}" if fig.get("depth") is not None else "")
                            + (f" waited {fig['waited']:.0%}" if fig.get("waited") is not None else ""),
                            file=sys.stderr,
                        )
                # The proxy's own ceiling: raw bytes through a relay that does not shape, against loopback.
                ceiling["relay"].append(run(gateway, relay.endpoint_url, "raw", key))
                ceiling["loopback"].append(run(gateway, gateway.endpoint_url, "raw", key))

    def med(figs: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "mb_s": round(size / statistics.median(f["wall"] for f in figs) / 1e6, 1),
            "cpu_s_per_gb": round(statistics.median(f["cpu"] for f in figs) / size * 1e9, 2),
            "rss_mib": round(statistics.median(f["rss"] for f in figs), 1),
            "load": round(statistics.median(f["load"] for f in figs), 1),
            **({"depth": [f["depth"] for f in figs]} if figs and figs[0].get("depth") is not None else {}),
        }

    table = {network: {name: med(figs) for name, figs in by.items()} for network, by in results.items()}
    relay_mb_s = {k: med(v)["mb_s"] for k, v in ceiling.items()}
    print(
        f"object: {size / MiB:.0f} MiB, {lines} lines; {rounds} rounds (A B A B), contenders rotated; medians"
    )
    for network, by in table.items():
        label = (
            f"through the proxy ({args.latency_ms:g} ms to first byte, {args.mb_s:g} MB/s per connection)"
            if network == "proxy"
            else "plain loopback (no latency, no bandwidth limit)"
        )
        print(label)
        print(f"  {'contender':<17} {'MB/s':>8} {'CPU s/GB':>9} {'peak RSS MiB':>13} {'load':>5}")
        for name, fig in by.items():
            print(
                f"  {name:<17} {fig['mb_s']:>8.1f} {fig['cpu_s_per_gb']:>9.2f} {fig['rss_mib']:>13.1f} "
                f"{fig['load']:>5.1f}"
            )
    print(
        f"proxy's own ceiling (raw, 10 connections, no shaping): {relay_mb_s['relay']:.0f} MB/s, against "
        f"{relay_mb_s['loopback']:.0f} MB/s without the proxy"
    )
    result: dict[str, Any] = {
        "object_mib": round(size / MiB),
        "rounds": rounds,
        "latency_ms": args.latency_ms,
        "mb_s_per_connection": args.mb_s,
        "proxy_ceiling_mb_s": relay_mb_s["relay"],
        "loopback_raw_mb_s": relay_mb_s["loopback"],
        "cpus": os.cpu_count(),
        **table,
    }
    proxy_figs, loop_figs = table["proxy"], table["loopback"]
    if {"reader", "boto3_iter_lines", "s3transfer"} <= set(names):
        reader, boto3_, s3t = proxy_figs["reader"], proxy_figs["boto3_iter_lines"], proxy_figs["s3transfer"]
        targets = {
            "proxy_reader_vs_boto3": round(reader["mb_s"] / boto3_["mb_s"], 2),
            "proxy_reader_vs_s3transfer": round(reader["mb_s"] / s3t["mb_s"], 2),
            "proxy_rss_vs_s3transfer": round(reader["rss_mib"] / s3t["rss_mib"], 2),
        }
        if "reader_old" in names:
            targets["loopback_reader_vs_old"] = round(
                loop_figs["reader"]["mb_s"] / loop_figs["reader_old"]["mb_s"], 2
            )
            targets["loopback_cpu_vs_old"] = round(
                loop_figs["reader"]["cpu_s_per_gb"] / loop_figs["reader_old"]["cpu_s_per_gb"], 2
            )
        bars = {
            "proxy_reader_vs_boto3": (4.0, True),
            "proxy_reader_vs_s3transfer": (1.1, True),
            "proxy_rss_vs_s3transfer": (1.15, False),
            "loopback_reader_vs_old": (1.0, True),
            "loopback_cpu_vs_old": (1.0, False),
        }
        verdicts = []
        for label, value in targets.items():
            bar, at_least = bars[label]
            met = (
                value >= bar
                if at_least
                else value < bar or (label.endswith("rss_vs_s3transfer") and value <= bar)
            )
            verdicts.append(
                f"{label} {value:.2f} ({'>=' if at_least else '<='} {bar}: {'met' if met else 'MISSED'})"
            )
        print("targets: " + "; ".join(verdicts))
        result["targets"] = targets
    print(f"total time {time.perf_counter() - started:.0f} s; load at end {os.getloadavg()}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
