"""The table of reader formats, and CSV read in shards (``end=``): sound, or a clear error.

A CSV shard finds its first record at a line start, which is right only when every record is one line. The
properties cut CSV at random points and read each shard hop after hop: when no shard raises, the shards'
records concatenate to the one-pass ``csv`` read; a record that spans lines always makes some shard raise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import recurse_lambda.s3 as s3
from recurse_lambda.errors import MalformedRecordError
from recurse_lambda.s3 import FORMATS, Block, ListBlock, Reader, S3Helpers, register_format
from recurse_lambda.s3._csv import CsvReader
from recurse_lambda.shards.plan import Part
from recurse_lambda.shards.reader import Shard
from tests.test_readers_bounded import read_shard, record_start, shard_plans
from tests.test_readers_properties import SETTINGS, Source, csv_texts

# -- the table -----------------------------------------------------------------------------------------------


def test_every_format_is_a_reader_exported_with_a_method_of_its_name_on_run_s3_and_run_shard() -> None:
    assert set(FORMATS) == {"chunks", "lines", "csv", "jsonl"}
    for name, cls in FORMATS.items():
        assert issubclass(cls, Reader)
        assert getattr(s3, cls.__name__) is cls  # exported from recurse_lambda.s3
        assert getattr(S3Helpers, name).__annotations__["return"] == cls.__name__
        assert callable(getattr(Shard, name))


class Words(Reader[str]):
    """A format written outside the library: whitespace-separated words of one line per block."""

    def __init__(self, source: Any, start: int = 0, *, end: int | None = None, range_size: int = 64) -> None:
        super().__init__(source, start, end=end, range_size=range_size, prefetch=0)

    def parse(self) -> Iterator[Block[str]]:
        begin, ranges = self._record_ranges()
        data = b"".join(chunk for _, chunk in ranges)
        at = begin
        for line in data.splitlines(keepends=True):
            words = line.decode().split()
            yield ListBlock([" ".join(words)], [at], [at + len(line)], at, at + len(line))
            at += len(line)


def test_a_registered_format_reads_objects_and_shards(moto_s3: Any) -> None:
    register_format("words", Words)
    try:
        with pytest.raises(ValueError, match="already Words"):
            register_format("words", CsvReader)
        with pytest.raises(ValueError, match="identifier"):
            register_format("two words", Words)
        moto_s3.create_bucket(Bucket="fmt")
        body = b"a  b\nc d e\nf\n"
        moto_s3.put_object(Bucket="fmt", Key="w.txt", Body=body)
        helpers = S3Helpers(lambda: moto_s3, {})
        assert list(helpers.reader("words", "fmt", "w.txt")) == ["a b", "c d e", "f"]
        parts = [Part("fmt", "w.txt", "e", len(body), a, b) for a, b in [(0, 6), (6, len(body))]]
        assert list(Shard("j", 0, 1, parts, lambda: helpers).reader("words")) == ["a b", "c d e", "f"]
    finally:
        del FORMATS["words"]
    with pytest.raises(ValueError, match="unknown reader format 'words'"):
        helpers.reader("words", "fmt", "w.txt")


def test_a_shard_reads_csv_through_the_table_with_each_objects_header(moto_s3: Any) -> None:
    moto_s3.create_bucket(Bucket="fmt")
    bodies = {"a.csv": b"n,sq\n1,1\n2,4\n3,9\n", "b.csv": b"sq,n\n16,4\n25,5\n"}
    for key, body in bodies.items():
        moto_s3.put_object(Bucket="fmt", Key=key, Body=body)
    helpers = S3Helpers(lambda: moto_s3, {})
    # One shard's parts: the end of a.csv (from inside its second row), then the start of b.csv.
    parts = [Part("fmt", "a.csv", "e", 17, 7, 17), Part("fmt", "b.csv", "e", 15, 0, 11)]
    shard = Shard("j", 1, 3, parts, lambda: helpers)
    rows = [(r["n"], r["sq"]) for batch in shard.csv().batches(1) for r in batch]
    assert rows == [("2", "4"), ("3", "9"), ("4", "16"), ("5", "25")]


# -- CSV shards ------------------------------------------------------------------------------------------------


def read_csv_shards(data: bytes, plan: dict[str, Any], dicts: bool) -> list[Any] | None:
    """Every shard's records in order, or None when a shard raised MalformedRecordError."""

    def make(source: Source, start: int, end: int) -> CsvReader:
        return CsvReader(
            source, start, end=end, has_header=dicts, range_size=plan["range_size"], prefetch=plan["prefetch"]
        )

    records: list[Any] = []
    for start, end in pairwise(plan["cuts"]):
        try:
            shard = read_shard(data, start, end, plan, make)
        except MalformedRecordError:
            return None
        assert shard["position"] == record_start(data, end)
        records.extend(shard["records"])
    return records


def reference(text: str, dicts: bool) -> list[Any]:
    return list((csv.DictReader if dicts else csv.reader)(io.StringIO(text, newline="")))


one_line_field = st.lists(st.sampled_from(["a", "Z", " ", ",", '"', "é", "😀", ";"]), max_size=6).map("".join)


@st.composite
def one_line_csv(draw: st.DrawFn) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\r\n", "\n"])))
    writer.writerows(draw(st.lists(st.lists(one_line_field, min_size=1, max_size=4), max_size=12)))
    text = out.getvalue()
    return text.rstrip("\r\n") if text and draw(st.booleans()) else text


@SETTINGS
@given(data=st.data(), text=one_line_csv(), dicts=st.booleans())
def test_csv_shards_of_one_line_records_concatenate_to_the_one_pass_read(
    data: Any, text: str, dicts: bool
) -> None:
    raw = text.encode()
    plan = data.draw(shard_plans(len(raw)))
    assert read_csv_shards(raw, plan, dicts) == reference(text, dicts)


@SETTINGS
@given(data=st.data(), text=csv_texts(), dicts=st.booleans())
def test_csv_shards_read_exactly_the_one_pass_records_or_raise(data: Any, text: str, dicts: bool) -> None:
    try:
        expected = reference(text, dicts)
    except csv.Error:
        assume(False)
    raw = text.encode()
    plan = data.draw(shard_plans(len(raw)))
    records = read_csv_shards(raw, plan, dicts)
    assert records is None or records == expected
    lines = raw.splitlines(keepends=True)  # as the csv module splits them (newline="")
    if len(list(csv.reader(line.decode() for line in lines))) < len(lines):
        assert records is None  # some record spans lines: a shard says so, whatever the cuts


@pytest.mark.parametrize("cut", range(0, 30))
def test_a_quoted_newline_fails_a_sharded_read_wherever_the_cut(cut: int) -> None:
    raw = b'id,note\n1,"two\nlines"\n2,plain\n3,"a\r\nb"\n'
    plan = {"cuts": sorted({0, min(cut, len(raw)), len(raw)}), "range_size": 7, "prefetch": 0}
    plan |= {"records": None, "max_bytes": None, "hops": [1], "most": None}
    with pytest.raises(MalformedRecordError, match="spans more than one line") as info:
        for start, end in pairwise(plan["cuts"]):
            read_shard(raw, start, end, plan, lambda src, s, e: CsvReader(src, s, end=e, range_size=7))
    assert info.value.offset in (8, 30)  # the start of a record that spans lines
    assert list(CsvReader(Source(raw))) == reference(raw.decode(), True)  # one chain reads it
