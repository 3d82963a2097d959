"""The readers and PinnedSource against a real S3-compatible server (the JuiceFS gateway).

A chain of many hops, each a new PinnedSource and reader resuming at the last ``batch.end`` with small odd
ranges and prefetch, must yield exactly the records of one pass over the object, and those must be the records
the standard library finds in the same bytes. ETag pins see the server's real 412s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from recurse_lambda.errors import BucketNotFoundError, ObjectChangedError, ObjectNotFoundError
from recurse_lambda.s3 import CsvReader, JsonLinesReader, LineReader, PinnedSource

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
RANGE = 64 * 1024 + 3  # odd, so ranges cut lines, CRLFs and multi-byte characters anywhere

Reader = Callable[[PinnedSource, int, Any], Any]  # (source, start, the state carried) -> a reader


# -- data and what the standard library reads in it ---------------------------------------------------------


def text(rng: random.Random, size: int) -> bytes:
    """Lines with LF and CRLF, empty lines, 2-4 byte characters, a few lines longer than a range, and no final
    newline."""
    words = ["a", "bc", "déf", "γάμμα", "日本語", "🙂", "x" * 30]
    parts: list[bytes] = []
    total = 0
    while total < size:
        n = 20_000 if rng.random() < 0.0001 else rng.choice([0, 1, 3, 8, 20])
        line = " ".join(rng.choice(words) for _ in range(n)) + ("\r\n" if rng.random() < 0.3 else "\n")
        parts.append(line.encode())
        total += len(parts[-1])
    return b"".join(parts).rstrip(b"\r\n")


def csv_data(rng: random.Random, rows: int) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["id", "name", "note"])
    for i in range(rows):
        note = rng.choice(["", "plain", "a, b", 'say "hi"', "one\nтwo\r\nthree", "é" * rng.randrange(1, 50)])
        writer.writerow([i, rng.choice(["Zoë", "Ωmega", "plain"]), note])
    return out.getvalue().encode()


def jsonl_data(rng: random.Random, records: int) -> tuple[bytes, int]:
    """JSON Lines with blank and malformed lines; also how many lines are malformed."""
    lines, bad = [], 0
    for i in range(records):
        lines.append(json.dumps({"i": i, "s": rng.choice(["x", "ü" * 10, "🙂"])}, ensure_ascii=False))
        if rng.random() < 0.01:
            lines.append(rng.choice(["", "  ", "{broken", '{"a": }']))
            bad += lines[-1].strip() != ""
    return "\n".join(lines).encode() + b"\n", bad


def stdlib_lines(data: bytes) -> list[str]:
    pieces = data.decode().split("\n")
    if pieces[-1] == "":
        pieces.pop()
    return [p.removesuffix("\r") for p in pieces]


def stdlib_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def stdlib_json(data: bytes) -> list[Any]:
    records = []
    for line in data.split(b"\n"):
        if line.strip():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


# -- a chain of hops, by hand -------------------------------------------------------------------------------


def in_hops(client: Any, bucket: str, key: str, make: Reader, *, seed: int) -> tuple[list[Any], int]:
    """Read the object as a chain would: each hop a new source (sharing the pins) and a new reader at the
    cursor, stopping after a random number of batches. Returns the records and the number of hops."""
    rng = random.Random(seed)
    pins: dict[str, dict[str, Any]] = {}
    records: list[Any] = []
    carried: dict[str, Any] = {}
    offset, hops = 0, 0
    while True:
        hops += 1
        source = PinnedSource(client, bucket, key, pins=pins)
        reader = make(source, offset, carried)
        batches = reader.batches(rng.choice([1, 50, 300, 1000]))
        stop_after = rng.randrange(1, 5)
        done = True
        for n, batch in enumerate(batches, 1):
            records.extend(batch.records)
            offset = batch.end
            if n == stop_after:
                done = False
                break
        batches.close()
        carried["state"] = reader
        if done or offset == source.size:
            return records, hops


def one_pass(client: Any, bucket: str, key: str, make: Reader) -> list[Any]:
    source = PinnedSource(client, bucket, key, pins={})
    return [record for batch in make(source, 0, {}).batches() for record in batch]


def put(client: Any, bucket: str, key: str, body: bytes) -> str:
    etag: str = client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]
    return etag


def test_lines_in_many_hops_equal_one_pass(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    data = text(random.Random(1), 3 * MiB)
    put(client, juicefs_bucket, "text.txt", data)

    def make(source: PinnedSource, start: int, _: Any) -> LineReader:
        return LineReader(source, start, range_size=RANGE, encoding="utf-8", prefetch=2)

    expected = stdlib_lines(data)
    assert one_pass(juicefs_s3.client(), juicefs_bucket, "text.txt", make) == expected
    for seed in range(3):
        records, hops = in_hops(client, juicefs_bucket, "text.txt", make, seed=seed)
        assert hops > 10, hops
        assert records == expected
    assert max(map(len, expected)) > RANGE  # a line longer than a range


def test_byte_lines_without_prefetch_in_many_hops(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    data = text(random.Random(2), 2 * MiB)
    put(client, juicefs_bucket, "bytes.txt", data)

    def make(source: PinnedSource, start: int, _: Any) -> LineReader:
        return LineReader(source, start, range_size=RANGE, encoding=None, prefetch=0)

    records, hops = in_hops(client, juicefs_bucket, "bytes.txt", make, seed=7)
    assert hops > 10, hops
    assert [r.decode() for r in records] == stdlib_lines(data)


def test_csv_in_many_hops_carries_the_header(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    data = csv_data(random.Random(3), 80_000)
    assert len(data) > 2 * MiB
    put(client, juicefs_bucket, "rows.csv", data)
    headers: list[list[str] | None] = []

    def make(source: PinnedSource, start: int, carried: dict[str, Any]) -> CsvReader:
        previous = carried.get("state")
        header = previous.header if previous is not None else None
        headers.append(header)
        return CsvReader(source, start, header=header, range_size=RANGE, prefetch=1)

    expected = stdlib_rows(data)
    records, hops = in_hops(client, juicefs_bucket, "rows.csv", make, seed=4)
    assert hops > 10, hops
    assert records == expected
    assert headers[0] is None and all(h == ["id", "name", "note"] for h in headers[1:])
    assert one_pass(client, juicefs_bucket, "rows.csv", make) == expected


def test_jsonl_in_many_hops_skips_each_bad_line_once(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    data, bad = jsonl_data(random.Random(5), 120_000)
    assert bad > 100 and len(data) > 2 * MiB
    put(client, juicefs_bucket, "records.jsonl", data)
    readers: list[JsonLinesReader] = []

    def make(source: PinnedSource, start: int, _: Any) -> JsonLinesReader:
        readers.append(JsonLinesReader(source, start, on_error="skip", range_size=RANGE, prefetch=3))
        return readers[-1]

    records, hops = in_hops(client, juicefs_bucket, "records.jsonl", make, seed=6)
    assert hops > 10, hops
    assert records == stdlib_json(data)
    skipped = [offset for reader in readers for offset, _ in reader.skipped]
    assert len(skipped) == len(set(skipped)) == bad
    assert all(data.startswith((b"{broken", b'{"a": }'), offset) for offset in skipped)


def test_overwrite_between_hops_is_a_412_naming_both_etags(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    data = text(random.Random(8), MiB)
    old = put(client, juicefs_bucket, "moving.txt", data)
    pins: dict[str, dict[str, Any]] = {}
    first = LineReader(PinnedSource(client, juicefs_bucket, "moving.txt", pins=pins), range_size=RANGE)
    batch = next(first.batches(100))
    first.close()
    new = put(client, juicefs_bucket, "moving.txt", data.replace(b"a", b"b"))
    assert old != new

    later = LineReader(
        PinnedSource(client, juicefs_bucket, "moving.txt", pins=pins), batch.end, range_size=RANGE
    )
    with pytest.raises(ObjectChangedError) as info:
        next(later.batches(100))
    assert (info.value.bucket, info.value.key) == (juicefs_bucket, "moving.txt")
    assert (info.value.expected_etag, info.value.current_etag) == (old, new)
    assert old in str(info.value) and new in str(info.value)


def read_while_replacing(client: Any, bucket: str, key: str, replacement: bytes) -> tuple[str, int, int]:
    """Read ``key`` with prefetch, replacing it after the first batch; the old ETag and lines seen and total."""
    data = text(random.Random(9), 2 * MiB)
    old = put(client, bucket, key, data)
    reader = LineReader(PinnedSource(client, bucket, key, pins={}), range_size=RANGE, prefetch=2)
    seen = 0
    for batch in reader.batches(1000):
        seen += len(batch)
        if seen == 1000:
            put(client, bucket, key, replacement)
    return old, seen, len(stdlib_lines(data))


def test_overwrite_during_a_prefetching_read(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    with pytest.raises(ObjectChangedError) as info:
        read_while_replacing(client, juicefs_bucket, "racing.txt", b"replaced, and longer\n" * 200_000)
    assert info.value.current_etag == client.head_object(Bucket=juicefs_bucket, Key="racing.txt")["ETag"]
    assert info.value.expected_etag not in (None, info.value.current_etag)


def test_overwrite_with_a_shorter_object_during_a_read(juicefs_s3: Any, juicefs_bucket: str) -> None:
    # The gateway answers 416 InvalidRange for a range past the new end before it checks IfMatch.
    client = juicefs_s3.client()
    with pytest.raises(ObjectChangedError):
        read_while_replacing(client, juicefs_bucket, "shrinking.txt", b"replaced\n" * 10)


def test_missing_key_bucket_and_a_key_deleted_after_pinning(juicefs_s3: Any, juicefs_bucket: str) -> None:
    client = juicefs_s3.client()
    with pytest.raises(ObjectNotFoundError, match=f"s3://{juicefs_bucket}/nope.txt"):
        PinnedSource(client, juicefs_bucket, "nope.txt", pins={})
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        PinnedSource(client, "no-such-bucket-here", "any.txt", pins={})

    put(client, juicefs_bucket, "gone.txt", b"one\ntwo\n")
    pins: dict[str, dict[str, Any]] = {}
    PinnedSource(client, juicefs_bucket, "gone.txt", pins=pins)
    client.delete_object(Bucket=juicefs_bucket, Key="gone.txt")
    source = PinnedSource(client, juicefs_bucket, "gone.txt", pins=pins)  # a later hop trusts the pin
    with pytest.raises(ObjectNotFoundError, match=r"gone\.txt"):
        source.read(0, 4)
