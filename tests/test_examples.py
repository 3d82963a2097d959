"""The examples as whole chains in the simulator, on moto, against reference results computed another way.

Each chunk of an example is made to cost a fixed amount of virtual time (:func:`paced`), so a chain takes the
same several hops on any machine while its S3 reads are real (moto). Under duplicate deliveries, crashes and
recycled containers with a ledger, a chain either gives exactly the reference result, or it FAILED after
Lambda's retries and its last committed state is exactly the reference over the prefix it had read.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import random
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import zstandard

from examples import csv_aggregate, enrich, line_count
from recurse_lambda import RecursiveHandler, Run
from recurse_lambda.local import ChainReport, FaultPlan, Simulator, VirtualClock

BUCKET = "examples"
TIMEOUT = 0.5  # virtual seconds per invocation
PER_CHUNK = 0.1  # virtual seconds each chunk of an example costs: a few chunks per hop
FAULTS = FaultPlan(duplicate=0.3, crash=0.2, recycle=0.5)
SEEDS = range(8)


# -- the simulated world -----------------------------------------------------------------------------------


@dataclass
class GetObjectLog:
    """Every GetObject sent by the clients the simulator's containers made: parameters and HTTP status."""

    calls: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    clients: int = 0

    def factory(self) -> Any:
        client = boto3.client("s3", region_name="us-east-1")
        client.meta.events.register("provide-client-params.s3.GetObject", self._params)
        client.meta.events.register("after-call.s3.GetObject", self._status)
        self.clients += 1
        return client

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test-params"] = dict(params)

    def _status(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        self.calls.append((context["test-params"], http_response.status_code))

    def of(self, key: str) -> list[tuple[dict[str, Any], int]]:
        return [(params, status) for params, status in self.calls if params["Key"] == key]


@pytest.fixture
def s3(moto_s3: Any) -> Iterator[Any]:
    moto_s3.create_bucket(Bucket=BUCKET)
    yield moto_s3


def paced(
    handler: RecursiveHandler, clock: VirtualClock, before: Callable[[Run], None] | None = None
) -> RecursiveHandler:
    """``handler`` with each chunk costing :data:`PER_CHUNK` virtual seconds; ``before(run)`` starts each hop."""

    def fn(event: Any, state: Any, run: Run) -> Generator[None, None, Any]:
        if before is not None:
            before(run)
        chunks = handler.fn(event, state, run)
        try:
            while True:
                try:
                    next(chunks)
                except StopIteration as stop:
                    return stop.value
                clock.advance(PER_CHUNK)
                yield
        finally:
            chunks.close()

    fn.__qualname__ = handler.fn.__qualname__
    return RecursiveHandler(fn, handler.config)


def simulate(
    handler: RecursiveHandler,
    event: dict[str, Any],
    log: GetObjectLog,
    *,
    faults: FaultPlan | None = None,
    seed: int = 0,
    ledger: str | None = "memory",
    before: Callable[[Run], None] | None = None,
) -> ChainReport:
    clock = VirtualClock()
    sim = Simulator(
        paced(handler, clock, before),
        timeout=TIMEOUT,
        clock=clock,
        ledger=ledger,
        s3_client=log.factory,
        faults=faults,
        seed=seed,
    )
    return sim.run(event)


# -- data and reference results ----------------------------------------------------------------------------


def text_lines(rng: random.Random, n: int) -> bytes:
    """Lines with LF and CRLF, empty lines, multi-byte characters, and no final newline."""
    words = ["alpha", "beta", "γάμμα", "δ", "日本語", "", "x" * 40, "tab\there"]
    parts = []
    for i in range(n):
        line = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 6)))
        parts.append(f"{i} {line}".encode() if rng.random() < 0.9 else b"")
        parts.append(b"\r\n" if rng.random() < 0.3 else b"\n")
    return b"".join(parts[:-1])


def count_lines(data: bytes) -> dict[str, int]:
    """examples/line_count.py's contract, done with bytes.split."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    checksum = 0
    for piece in pieces:
        checksum = (checksum + zlib.crc32(piece.removesuffix(b"\r"))) % 2**64
    return {"lines": len(pieces), "bytes": len(data), "checksum": checksum}


REGIONS = ["north", "south", "Zürich", 'quoted "one"', "with, comma", "two\nlines"]


def csv_rows(rng: random.Random, n: int) -> bytes:
    """A header and rows with quoted commas, quotes and newlines, written by the csv module (CRLF endings)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["id", "region", "amount", "note"])
    for i in range(n):
        note = rng.choice(["", "plain", "a, b", 'say "hi"', "line one\nline two", "ü" * 3])
        writer.writerow([i, rng.choice(REGIONS), f"{rng.uniform(-50, 500):.2f}", note])
        if rng.random() < 0.01:
            out.write("\r\n")  # a blank line: not a row
    return out.getvalue().encode()


def aggregate(data: bytes, group_by: str, column: str) -> dict[str, Any]:
    """examples/csv_aggregate.py's contract, done with csv.DictReader."""
    groups: dict[str, float] = {}
    rows = 0
    for row in csv.DictReader(io.StringIO(data.decode(), newline="")):
        groups[row[group_by]] = groups.get(row[group_by], 0.0) + float(row[column])
        rows += 1
    return {"rows": rows, "groups": groups}


def lookup_table(n: int) -> dict[str, str]:
    categories = ["books", "games", "tools", "food", "café"]
    return {f"sku-{i}": categories[i % len(categories)] for i in range(0, n, 2)}  # odd ids are unknown


def jsonl_records(rng: random.Random, n: int, ids: int) -> bytes:
    lines = []
    for _ in range(n):
        record = {"id": f"sku-{rng.randrange(ids)}", "amount": round(rng.uniform(0, 100), 2), "note": "é"}
        lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.5))
        if rng.random() < 0.01:
            lines.append("   ")  # a blank line: not a record
    return ("\n".join(lines) + "\n").encode()


def join(data: bytes, table: dict[str, str]) -> dict[str, Any]:
    """examples/enrich.py's contract, line by line with json.loads."""
    lines = matched = 0
    totals: dict[str, float] = {}
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        record = json.loads(line)
        lines += 1
        category = table.get(record["id"])
        if category is not None:
            matched += 1
            totals[category] = totals.get(category, 0.0) + float(record["amount"])
    return {"lines": lines, "matched": matched, "unmatched": lines - matched, "totals": totals}


# -- the three examples ------------------------------------------------------------------------------------


@dataclass
class Case:
    handler: RecursiveHandler
    event: dict[str, Any]
    data: bytes
    reference: Callable[[bytes], dict[str, Any]]  # the result over a prefix of the data
    progress: Callable[[dict[str, Any]], dict[str, Any]]  # a committed state, as the result it stands for
    extra: dict[str, Any] = field(default_factory=dict)  # what the whole result adds to the reference

    def expected(self) -> dict[str, Any]:
        return {**self.reference(self.data), **self.extra}


@functools.cache
def data_of(name: str) -> bytes:
    """The generated object of each case, made once per test session (about 10 MB, 20 chunks each)."""
    if name == "text":
        return text_lines(random.Random(1), 400_000)
    if name == "csv":
        return csv_rows(random.Random(2), 200_000)
    return jsonl_records(random.Random(3), 200_000, 2_000)


def line_count_case(s3: Any) -> Case:
    data = data_of("text")
    s3.put_object(Bucket=BUCKET, Key="text.txt", Body=data)
    return Case(
        line_count.handler,
        {"bucket": BUCKET, "key": "text.txt"},
        data,
        count_lines,
        lambda st: {"lines": st["lines"], "bytes": st["offset"], "checksum": st["checksum"]},
    )


def compressed(kind: str, data: bytes) -> bytes:
    """``data`` as one gzip member (resumed at the access points inside it), or as zstd frames of 512 KiB."""
    if kind == "gzip":
        return gzip.compress(data, 6, mtime=0)
    step = 512 * 1024
    cctx = zstandard.ZstdCompressor(level=3)
    return b"".join(cctx.compress(data[i : i + step]) for i in range(0, len(data), step))


def compressed_line_count_case(kind: str) -> Callable[[Any], Case]:
    def case(s3: Any) -> Case:
        data = data_of("text")
        stored = compressed(kind, data)
        s3.put_object(Bucket=BUCKET, Key=f"text.txt.{kind}", Body=stored)
        return Case(
            line_count.handler,
            {"bucket": BUCKET, "key": f"text.txt.{kind}"},
            data,
            count_lines,
            lambda st: {"lines": st["lines"], "bytes": st["offset"], "checksum": st["checksum"]},
            extra={"object_bytes": len(stored)},  # the first range tells the compression and is decompressed
        )

    return case


def csv_case(s3: Any) -> Case:
    data = data_of("csv")
    s3.put_object(Bucket=BUCKET, Key="sales.csv", Body=data)
    return Case(
        csv_aggregate.handler,
        {"bucket": BUCKET, "key": "sales.csv", "group_by": "region", "sum": "amount"},
        data,
        lambda prefix: aggregate(prefix, "region", "amount"),
        lambda st: {"rows": st["rows"], "groups": st["groups"]},
    )


def enrich_case(s3: Any) -> Case:
    table = lookup_table(2_000)
    data = data_of("jsonl")
    s3.put_object(Bucket=BUCKET, Key="lookup.json", Body=json.dumps(table).encode())
    s3.put_object(Bucket=BUCKET, Key="orders.jsonl", Body=data)
    return Case(
        enrich.handler,
        {"bucket": BUCKET, "key": "orders.jsonl", "lookup_bucket": BUCKET, "lookup_key": "lookup.json"},
        data,
        lambda prefix: join(prefix, table),
        lambda st: {
            "lines": st["lines"],
            "matched": st["matched"],
            "unmatched": st["lines"] - st["matched"],
            "totals": st["totals"],
        },
    )


CASES = {
    "line_count": line_count_case,
    "line_count_gzip": compressed_line_count_case("gzip"),
    "line_count_zstd": compressed_line_count_case("zstd"),
    "csv_aggregate": csv_case,
    "enrich": enrich_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_example_gives_the_reference_result_over_several_hops(s3: Any, name: str) -> None:
    case = CASES[name](s3)
    # The examples declare no ledger: run them as they are (stateless mode).
    log = GetObjectLog()
    report = simulate(case.handler, case.event, log, ledger=None).raise_for_status()
    assert report.result == case.expected()
    assert report.hops >= 3, report.timeline()
    # Only the first hop reads the start of the object: later hops resume at their offset or cursor (and
    # csv_aggregate carries the header in its state instead of reading it again).
    ranges = [params["Range"] for params, _ in log.of(case.event["key"])]
    assert len(ranges) >= report.hops - 1  # a last hop may start at the very end: nothing to read
    assert sum(r.startswith("bytes=0-") for r in ranges) == 1, ranges  # only the first hop reads byte 0, once


@pytest.mark.parametrize("name", list(CASES))
def test_example_is_exact_under_faults_with_a_ledger(s3: Any, name: str) -> None:
    case = CASES[name](s3)
    expected = case.expected()
    statuses = []
    crashes = duplicates = containers = 0
    for seed in SEEDS:
        log = GetObjectLog()
        report = simulate(case.handler, case.event, log, faults=FAULTS, seed=seed)
        statuses.append(report.status)
        crashes += report.count("crash")
        duplicates += sum(1 for r in report.rows if r.kind == "duplicate")
        containers += log.clients
        if report.status == "SUCCEEDED":
            assert report.result == expected, f"seed {seed}\n{report.timeline()}"
        else:
            # Lambda gave up on a hop after its retries: the last committed state is an exact prefix.
            assert report.status == "FAILED", f"seed {seed}\n{report.timeline()}"
            assert report.error, report.timeline()
            state = report.last_state
            assert 0 <= state["offset"] <= len(case.data)
            assert case.progress(state) == case.reference(case.data[: state["offset"]])
    assert "SUCCEEDED" in statuses
    # The faults really happened.
    assert crashes > 0 and duplicates > 0 and containers > len(SEEDS)


@pytest.mark.parametrize("name", list(CASES))
def test_a_hop_that_keeps_crashing_fails_the_chain_at_its_last_committed_state(s3: Any, name: str) -> None:
    case = CASES[name](s3)
    # Invocations 3, 4 and 5 are hop 2 and Lambda's two retries of it; each dies before handing off. The on-failure
    # record (6, 7, 8: it waits until the hop is dead) resends hop 2, which dies three times again (9, 10, 11), and
    # the next record fails the chain.
    crashes = FaultPlan(crash_at=tuple(("before_handoff", i) for i in (3, 4, 5, 9, 10, 11)))
    report = simulate(case.handler, case.event, GetObjectLog(), faults=crashes)
    assert report.status == "FAILED", report.timeline()
    assert report.count("crash") == 6 and report.retries == 4
    state = report.last_state
    assert 0 < state["offset"] < len(case.data)  # what hop 1 handed off
    if (
        case.handler is line_count.handler
    ):  # the cursor it resumes from: a decompression cursor when compressed
        assert isinstance(state["cursor"], dict) == bool(case.extra), state["cursor"]
    assert case.progress(state) == case.reference(case.data[: state["offset"]])


def test_enrich_downloads_the_lookup_once_and_warm_hops_get_a_304(s3: Any) -> None:
    case = enrich_case(s3)
    log = GetObjectLog()
    enrich.parse_lookup.cache_clear()
    report = simulate(case.handler, case.event, log, ledger=None).raise_for_status()
    assert report.result == case.reference(case.data)

    invocations = [r for r in report.rows if r.chunks]
    assert len(invocations) >= 3 and {r.container for r in invocations} == {0}  # one warm container
    lookup = [(p, status) for p, status in log.of("lookup.json") if "Range" not in p]
    downloads = [status for p, status in lookup if "IfNoneMatch" not in p]
    revalidations = [status for p, status in lookup if "IfNoneMatch" in p]
    assert downloads == [200]
    assert revalidations == [304] * (len(invocations) - 1)
    assert enrich.parse_lookup.cache_info().misses == 1  # parsed by the first hop only


def test_enrich_fetches_the_lookup_again_in_a_recycled_container(s3: Any) -> None:
    case = enrich_case(s3)
    log = GetObjectLog()
    report = simulate(case.handler, case.event, log, faults=FaultPlan(recycle=1.0), ledger=None)
    assert report.raise_for_status().result == case.reference(case.data)
    lookup = [(p, status) for p, status in log.of("lookup.json") if "Range" not in p]
    invocations = [r for r in report.rows if r.chunks]
    assert len({r.container for r in invocations}) == len(invocations) >= 3  # every hop starts cold
    assert [status for _, status in lookup] == [200] * len(invocations)
    assert not any("IfNoneMatch" in p for p, _ in lookup)


def overwrite_on_hop(s3: Any, hop: int, key: str, body: bytes, etags: list[str]) -> Callable[[Run], None]:
    """A hook that replaces ``key`` when hop ``hop`` starts (once), recording the new ETag."""

    def before(run: Run) -> None:
        if run.hop == hop and len(etags) == 1:
            etags.append(s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"])

    return before


@pytest.mark.parametrize("name", ["line_count", "csv_aggregate"])
def test_overwriting_the_object_mid_chain_fails_it_naming_both_etags(s3: Any, name: str) -> None:
    case = CASES[name](s3)
    key = case.event["key"]
    etags = [s3.head_object(Bucket=BUCKET, Key=key)["ETag"]]
    before = overwrite_on_hop(s3, 1, key, case.data[::-1], etags)
    report = simulate(case.handler, case.event, GetObjectLog(), before=before)
    assert report.status == "FAILED", report.timeline()
    assert len(etags) == 2 and etags[0] != etags[1]
    assert report.error is not None and report.error.startswith("ObjectChangedError")
    assert f"s3://{BUCKET}/{key}" in report.error
    assert etags[0] in report.error and etags[1] in report.error
    assert report.retries == 0  # permanent: no retry can make the old version come back
    # Nothing of the new version got into the committed state.
    state = report.last_state
    assert case.progress(state) == case.reference(case.data[: state["offset"]])


def test_overwriting_the_lookup_mid_chain_fails_the_join(s3: Any) -> None:
    case = enrich_case(s3)
    changed = json.dumps({k: "other" for k in lookup_table(2_000)}).encode()
    etags = [s3.head_object(Bucket=BUCKET, Key="lookup.json")["ETag"]]
    before = overwrite_on_hop(s3, 2, "lookup.json", changed, etags)
    report = simulate(case.handler, case.event, GetObjectLog(), before=before)
    assert report.status == "FAILED", report.timeline()
    assert report.error is not None and report.error.startswith("ObjectChangedError")
    assert f"s3://{BUCKET}/lookup.json" in report.error
    assert etags[0] in report.error and etags[1] in report.error
    state = report.last_state
    assert state["offset"] > 0
    assert case.progress(state) == case.reference(case.data[: state["offset"]])


@pytest.mark.parametrize(
    ("body", "status", "outcome"),
    [
        (b"", "SUCCEEDED", {"rows": 0, "groups": {}}),
        (b"region,amount\r\n", "SUCCEEDED", {"rows": 0, "groups": {}}),
        (
            b"region,amount\n\nx,1.5\n\nx,2\ny,-1e3",
            "SUCCEEDED",
            {"rows": 3, "groups": {"x": 3.5, "y": -1000.0}},
        ),
        (b"place,amount\nx,1\n", "FAILED", "KeyError"),
        (b"region,amount\nx,1\ny,lots\n", "FAILED", "ValueError"),
    ],
)
def test_csv_aggregate_edges(s3: Any, body: bytes, status: str, outcome: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="small.csv", Body=body)
    event = {"bucket": BUCKET, "key": "small.csv", "group_by": "region", "sum": "amount"}
    report = simulate(csv_aggregate.handler, event, GetObjectLog())
    assert report.status == status, report.timeline()
    if status == "SUCCEEDED":
        assert report.result == outcome
    else:
        assert report.error is not None and report.error.startswith(outcome)
        assert report.retries == 0  # bad input is not retried
