"""Byte-range shards (``end=``): shards cut anywhere, each read in hops, together give exactly a one-pass read.

A record (line) begins at ``p`` when ``p == 0`` or byte ``p - 1`` is ``\\n``; a reader over ``[start, end)``
delivers the records that begin there, the last one read to its end past ``end``. The properties cut random
contents (CRLF, multi-byte UTF-8, empty and long lines, a last line without terminator) at random points, read
each shard hop after hop (a fresh reader resumed at every ``batch.end`` with the same ``end``), and compare the
concatenation with the unbounded reader's records; they also check where each shard leaves ``position`` and
that no range is requested past the record straddling ``end``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recurse_lambda.s3._helpers import S3Helpers
from recurse_lambda.s3._jsonl import JsonLinesReader
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._readers import Batch, ChunkReader
from tests.test_readers_properties import SETTINGS, Source, reference_jsonl, reference_lines


def record_start(data: bytes, at: int) -> int:
    """The first record start at or after ``at`` (or the size): the reference for alignment."""
    if at == 0:
        return 0
    at = min(at, len(data))
    newline = data.find(b"\n", at - 1)
    return len(data) if newline < 0 else newline + 1


# -- strategies ----------------------------------------------------------------------------------------------

pieces = st.sampled_from(["a", "b", " ", "é", "€", "😀", "\r", "\n", "\n", "\r\n", "\n\n", "x" * 40])
texts = st.lists(pieces, max_size=40).map("".join)


@st.composite
def shard_plans(draw: st.DrawFn, size: int) -> dict[str, Any]:
    """Cut points, how to read each shard (range size, batches, batches per hop, prefetch, short reads)."""
    inner = draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=6)) if size > 1 else []
    cuts = [0, *sorted({c for c in inner if 0 < c < size}), size]
    cuts[-1] += draw(st.sampled_from([0, 0, 0, 5]))  # the last shard's end past the size: treated as the size
    return {
        "cuts": cuts,
        "range_size": draw(st.integers(1, 48)),
        "records": draw(st.none() | st.integers(1, 5)),
        "max_bytes": draw(st.none() | st.integers(1, 40)),
        "hops": draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)),
        "prefetch": draw(st.sampled_from([0, 0, 1, 2])),
        "most": draw(st.none() | st.integers(1, 9)),
    }


Make = Callable[[Source, int, int], Any]


def read_shard(data: bytes, start: int, end: int, plan: dict[str, Any], make: Make) -> dict[str, Any]:
    """One shard read hop after hop: each hop a fresh reader at the last ``batch.end``, with the same ``end``."""
    position = start
    records: list[Any] = []
    skipped: list[Any] = []
    batches: list[Batch[Any]] = []
    reads: list[tuple[int, int]] = []
    hop = 0
    while True:
        source = Source(data, plan["most"])
        reader = make(source, position, end)
        generator = reader.batches(plan["records"], max_bytes=plan["max_bytes"])
        take = plan["hops"][hop % len(plan["hops"])]
        hop += 1
        finished = False
        for _ in range(take):
            batch = next(generator, None)
            if batch is None:
                finished = True
                break
            assert position <= batch.start < batch.end and batch.start < end
            batches.append(batch)
            records.extend(batch.records)
            position = batch.end
        finished = finished or reader.done
        generator.close()
        skipped.extend(getattr(reader, "skipped", []))
        reads.extend(source.reads)
        if finished:
            return {
                "records": records,
                "skipped": skipped,
                "batches": batches,
                "position": reader.position,
                "reads": reads,
            }
        assert hop < 10_000


def read_shards(data: bytes, plan: dict[str, Any], make: Make) -> tuple[list[Any], list[Any]]:
    """All shards' records and skipped entries, in order, checking each shard's position and reads."""
    records: list[Any] = []
    skipped: list[Any] = []
    cuts = plan["cuts"]
    for start, end in pairwise(cuts):
        shard = read_shard(data, start, end, plan, make)
        first, after = record_start(data, start), record_start(data, end)
        for batch in shard["batches"]:  # every batch begins with a record that begins in the shard
            assert first <= batch.start < min(end, len(data))
        assert shard["position"] == after  # where the next shard's first record begins
        # Ranges are planned no further than the one that completes the straddling record: a short answer
        # is completed by reads inside its range, so only the range size may be added then.
        slack = 0 if plan["most"] is None else plan["range_size"]
        assert all(at < after + slack and at >= start - 1 for at, _ in shard["reads"])
        records.extend(shard["records"])
        skipped.extend(shard["skipped"])
    return records, skipped


# -- properties ----------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), text=texts, encoding=st.sampled_from([None, "utf-8"]))
def test_line_shards_concatenate_to_the_one_pass_read(data: Any, text: str, encoding: str | None) -> None:
    raw = text.encode()
    plan = data.draw(shard_plans(len(raw)))

    def make(source: Source, start: int, end: int) -> LineReader:
        return LineReader(
            source,
            start,
            end=end,
            range_size=plan["range_size"],
            encoding=encoding,
            prefetch=plan["prefetch"],
        )

    records, _ = read_shards(raw, plan, make)
    expected = reference_lines(raw)
    assert records == (expected if encoding is None else [line.decode() for line in expected])


@SETTINGS
@given(data=st.data(), raw=st.binary(max_size=150))
def test_byte_line_shards_of_arbitrary_bytes(data: Any, raw: bytes) -> None:
    plan = data.draw(shard_plans(len(raw)))

    def make(source: Source, start: int, end: int) -> LineReader:
        return LineReader(
            source, start, end=end, range_size=plan["range_size"], encoding=None, prefetch=plan["prefetch"]
        )

    records, _ = read_shards(raw, plan, make)
    assert records == reference_lines(raw)


jsonl_line = st.one_of(
    st.integers().map(json.dumps),
    st.text(alphabet=st.sampled_from(["a", "é", "😀", " "]), max_size=30).map(json.dumps),
    st.sampled_from(["", "  ", "{bad", "[1,", '{"k": [1, 2]}', "nul"]),
)


@SETTINGS
@given(
    data=st.data(),
    lines=st.lists(jsonl_line, max_size=10),
    terminators=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=10, max_size=10),
    final=st.booleans(),
)
def test_jsonl_shards_concatenate_and_skip_each_bad_line_once(
    data: Any, lines: list[str], terminators: list[str], final: bool
) -> None:
    text = "".join(line + end for line, end in zip(lines, terminators, strict=False))
    if lines and not final:
        text = text.rstrip("\r\n")
    raw = text.encode()
    plan = data.draw(shard_plans(len(raw)))

    def make(source: Source, start: int, end: int) -> JsonLinesReader:
        return JsonLinesReader(
            source, start, end=end, on_error="skip", range_size=plan["range_size"], prefetch=plan["prefetch"]
        )

    records, skipped = read_shards(raw, plan, make)
    values, bad = reference_jsonl(raw)
    assert records == values
    assert [offset for offset, _ in skipped] == bad


@SETTINGS
@given(data=st.data(), raw=st.binary(max_size=200))
def test_chunk_shards_are_exactly_their_bytes(data: Any, raw: bytes) -> None:
    plan = data.draw(shard_plans(len(raw)))
    cuts = plan["cuts"]
    joined = b""
    for start, end in pairwise(cuts):
        source = Source(raw, plan["most"])
        reader = ChunkReader(source, start, end=end, chunk_size=plan["range_size"], prefetch=plan["prefetch"])
        batches = list(reader.batches(plan["records"], max_bytes=plan["max_bytes"]))
        shard = b"".join(chunk for batch in batches for chunk in batch)
        assert shard == raw[start:end]
        assert all(start <= a and b <= min(end, len(raw)) for a, b in source.reads)
        if plan["most"] is None:
            assert sum(b - a for a, b in source.reads) == len(shard)
        joined += shard
    assert joined == raw


# -- edge cases ----------------------------------------------------------------------------------------------


def shard(data: bytes, start: int, end: int, **options: Any) -> tuple[list[Any], int, Source]:
    source = Source(data)
    reader = LineReader(source, start, end=end, encoding=options.pop("encoding", None), **options)
    records = [record for batch in reader.batches() for record in batch]
    assert reader.done
    return records, reader.position, source


CRLF = b"ab\r\ncd\r\nef\r\n"


@pytest.mark.parametrize(
    ("start", "end", "records", "position"),
    [
        (0, 1, [b"ab"], 4),  # the first line straddles end: read to its end
        (0, 4, [b"ab"], 4),  # end right after "\n": the line beginning at end is the next shard's
        (0, 5, [b"ab", b"cd"], 8),
        (1, 5, [b"cd"], 8),  # start inside a line: skip to the next line start
        (3, 12, [b"cd", b"ef"], 12),  # start between "\r" and "\n"
        (4, 12, [b"cd", b"ef"], 12),  # start right after "\n" is a line start
        (5, 6, [], 8),  # no line begins in [5, 6): nothing, and position at the next line start
        (9, 12, [], 12),
        (0, 3, [b"ab"], 4),  # end between "\r" and "\n"
    ],
)
def test_alignment_at_both_ends(start: int, end: int, records: list[bytes], position: int) -> None:
    assert shard(CRLF, start, end, range_size=3)[:2] == (records, position)


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_cut_inside_a_multibyte_character(cut: int) -> None:
    data = "é\n😀x\n日本\n".encode()
    first, position, _ = shard(data, 0, cut, encoding="utf-8", range_size=2)
    second, _, _ = shard(data, cut, len(data), encoding="utf-8", range_size=2)
    assert first + second == ["é", "😀x", "日本"]
    assert position == record_start(data, cut)


def test_a_shard_inside_a_line_longer_than_a_range() -> None:
    data = b"a\n" + b"x" * 30 + b"\nb\nc"
    assert shard(data, 5, 20, range_size=4)[:2] == ([], 33)  # x... began before 5; b at 33 is past 20
    assert shard(data, 5, 34, range_size=4)[:2] == ([b"b"], 35)
    assert shard(data, 1, 5, range_size=4)[:2] == ([b"x" * 30], 33)  # the long line is read whole
    assert shard(data, 34, 99, range_size=4)[:2] == ([b"c"], len(data))  # no terminator, end past size


@pytest.mark.parametrize("at", [0, 3, 4, len(CRLF)])
def test_start_equal_to_end_reads_nothing(at: int) -> None:
    records, position, source = shard(CRLF, at, at)
    assert (records, position, source.reads) == ([], at, [])


def test_a_reader_resumed_past_end_reads_nothing() -> None:
    # The last batch of a shard ends after its straddling record, past `end`: a hop resumed there is done.
    batch = list(LineReader(Source(CRLF), 0, end=5, encoding=None).batches())[-1]
    assert batch.end == 8
    records, position, source = shard(CRLF, batch.end, 5)
    assert (records, position, source.reads) == ([], 8, [])


def test_bad_bounds() -> None:
    with pytest.raises(ValueError, match="end must be >= 0"):
        LineReader(Source(CRLF), 0, end=-1)
    with pytest.raises(ValueError, match="end must be >= 0"):
        JsonLinesReader(Source(CRLF), 0, end=-1)
    with pytest.raises(ValueError, match="must be >= start"):
        ChunkReader(Source(CRLF), 5, end=4)
    with pytest.raises(ValueError, match="past the end"):
        shard(CRLF, 20, 30)
    with pytest.raises(ValueError, match="past the end"):
        list(ChunkReader(Source(CRLF), 20, end=30))


def test_end_past_the_size_is_the_size() -> None:
    assert shard(CRLF, 1, 1000)[:2] == ([b"cd", b"ef"], 12)
    assert b"".join(ChunkReader(Source(CRLF), 2, end=1000)) == CRLF[2:]


def test_jsonl_position_is_past_trailing_blank_lines_when_done() -> None:
    data = b"1\n\n  \n{bad\n2\n"
    reader = JsonLinesReader(Source(data), 0, end=3, on_error="skip")
    assert list(reader) == [1]
    assert reader.position == 3  # the shard's blank line at 2 is behind it too
    reader = JsonLinesReader(Source(data), 1, end=8, on_error="skip")
    assert list(reader) == []
    assert (reader.position, [offset for offset, _ in reader.skipped]) == (11, [6])


def test_text_mode_errors_and_bom_in_a_shard() -> None:
    data = b"\xef\xbb\xbfa\nb\n"
    assert shard(data, 0, 2, encoding="utf-8-sig")[0] == ["a"]
    assert shard(data, 2, 9, encoding="utf-8-sig")[0] == ["b"]
    first, _, _ = shard(b"ok\n\xff\n", 0, 3, encoding="utf-8")
    assert first == ["ok"]  # the bad line begins at 3, in the next shard: not decoded here


# -- requests ------------------------------------------------------------------------------------------------

LINES = b"".join(b"line %03d\n" % i for i in range(100))  # 9 bytes a line


def test_alignment_costs_no_extra_request() -> None:
    for start in (40, 45):  # a line start, and inside a line
        _, _, source = shard(LINES, start, 300, range_size=1 << 20)
        assert source.reads == [(start - 1, len(LINES))]
    _, _, source = shard(LINES, 45, 300, range_size=100, prefetch=0)
    assert source.reads == [(44, 144), (144, 244), (244, 344)]  # line 33 straddles 300: its \n is at 305


def test_an_unbounded_reader_still_starts_at_start() -> None:
    source = Source(LINES)
    assert next(iter(LineReader(source, 45, encoding=None, range_size=1 << 20))) == b"line 005"
    assert source.reads[0][0] == 45


def test_prefetch_stops_at_the_range_that_completes_the_straddling_record() -> None:
    _, _, source = shard(LINES, 0, 95, range_size=10, prefetch=2)
    assert max(end for _, end in source.reads) == 100  # [90, 100) holds the \n at 98
    long = b"a\n" + b"x" * 100 + b"\n" + b"tail\n" * 50
    records, position, source = shard(long, 0, 5, range_size=10, prefetch=2)
    assert (records, position) == ([b"a", b"x" * 100], 103)
    assert max(end for _, end in source.reads) == 110  # ranges past `end` only while the line is unfinished


def test_the_prefetcher_runs_ahead_before_end() -> None:
    source = Source(LINES)
    reader = LineReader(source, 0, end=len(LINES), encoding=None, range_size=90, prefetch=2)
    batches = reader.batches(1)
    next(batches)
    deadline = time.monotonic() + 5
    while len(source.reads) < 3 and time.monotonic() < deadline:  # the reads run on background threads
        time.sleep(0.001)
    assert sorted(source.reads) == [(0, 90), (90, 180), (180, 270)]  # two ranges ahead of the first
    batches.close()


# -- the helpers -------------------------------------------------------------------------------------


def test_helpers_pass_end_through(moto_s3: Any) -> None:
    moto_s3.create_bucket(Bucket="shard-bucket")
    moto_s3.put_object(Bucket="shard-bucket", Key="lines.txt", Body=LINES)
    moto_s3.put_object(Bucket="shard-bucket", Key="t.jsonl", Body=b"1\n2\n3\n")
    gets: list[dict[str, Any]] = []
    moto_s3.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params)
    )
    helpers = S3Helpers(lambda: moto_s3, {})
    with helpers.lines("shard-bucket", "lines.txt", 45, end=60, encoding=None) as reader:
        assert list(reader) == [b"line 005", b"line 006"]
    assert [g["Range"] for g in gets] == [f"bytes=44-{len(LINES) - 1}"]  # one GET, aligned from byte 44
    assert list(helpers.jsonl("shard-bucket", "t.jsonl", 1, end=3)) == [2]
    assert b"".join(helpers.chunks("shard-bucket", "lines.txt", 3, end=7)) == LINES[3:7]
    moto_s3.put_object(Bucket="shard-bucket", Key="t.csv", Body=b"n,sq\n1,1\n2,4\n3,9\n")
    assert list(helpers.csv("shard-bucket", "t.csv", 9, end=13)) == [{"n": "2", "sq": "4"}]  # header from 0
