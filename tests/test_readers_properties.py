"""Property tests: reading in many hops, resuming at ``batch.end``, yields exactly a one-pass read.

Each example picks contents, a range size, batch sizes, how many batches each hop takes before it stops, and
whether the source answers in short pieces; a fresh reader resumes every hop from the last ``batch.end`` (with
the CSV header carried in the "state"). The result is compared with a simple reference over the whole bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recurse_lambda.s3._csv import CsvReader
from recurse_lambda.s3._jsonl import JsonLinesReader
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._readers import Batch, ChunkReader

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Source:
    """An in-memory object; with ``most`` it answers at most that many bytes per read (adversarial)."""

    def __init__(self, data: bytes, most: int | None = None) -> None:
        self.data = data
        self.most = most
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        assert 0 <= start < end <= len(self.data), (start, end)
        self.reads.append((start, end))
        if self.most is not None:
            end = min(end, start + self.most)
        return self.data[start:end]


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    """How to read: range size, batch sizing, batches per hop, prefetch depth, short reads."""
    records = draw(st.none() | st.integers(1, 6))
    max_bytes = draw(st.none() | st.integers(1, 40))
    return {
        "range_size": draw(st.integers(1, 48)),
        "batch": {"records": records, "max_bytes": max_bytes},
        "hops": draw(st.lists(st.integers(1, 4), min_size=1, max_size=6)),
        "prefetch": draw(st.sampled_from([0, 0, 1, 2])),
        "most": draw(st.none() | st.integers(1, 9)),
    }


def read_in_hops(
    data: bytes, plan: dict[str, Any], make: Callable[[Source, int, dict[str, Any]], Any]
) -> tuple[list[Any], list[Any], list[Batch[Any]]]:
    """All records, all ``skipped`` entries and all batches, reading hop after hop from a cursor."""
    state: dict[str, Any] = {}
    position = 0
    records: list[Any] = []
    skipped: list[Any] = []
    batches: list[Batch[Any]] = []
    hop = 0
    while True:
        reader = make(Source(data, plan["most"]), position, state)
        generator = reader.batches(plan["batch"]["records"], max_bytes=plan["batch"]["max_bytes"])
        take = plan["hops"][hop % len(plan["hops"])]
        hop += 1
        finished = False
        for _ in range(take):
            batch = next(generator, None)
            if batch is None:
                finished = True
                break
            check_batch(batch, position, plan["batch"])
            batches.append(batch)
            records.extend(batch.records)
            position = batch.end
            if "header" in dir(reader):
                state["header"] = reader.header
        if not finished and reader.done:
            finished = True
        generator.close()
        skipped.extend(getattr(reader, "skipped", []))
        if finished:
            return records, skipped, batches
        assert hop < 10_000


def check_batch(batch: Batch[Any], position: int, sizing: dict[str, Any]) -> None:
    assert len(batch) >= 1
    assert position <= batch.start < batch.end
    if sizing["records"] is not None:
        assert len(batch) <= sizing["records"]
    if sizing["max_bytes"] is not None and len(batch) > 1:
        assert batch.end - batch.start <= sizing["max_bytes"]


# -- lines -------------------------------------------------------------------------------------------------

line_text = st.lists(
    st.sampled_from(["a", "b", " ", "é", "€", "😀", "\r", "\n", "\n", "\r\n"]), max_size=60
).map("".join)


def reference_lines(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    last = parts.pop()
    lines = [p[:-1] if p.endswith(b"\r") else p for p in parts]
    return [*lines, last] if last else lines


@SETTINGS
@given(text=line_text, plan=plans(), encoding=st.sampled_from([None, "utf-8"]))
def test_lines_in_hops_equal_one_pass(text: str, plan: dict[str, Any], encoding: str | None) -> None:
    data = text.encode()

    def make(source: Source, start: int, state: dict[str, Any]) -> LineReader:
        return LineReader(
            source, start, range_size=plan["range_size"], encoding=encoding, prefetch=plan["prefetch"]
        )

    records, _, batches = read_in_hops(data, plan, make)
    expected = reference_lines(data)
    assert records == (expected if encoding is None else [line.decode() for line in expected])
    for batch in batches:  # every batch's offsets point at its own bytes
        first = batch.records[0]
        raw = first if isinstance(first, bytes) else first.encode()
        assert data[batch.start :].startswith(raw)


@SETTINGS
@given(data=st.binary(max_size=200), plan=plans())
def test_byte_lines_of_arbitrary_bytes(data: bytes, plan: dict[str, Any]) -> None:
    def make(source: Source, start: int, state: dict[str, Any]) -> LineReader:
        return LineReader(
            source, start, range_size=plan["range_size"], encoding=None, prefetch=plan["prefetch"]
        )

    records, _, _ = read_in_hops(data, plan, make)
    assert records == reference_lines(data)


@SETTINGS
@given(data=st.binary(max_size=300), start=st.integers(0, 300), plan=plans())
def test_chunks_from_any_offset(data: bytes, start: int, plan: dict[str, Any]) -> None:
    start = min(start, len(data))
    source = Source(data, plan["most"])
    reader = ChunkReader(source, start, chunk_size=plan["range_size"], prefetch=plan["prefetch"])
    assert b"".join(reader) == data[start:]
    requested = sum(end - begin for begin, end in source.reads)
    assert requested == len(data) - start if plan["most"] is None else requested >= len(data) - start


# -- CSV ---------------------------------------------------------------------------------------------------

field = st.lists(
    st.sampled_from(["a", "Z", " ", ",", '"', "\n", "\r", "\r\n", "é", "😀", ";"]), max_size=8
).map("".join)
rows = st.lists(st.lists(field, min_size=1, max_size=4), max_size=12)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """Either well-formed CSV written by ``csv.writer`` or raw text full of quotes and separators."""
    if draw(st.booleans()):
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\r\n", "\n"])))
        writer.writerows(draw(rows))
        text = out.getvalue()
        if text and draw(st.booleans()):
            text = text.rstrip("\r\n")  # no final line terminator
        return text
    return draw(st.text(alphabet=st.sampled_from(["a", ",", '"', "\n", "\r", "é", " "]), max_size=60))


def reference_csv(text: str, dicts: bool) -> list[Any]:
    if dicts:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return list(csv.reader(io.StringIO(text, newline="")))


@SETTINGS
@given(text=csv_texts(), plan=plans(), dicts=st.booleans(), carry_header=st.booleans())
def test_csv_in_hops_equal_one_pass(text: str, plan: dict[str, Any], dicts: bool, carry_header: bool) -> None:
    try:
        expected = reference_csv(text, dicts)
    except csv.Error:
        assume(False)
    data = text.encode()

    def make(source: Source, start: int, state: dict[str, Any]) -> CsvReader:
        header = state.get("header") if carry_header else None
        return CsvReader(
            source,
            start,
            header=header,
            has_header=dicts,
            range_size=plan["range_size"],
            prefetch=plan["prefetch"],
        )

    records, _, batches = read_in_hops(data, plan, make)
    assert records == expected
    for before, after in pairwise(batches):
        assert before.end <= after.start


# -- JSON Lines --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
jsonl_line = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    json_values.map(json.dumps),
    st.sampled_from(["", "  ", "{bad", "[1,", "nul", '"\u2028"', "\t", "\x0c", "\x0b", " \x0c\t", "\r"]),
)


def reference_jsonl(data: bytes) -> tuple[list[Any], list[int]]:
    values: list[Any] = []
    bad: list[int] = []
    offset = 0
    for raw in data.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line.strip(b" \t\r\n"):  # JSON whitespace only is blank; \x0b and \x0c are not JSON
            try:
                values.append(json.loads(line))
            except ValueError:
                bad.append(offset)
        offset += len(raw) + 1
    return values, bad


@SETTINGS
@given(
    lines=st.lists(jsonl_line, max_size=10),
    terminators=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=10, max_size=10),
    final=st.booleans(),
    plan=plans(),
)
def test_jsonl_in_hops_equal_one_pass_and_skip_each_bad_line_once(
    lines: list[str], terminators: list[str], final: bool, plan: dict[str, Any]
) -> None:
    text = "".join(line + end for line, end in zip(lines, terminators, strict=False))
    if lines and not final:
        text = text.rstrip("\r\n")
    data = text.encode()

    def make(source: Source, start: int, state: dict[str, Any]) -> JsonLinesReader:
        return JsonLinesReader(
            source, start, on_error="skip", range_size=plan["range_size"], prefetch=plan["prefetch"]
        )

    records, skipped, _ = read_in_hops(data, plan, make)
    values, bad = reference_jsonl(data)
    assert records == values
    assert [offset for offset, _ in skipped] == bad
