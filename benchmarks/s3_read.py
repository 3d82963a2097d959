"""LineReader against boto3's iter_lines and smart_open, on a real S3-compatible server; and its peak memory.

Starts a JuiceFS gateway on 127.0.0.1 (stopped after) and uploads generated text objects to it in parts (never
whole in memory). Throughput: every contender hands every line of the same object to the same loop body
(``n += 1; nbytes += len(line)``), through its own API for lines, in rounds that alternate the contenders
(A B C D E, then rotated), and the medians are quoted:

* ``reader``: ``LineReader(encoding=None)`` with its default prefetch, read as it is meant to be read, a batch
  at a time (``for batch in reader.batches(): for line in batch.records: ...``);
* ``reader_no_prefetch``: the same with ``prefetch=0``;
* ``boto3_iter_lines``: ``for line in get_object()["Body"].iter_lines(chunk_size=65536): ...``;
* ``smart_open``: ``for line in smart_open.open("s3://...", "rb", transport_params={"client": client}): ...``;
* ``reader_iter`` (for reference): ``for line in reader: ...``, the reader's line-at-a-time convenience.

Line and byte counts of every run are checked against the generated object's. Peak memory: each size is read
by the prefetching reader in a fresh subprocess, which reports ``ru_maxrss`` after a baseline taken before the
read (and again with glibc's mmap threshold pinned, to tell allocator fragmentation from the reader's own
buffers). The last line printed is one JSON object; figures in MB there are MiB.

    python benchmarks/s3_read.py [--quick] [--rounds N]
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
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

try:
    import recurse_lambda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recurse_lambda.s3 import LineReader, PinnedSource

MiB = 1024 * 1024
BUCKET = "bench-s3-read"
BLOCK = 4 * MiB  # generated text is a few distinct blocks of whole lines, repeated
PART = 32 * MiB  # multipart upload part size
RSS_RUNS = 3  # fresh processes per object size for the peak RSS


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


def upload(client: Any, key: str, size: int, blocks: list[bytes]) -> tuple[int, int]:
    """Upload a text object of about ``size`` bytes in parts; its (size, lines)."""
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done, total, lines = [], 0, 0
    for number, body in enumerate(parts(blocks, size), 1):
        etag = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body)[
            "ETag"
        ]
        done.append({"ETag": etag, "PartNumber": number})
        total += len(body)
        lines += body.count(b"\n")
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    head = client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == total, (head["ContentLength"], total)
    return total, lines


# -- the contenders: each gives the object's lines, without terminators except smart_open's ----------------


def reader(client: Any, key: str, **opts: Any) -> LineReader:
    return LineReader(PinnedSource(client, BUCKET, key, pins={}), encoding=None, **opts)


def boto3_lines(client: Any, key: str) -> Iterable[bytes]:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    lines: Iterable[bytes] = body.iter_lines(chunk_size=65536)
    return lines


def smart_open_lines(client: Any, key: str) -> Iterable[bytes]:
    import smart_open

    lines: Iterable[bytes] = smart_open.open(
        f"s3://{BUCKET}/{key}", "rb", transport_params={"client": client}
    )
    return lines


def count(lines: Iterable[bytes]) -> tuple[int, int]:
    """The loop body every contender is timed with: every line is touched."""
    n = nbytes = 0
    for line in lines:
        n += 1
        nbytes += len(line)
    close = getattr(lines, "close", None)
    if close is not None:
        close()
    return n, nbytes


def count_batches(line_reader: LineReader) -> tuple[int, int]:
    """:func:`count`'s loop body, over the lines of each batch."""
    n = nbytes = 0
    for batch in line_reader.batches():
        for line in batch.records:
            n += 1
            nbytes += len(line)
    return n, nbytes


def contenders(gateway: Any) -> dict[str, Callable[[str], tuple[int, int]]]:
    """Name -> run(key) -> (lines, content bytes); each with its own client, as a process would have."""
    a, b, c, d, e = (gateway.client() for _ in range(5))

    def with_terminators(n_bytes: tuple[int, int]) -> tuple[int, int]:
        n, nbytes = n_bytes
        return n, nbytes - n  # every line of the generated objects ends with LF

    return {
        "reader": lambda key: count_batches(reader(a, key)),
        "reader_no_prefetch": lambda key: count_batches(reader(b, key, prefetch=0)),
        "boto3_iter_lines": lambda key: count(boto3_lines(c, key)),
        "smart_open": lambda key: with_terminators(count(smart_open_lines(d, key))),
        "reader_iter": lambda key: count(reader(e, key)),
    }


# -- peak memory, in a fresh process -------------------------------------------------------------------------


def rss_child(endpoint: str, key: str, lines: int) -> None:
    """Run in a subprocess: read ``key`` with the prefetching reader; print baseline and peak RSS in KiB.

    Linux carries ``ru_maxrss`` across ``exec`` (the parent's peak would show up here), so the measurement runs
    in a forked child, whose peak starts at its own size: the interpreter with everything imported.
    """
    import boto3
    from botocore.config import Config

    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        source = PinnedSource(client, BUCKET, key, pins={})  # a HEAD: the client and its connection exist
        gc.collect()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n, _ = count_batches(LineReader(source, encoding=None))
        assert n == lines, (n, lines)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, "vm_hwm_kib": vm_hwm()}), flush=True)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def vm_hwm() -> int | None:
    """The kernel's own peak RSS of this process (KiB), as a cross-check of ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss(gateway: Any, key: str, lines: int, **extra_env: str) -> dict[str, float]:
    """Baseline and peak RSS (MiB) of a fresh process reading ``key`` with the reader."""
    here = Path(__file__).resolve()
    env = dict(
        os.environ,
        **extra_env,
        AWS_ACCESS_KEY_ID=gateway.access_key,
        AWS_SECRET_ACCESS_KEY=gateway.secret_key,
        PYTHONPATH=os.pathsep.join(filter(None, [str(here.parent.parent), os.environ.get("PYTHONPATH")])),
    )
    env.pop("AWS_SESSION_TOKEN", None)
    argv = [sys.executable, str(here), "--rss-child", gateway.endpoint_url, key, str(lines)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the RSS subprocess failed:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    hwm = figures["vm_hwm_kib"]
    return {
        "baseline": figures["baseline_kib"] / 1024,
        "peak": figures["peak_kib"] / 1024,
        "vm_hwm": hwm / 1024 if hwm is not None else float("nan"),
    }


def median_peak(runs: list[dict[str, float]]) -> float:
    return statistics.median(fig["peak"] for fig in runs)


# -- main ----------------------------------------------------------------------------------------------------


Obj = tuple[str, int, int]  # key, size, lines


def upload_all(gateway: Any, sizes_mib: dict[str, int]) -> dict[str, Obj]:
    setup = gateway.client()
    setup.create_bucket(Bucket=BUCKET)
    blocks = make_blocks(4)
    objects: dict[str, Obj] = {}
    by_size: dict[int, Obj] = {}
    for name, mib in sizes_mib.items():
        if mib not in by_size:
            t0 = time.perf_counter()
            key = f"text-{mib}mib.txt"
            by_size[mib] = (key, *upload(setup, key, mib * MiB, blocks))
            print(f"uploaded {mib} MiB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        objects[name] = by_size[mib]
    return objects


def throughput(gateway: Any, obj: Obj, warm_up: Obj, rounds: int) -> dict[str, list[float]]:
    """Seconds per run of each contender over ``obj``, in rounds whose order rotates; counts are checked."""
    runs = contenders(gateway)
    for name, run in runs.items():  # untimed: open connections, warm code paths
        key, size, lines = warm_up
        assert run(key) == (lines, size - lines), name
    key, size, lines = obj
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            gc.collect()
            t0 = time.perf_counter()
            got = runs[name](key)
            times[name].append(time.perf_counter() - t0)
            assert got == (lines, size - lines), (name, got, (lines, size - lines))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 64 MiB object, 256 MiB for RSS, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--rss-child", nargs=3, metavar=("ENDPOINT", "KEY", "LINES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        endpoint, key, lines = args.rss_child
        rss_child(endpoint, key, int(lines))
        return

    from recurse_lambda.local.juicefs import JuiceFSGateway

    sizes = (
        {"speed": 64, "small": 64, "large": 256} if args.quick else {"speed": 256, "small": 64, "large": 1024}
    )
    rounds = args.rounds or (3 if args.quick else 7)
    started = time.perf_counter()
    with JuiceFSGateway() as gateway:
        objects = upload_all(gateway, sizes)
        times = throughput(gateway, objects["speed"], objects["small"], rounds)
        # Peak RSS depends on when the prefetch threads' buffers are freed: the median of a few fresh processes.
        samples = {
            name: [peak_rss(gateway, objects[name][0], objects[name][2]) for _ in range(RSS_RUNS)]
            for name in ("small", "large")
        }
        rss = {
            name: min(runs, key=lambda fig: abs(fig["peak"] - median_peak(runs)))
            for name, runs in samples.items()
        }
        # A diagnosis, not a figure: glibc raises its mmap threshold after the first large free, so later range
        # buffers come from per-thread heaps, whose fragmentation grows with the read; pinning it shows that.
        pinned = {
            name: peak_rss(gateway, objects[name][0], objects[name][2], MALLOC_MMAP_THRESHOLD_=str(MiB))
            for name in ("small", "large")
        }

    _, size, lines = objects["speed"]
    median = {name: statistics.median(runs) for name, runs in times.items()}
    mb_s = {name: size / t / 1e6 for name, t in median.items()}
    print(f"object: {size / MiB:.0f} MiB, {lines} lines; {rounds} rounds, contenders rotated; medians")
    print(
        f"{'contender':<20} {'median s':>9} {'MB/s':>8} {'Mlines/s':>9} {'vs boto3':>9} {'vs smart_open':>14}"
    )
    for name, t in median.items():
        print(
            f"{name:<20} {t:>9.3f} {mb_s[name]:>8.1f} {lines / t / 1e6:>9.2f} "
            f"{median['boto3_iter_lines'] / t:>8.2f}x {median['smart_open'] / t:>13.2f}x"
        )
    for name, runs in times.items():
        print(f"  {name} s: " + " ".join(f"{x:.3f}" for x in runs))
    for name in ("small", "large"):
        fig = rss[name]
        print(
            f"peak RSS reading {sizes[name]} MiB (median of {RSS_RUNS}): {fig['peak']:.1f} MiB (baseline "
            f"{fig['baseline']:.1f} MiB, +{fig['peak'] - fig['baseline']:.1f} MiB; VmHWM {fig['vm_hwm']:.1f} MiB); "
            "all: " + " ".join(f"{run['peak']:.1f}" for run in samples[name])
        )
    print(
        f"  diagnosis, with MALLOC_MMAP_THRESHOLD_={MiB} (no dynamic threshold): peak RSS "
        f"{pinned['small']['peak']:.1f} MiB and {pinned['large']['peak']:.1f} MiB "
        f"({pinned['large']['peak'] - pinned['small']['peak']:+.1f} MiB)"
    )
    ratio_boto3 = median["boto3_iter_lines"] / median["reader"]
    ratio_smart = median["smart_open"] / median["reader"]
    growth = rss["large"]["peak"] - rss["small"]["peak"]
    print(
        f"targets: reader/boto3 {ratio_boto3:.2f}x (>= 1.0: {'met' if ratio_boto3 >= 1.0 else 'MISSED'}), "
        f"reader/smart_open {ratio_smart:.2f}x (>= 2.0: {'met' if ratio_smart >= 2.0 else 'MISSED'}), "
        f"peak RSS {sizes['small']} MiB -> {sizes['large']} MiB object {growth:+.1f} MiB "
        f"(<= 16 MiB: {'met' if growth <= 16 else 'MISSED'})"
    )
    print(f"total time {time.perf_counter() - started:.0f} s", file=sys.stderr)
    result = {
        "reader_mb_s": round(mb_s["reader"], 1),
        "reader_no_prefetch_mb_s": round(mb_s["reader_no_prefetch"], 1),
        "boto3_iter_lines_mb_s": round(mb_s["boto3_iter_lines"], 1),
        "smart_open_mb_s": round(mb_s["smart_open"], 1),
        "rss_64mib_mb": round(rss["small"]["peak"], 1),
        "rss_1gib_mb": round(rss["large"]["peak"], 1),
        "reader_iter_mb_s": round(mb_s["reader_iter"], 1),
        "rss_64mib_fixed_mmap_threshold_mb": round(pinned["small"]["peak"], 1),
        "rss_1gib_fixed_mmap_threshold_mb": round(pinned["large"]["peak"], 1),
        "reader_vs_boto3": round(ratio_boto3, 3),
        "reader_vs_smart_open": round(ratio_smart, 3),
        "object_mib": sizes["speed"],
        "rss_object_mib": [sizes["small"], sizes["large"]],
        "rounds": rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
