"""The decompression engine (s3/_decompress.py) against gzip.open and zstandard, and the cost of resuming.

In memory for now (an in-memory ByteSource; the S3 / JuiceFS gateway run comes with the readers): decompressed
MB/s of ``DecompressedStream`` against ``gzip.open`` and ``zstandard``'s stream reader over the same bytes, and
the chain's total decompression work over a single-member gzip object read in ``--hops`` hops, each resuming
from the cursor (through its JSON form) the previous one stopped at, relative to one pass. Last line: one JSON
object with gzip_mb_s, gzip_baseline_mb_s, zstd_mb_s, zstd_baseline_mb_s, chain_work_ratio, cursor_bytes, rss_mb.

    python benchmarks/compressed.py --mib 256 --hops 20
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import resource
import time

import zstandard

from recurse_lambda.s3._decompress import DecompressedStream


class Mem:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]


def text(size: int) -> bytes:
    rng = random.Random(0)
    words = [rng.randbytes(rng.randrange(2, 9)).hex() for _ in range(5000)]
    line = []
    out, total = [], 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randrange(3, 30))) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def rate(n: int, seconds: float) -> float:
    return round(n / seconds / 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--hops", type=int, default=20)
    args = parser.parse_args()
    raw = text(args.mib * 1024 * 1024)
    gz = gzip.compress(raw, 6)
    zs = zstandard.ZstdCompressor(level=3).compress(raw)
    print(f"{len(raw) / 1e6:.0f} MB decompressed; gzip {len(gz) / 1e6:.1f} MB, zstd {len(zs) / 1e6:.1f} MB")

    results: dict[str, float] = {}
    began = time.perf_counter()
    with gzip.open(io.BytesIO(gz)) as f:
        n = sum(len(b) for b in iter(lambda: f.read(256 * 1024), b""))
    results["gzip_baseline_mb_s"] = rate(n, time.perf_counter() - began)
    began = time.perf_counter()
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zs))
    n = sum(len(b) for b in iter(lambda: reader.read(256 * 1024), b""))
    results["zstd_baseline_mb_s"] = rate(n, time.perf_counter() - began)
    for name, data in (("gzip", gz), ("zstd", zs)):
        began = time.perf_counter()
        with DecompressedStream(Mem(data)) as stream:
            n = sum(len(c.data) for c in stream)
        assert n == len(raw)
        results[f"{name}_mb_s"] = rate(n, time.perf_counter() - began)

    # The chain: each hop reads 1/hops of the content, stops mid-chunk, hands its cursor on as JSON.
    work, cursor, sizes, got = 0, None, [], 0
    for hop in range(args.hops):
        stop = len(raw) * (hop + 1) // args.hops
        with DecompressedStream(Mem(gz), cursor) as stream:
            for chunk in stream:
                if chunk.offset + len(chunk.data) >= stop:
                    got += stop - chunk.offset
                    cursor = chunk.cursor.advance(stop - chunk.offset).to_dict()
                    break
                got += len(chunk.data)
            else:
                cursor = stream.cursor().to_dict()
            work += stream.decompressed
        sizes.append(len(json.dumps(cursor)))
    assert got == len(raw)
    results["chain_work_ratio"] = round(work / len(raw), 3)
    results["cursor_bytes"] = max(sizes)
    results["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
