"""The readers over in-memory sources: lines, CSV, JSON Lines, chunks, batching and resuming."""

from __future__ import annotations

import csv
import io
import json
from itertools import pairwise
from typing import Any

import pytest

from recurse_lambda.errors import ObjectChangedError, RecurseLambdaError, S3Error
from recurse_lambda.s3 import _lines
from recurse_lambda.s3._csv import CsvReader
from recurse_lambda.s3._jsonl import JsonLinesReader
from recurse_lambda.s3._lines import LineReader
from recurse_lambda.s3._readers import Batch, ByteSource, ChunkReader, MalformedRecordError


class MemorySource:
    """An object in memory that counts its reads."""

    def __init__(self, data: bytes, bucket: str | None = None, key: str | None = None) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []
        if bucket is not None:
            self.bucket, self.key = bucket, key

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        return self.data[start:end]


class StingySource(MemorySource):
    """An adversarial source: answers at most ``most`` bytes per read, like a connection cut short."""

    def __init__(self, data: bytes, most: int) -> None:
        super().__init__(data)
        self.most = most

    def read(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        return self.data[start : min(end, start + self.most)]


def lines_of(reader: Any, *args: Any, **kwargs: Any) -> list[Any]:
    return [record for batch in reader.batches(*args, **kwargs) for record in batch]


def test_memory_source_is_a_byte_source() -> None:
    assert isinstance(MemorySource(b""), ByteSource)


# -- lines -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("range_size", [1, 2, 3, 5, 8, 1 << 20])
@pytest.mark.parametrize("encoding", [None, "utf-8"])
def test_lines_lf_crlf_empty_and_unterminated(range_size: int, encoding: str | None) -> None:
    data = b"one\r\ntwo\n\nthree\r\r\n\r\n  four \rx\nlast\r"
    expected = [b"one", b"two", b"", b"three\r", b"", b"  four \rx", b"last\r"]
    got = lines_of(LineReader(MemorySource(data), range_size=range_size, encoding=encoding))
    assert got == (expected if encoding is None else [line.decode() for line in expected])


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n", b"\n\n", b"\r\n", b"a\r\nb"])
def test_lines_edge_files(data: bytes) -> None:
    expected = [p[:-1] if p.endswith(b"\r") else p for p in data.split(b"\n")[:-1]]
    if not data.endswith(b"\n") and data:
        expected.append(data.rsplit(b"\n", 1)[-1])
    assert lines_of(LineReader(MemorySource(data), range_size=2, encoding=None)) == expected


def test_a_line_longer_than_the_range() -> None:
    long = b"x" * 1000
    source = MemorySource(b"a\n" + long + b"\nb\n" + long)
    assert lines_of(LineReader(source, range_size=7, encoding=None)) == [b"a", long, b"b", long]


@pytest.mark.parametrize("range_size", range(1, 12))
def test_multibyte_characters_split_across_ranges(range_size: int) -> None:
    text = "é€😀\nnaïve\r\n日本語\nz"
    got = lines_of(LineReader(MemorySource(text.encode()), range_size=range_size))
    assert got == ["é€😀", "naïve", "日本語", "z"]


def test_batch_offsets_are_byte_offsets_with_multibyte_text() -> None:
    data = "é\r\n€€\nab\n😀".encode()
    batches = list(LineReader(MemorySource(data), range_size=4).batches(1))
    assert [(b.records, b.start, b.end) for b in batches] == [
        (["é"], 0, 4),
        (["€€"], 4, 11),
        (["ab"], 11, 14),
        (["😀"], 14, 18),
    ]
    for batch in batches:
        resumed = LineReader(MemorySource(data), batch.start)
        assert next(iter(resumed)) == batch.records[0]
        resumed.close()


def test_utf8_sig_drops_the_bom_at_byte_zero_only() -> None:
    data = b"\xef\xbb\xbfa\nb\n"
    assert lines_of(LineReader(MemorySource(data), encoding="utf-8-sig")) == ["a", "b"]
    assert lines_of(LineReader(MemorySource(data), encoding="utf-8")) == ["\ufeffa", "b"]
    batches = list(LineReader(MemorySource(data), encoding="utf-8-sig").batches(1))
    assert [(b.start, b.end) for b in batches] == [(0, 5), (5, 7)]


def test_other_ascii_compatible_encodings() -> None:
    data = "café\ncrème\n".encode("latin-1")
    assert lines_of(LineReader(MemorySource(data), range_size=3, encoding="latin-1")) == ["café", "crème"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-7"])
def test_encodings_that_are_not_ascii_compatible_are_refused(encoding: str) -> None:
    with pytest.raises(ValueError, match="ASCII"):
        LineReader(MemorySource(b""), encoding=encoding)


def test_invalid_bytes_raise_after_the_good_lines() -> None:
    data = b"good\nalso good\nbad \xff here\nnever\n"
    source = MemorySource(data, bucket="bkt", key="k.txt")
    delivered: list[str] = []
    with pytest.raises(MalformedRecordError) as info:
        for batch in LineReader(source, range_size=1 << 20).batches(10):
            delivered.extend(batch)
    assert delivered == ["good", "also good"]
    assert info.value.offset == data.index(b"bad")
    assert "s3://bkt/k.txt" in str(info.value)
    assert isinstance(info.value, RecurseLambdaError)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_invalid_bytes_with_a_lenient_error_handler() -> None:
    data = b"a\xffb\nc\n"
    assert lines_of(LineReader(MemorySource(data), errors="replace")) == ["a\ufffdb", "c"]
    batches = list(LineReader(MemorySource(data), errors="backslashreplace").batches(1))
    assert [(b.records, b.end) for b in batches] == [(["a\\xffb"], 4), (["c"], 6)]


def test_bytes_lines_are_not_decoded() -> None:
    data = b"\xff\xfe\n\x00\n"
    assert lines_of(LineReader(MemorySource(data), encoding=None)) == [b"\xff\xfe", b"\x00"]


@pytest.mark.parametrize("piece", [1, 2, 5, 8])
def test_ranges_are_parsed_in_pieces(monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    # Ranges larger than PARSE_PIECE are cut before parsing; shrink it so small data crosses every boundary.
    monkeypatch.setattr(_lines, "PARSE_PIECE", piece)
    data = "one\r\ntwo\n\nthré€\r\r\n\r\nlong line here\r\nx".encode()
    expected = [b"one", b"two", b"", "thré€\r".encode(), b"", b"long line here", b"x"]
    for range_size in (7, 64):
        assert lines_of(LineReader(MemorySource(data), range_size=range_size, encoding=None)) == expected
        got = lines_of(LineReader(MemorySource(data), range_size=range_size))
        assert got == [line.decode() for line in expected]
        reader = CsvReader(MemorySource(CSV_TEXT.encode()), range_size=range_size)
        assert lines_of(reader) == reference_dicts(CSV_TEXT)


# -- batching ----------------------------------------------------------------------------------------------


def test_batches_by_count_carry_resume_offsets() -> None:
    data = b"".join(b"%d\n" % i for i in range(25))
    batches = list(LineReader(MemorySource(data), range_size=7, encoding=None).batches(10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert batches[0].start == 0 and batches[-1].end == len(data)
    for before, after in pairwise(batches):
        assert before.end == after.start
    resumed = LineReader(MemorySource(data), batches[0].end, encoding=None)
    assert lines_of(resumed) == [b"%d" % i for i in range(10, 25)]


def test_batches_by_bytes_hold_at_least_one_record() -> None:
    data = b"aaaa\nb\nc\n" + b"d" * 20 + b"\ne\n"
    batches = list(LineReader(MemorySource(data), range_size=4, encoding=None).batches(max_bytes=5))
    assert [b.records for b in batches] == [[b"aaaa"], [b"b", b"c"], [b"d" * 20], [b"e"]]
    assert all(b.nbytes <= 5 or len(b) == 1 for b in batches)


def test_batches_by_count_and_bytes() -> None:
    data = b"a\n" * 10
    batches = list(LineReader(MemorySource(data), encoding=None).batches(3, max_bytes=4))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
    batches = list(LineReader(MemorySource(data), encoding=None).batches(3, max_bytes=100))
    assert [len(b) for b in batches] == [3, 3, 3, 1]


def test_without_sizes_a_batch_is_one_range() -> None:
    data = b"ab\ncd\nef\ngh\n"
    batches = list(LineReader(MemorySource(data), range_size=6, encoding=None).batches())
    assert [b.records for b in batches] == [[b"ab", b"cd"], [b"ef", b"gh"]]


def test_batch_is_a_small_sequence() -> None:
    batch = Batch([1, 2, 3], 10, 16)
    assert len(batch) == 3 and list(batch) == [1, 2, 3] and batch.nbytes == 6


@pytest.mark.parametrize(("records", "max_bytes"), [(0, None), (None, 0), (-1, None)])
def test_batch_sizes_must_be_positive(records: int | None, max_bytes: int | None) -> None:
    with pytest.raises(ValueError):
        LineReader(MemorySource(b"a\n")).batches(records, max_bytes=max_bytes)


def test_position_follows_delivered_batches_and_done() -> None:
    data = b"a\nb\nc\n"
    reader = LineReader(MemorySource(data), 2, encoding=None)
    assert reader.position == 2 and not reader.done
    batches = reader.batches(1)
    next(batches)
    assert reader.position == 4
    assert list(batches)[-1].end == 6
    assert reader.position == 6 and reader.done
    assert list(reader.batches()) == []  # an exhausted reader yields nothing more


def test_closing_the_generator_closes_the_reader() -> None:
    reader = LineReader(MemorySource(b"a\nb\nc\n"), encoding=None)
    for _ in reader.batches(1):
        break
    with pytest.raises(ValueError, match="closed"):
        reader.batches()


def test_start_at_the_end_and_past_it() -> None:
    source = MemorySource(b"a\nb\n")
    assert lines_of(LineReader(source, 4)) == []
    assert source.reads == []
    with pytest.raises(ValueError, match="past the end"):
        lines_of(LineReader(source, 5))
    with pytest.raises(ValueError):
        LineReader(source, -1)


def test_short_reads_are_completed() -> None:
    data = b"".join(b"line %d\n" % i for i in range(100))
    source = StingySource(data, most=7)
    assert lines_of(LineReader(source, range_size=64, encoding=None)) == data.split(b"\n")[:-1]
    assert len(source.reads) > len(data) // 64 + 1


def test_a_source_that_stops_answering_is_an_error() -> None:
    with pytest.raises(S3Error, match="no data"):
        lines_of(LineReader(StingySource(b"abc\n", most=0), range_size=64))


def test_source_errors_propagate_unchanged() -> None:
    class Changing(MemorySource):
        def read(self, start: int, end: int) -> bytes:
            if start > 0:
                raise ObjectChangedError("b", "k", '"a"', '"b"')
            return super().read(start, end)

    with pytest.raises(ObjectChangedError):
        lines_of(LineReader(Changing(b"a\n" * 10), range_size=4))


def test_iterating_a_reader_yields_records() -> None:
    assert list(LineReader(MemorySource(b"x\ny"), encoding=None)) == [b"x", b"y"]


# -- chunks ------------------------------------------------------------------------------------------------


def test_chunks_from_an_offset() -> None:
    data = bytes(range(256)) * 4
    batches = list(ChunkReader(MemorySource(data), 10, chunk_size=100).batches(3))
    assert b"".join(chunk for batch in batches for chunk in batch) == data[10:]
    assert [(b.start, b.end) for b in batches] == [(10, 310), (310, 610), (610, 910), (910, 1024)]


# -- CSV ---------------------------------------------------------------------------------------------------

CSV_TEXT = 'id,name,note\r\n1,"Smith, J","said ""hi""\nthen left"\r\n2,Ünal,plain\r\n\r\n3,"a\r\nb",\r\n4,x\n'


def reference_dicts(text: str, **fmt: Any) -> list[dict[Any, Any]]:
    return list(csv.DictReader(io.StringIO(text, newline=""), **fmt))


@pytest.mark.parametrize("range_size", [1, 3, 7, 1 << 20])
def test_csv_dict_rows_with_quoted_newlines(range_size: int) -> None:
    reader = CsvReader(MemorySource(CSV_TEXT.encode()), range_size=range_size)
    assert lines_of(reader) == reference_dicts(CSV_TEXT)
    assert reader.header == ["id", "name", "note"]


def test_csv_record_ends_after_the_whole_record() -> None:
    data = CSV_TEXT.encode()
    batches = list(CsvReader(MemorySource(data), range_size=5).batches(1))
    first = batches[0]
    assert first.start == data.index(b"1,")
    assert first.end == data.index(b"2,")
    for batch in batches:
        header = ["id", "name", "note"]
        resumed = CsvReader(MemorySource(data), batch.start, header=header, range_size=5)
        assert next(iter(resumed)) == batch.records[0]


def test_csv_resume_with_the_saved_header() -> None:
    data = CSV_TEXT.encode()
    first = CsvReader(MemorySource(data), range_size=4)
    batches = first.batches(2)
    batch = next(batches)
    saved = first.header
    batches.close()
    assert saved is not None
    source = MemorySource(data)
    rest = CsvReader(source, batch.end, header=saved, range_size=4, prefetch=0)
    assert lines_of(rest) == reference_dicts(CSV_TEXT)[2:]
    assert min(start for start, _ in source.reads) == batch.end  # no read of the header


def test_csv_resume_without_header_reads_it_from_the_start() -> None:
    data = CSV_TEXT.encode()
    offset = data.index(b"4,x")
    reader = CsvReader(MemorySource(data), offset)
    assert reader.header == ["id", "name", "note"]
    assert lines_of(reader) == [{"id": "4", "name": "x", "note": None}]


def test_csv_header_given_skips_the_files_header_row() -> None:
    data = b"a,b\n1,2\n3,4,5\n"
    reader = CsvReader(MemorySource(data), header=["x", "y"], restkey="more")
    assert lines_of(reader) == [{"x": "1", "y": "2"}, {"x": "3", "y": "4", "more": ["5"]}]


def test_csv_without_header_gives_lists_like_csv_reader() -> None:
    text = "1;2\n\n'3;x';4\n"
    reader = CsvReader(MemorySource(text.encode()), has_header=False, delimiter=";", quotechar="'")
    assert lines_of(reader) == list(csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar="'"))
    assert reader.header is None


def test_csv_header_given_without_header_row() -> None:
    reader = CsvReader(MemorySource(b"1,2\n"), header=["a", "b"], has_header=False)
    assert lines_of(reader) == [{"a": "1", "b": "2"}]


def test_csv_bad_record_raises_with_its_offset() -> None:
    data = b'a,b\n1,2\n3,"x"y\n5,6\n'
    delivered: list[Any] = []
    with pytest.raises(MalformedRecordError) as info:
        for batch in CsvReader(MemorySource(data), strict=True).batches(5):
            delivered.extend(batch)
    assert delivered == [{"a": "1", "b": "2"}]
    assert info.value.offset == data.index(b"3,")


def test_csv_undecodable_bytes_fail_at_the_record_start() -> None:
    data = b'a,b\n1,2\n3,"multi\nline \xff"\n5,6\n'
    delivered: list[Any] = []
    with pytest.raises(MalformedRecordError, match="not valid utf-8") as info:
        for batch in CsvReader(MemorySource(data), range_size=4).batches(5):
            delivered.extend(batch)
    assert delivered == [{"a": "1", "b": "2"}]
    assert info.value.offset == data.index(b"3,")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    ("data", "options"),
    [
        (b'a,"b\xff"\n1,2\n', {}),  # undecodable bytes in the header row
        (b'a,"b"x\n1,2\n', {"strict": True}),  # bad quoting in the header row
        (b'"a",b\n1,2\n', {"quoting": csv.QUOTE_NONNUMERIC}),  # an unquoted name cannot be a number
    ],
)
@pytest.mark.parametrize("start", [0, 4])
def test_csv_malformed_header_row_is_a_malformed_record_at_0(
    data: bytes, options: dict[str, Any], start: int
) -> None:
    reader = CsvReader(MemorySource(data, bucket="b", key="h.csv"), start, range_size=3, **options)
    with pytest.raises(MalformedRecordError, match=r"s3://b/h\.csv") as info:
        lines_of(reader)
    assert info.value.offset == 0
    with pytest.raises(MalformedRecordError):
        _ = CsvReader(MemorySource(data), start, **options).header


def test_csv_quote_nonnumeric_with_a_non_numeric_field_is_malformed() -> None:
    data = b'"a","b"\n1,2\n3,x\n'
    delivered: list[Any] = []
    reader = CsvReader(MemorySource(data), quoting=csv.QUOTE_NONNUMERIC)
    with pytest.raises(MalformedRecordError, match="could not convert") as info:
        for batch in reader.batches(5):
            delivered.extend(batch)
    assert delivered == [{"a": 1.0, "b": 2.0}]
    assert info.value.offset == data.index(b"3,")
    assert isinstance(info.value.__cause__, ValueError)


def test_csv_a_failed_read_is_not_a_malformed_record() -> None:
    class Failing(MemorySource):
        def read(self, start: int, end: int) -> bytes:
            raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke") as info:
        lines_of(CsvReader(Failing(b"a,b\n1,2\n"), has_header=False))
    assert not isinstance(info.value, MalformedRecordError)


@pytest.mark.parametrize("has_header", [True, False])
def test_csv_quotechar_none_means_quote_none_like_csv_reader(has_header: bool) -> None:
    data = b'a,"b"\n"1",2\n'
    expected = list(csv.reader(io.StringIO(data.decode(), newline=""), quotechar=None))
    assert expected == [["a", '"b"'], ['"1"', "2"]]
    reader = CsvReader(MemorySource(data), quotechar=None, has_header=has_header)
    if has_header:
        assert lines_of(reader) == [dict(zip(expected[0], expected[1], strict=True))]
    else:
        assert lines_of(reader) == expected


def test_csv_bad_dialect_options_fail_at_construction() -> None:
    with pytest.raises(TypeError):
        CsvReader(MemorySource(b""), delimiter="too long")


def test_csv_empty_object() -> None:
    reader = CsvReader(MemorySource(b""))
    assert reader.header is None
    assert lines_of(reader) == []


def test_csv_utf8_sig() -> None:
    data = "\ufeffa,b\n1,2\n".encode()
    reader = CsvReader(MemorySource(data), encoding="utf-8-sig")
    batches = list(reader.batches())
    assert reader.header == ["a", "b"]
    assert batches[0].records == [{"a": "1", "b": "2"}]
    assert batches[0].start == data.index(b"1,")


# -- JSON Lines --------------------------------------------------------------------------------------------


def test_jsonl_values_and_blank_lines() -> None:
    data = b'{"a": 1}\r\n\n  \n[1, 2]\n"s"\n3'
    assert lines_of(JsonLinesReader(MemorySource(data), range_size=3)) == [{"a": 1}, [1, 2], "s", 3]


@pytest.mark.parametrize("junk", [b"\x0c", b"\x0b", b" \x0c\t", b"\x0b\r"])
def test_jsonl_only_json_whitespace_is_blank(junk: bytes) -> None:
    data = b"1\n \t\r\n\r\n" + junk + b"\n2\n"
    with pytest.raises(MalformedRecordError) as info:
        lines_of(JsonLinesReader(MemorySource(data)))
    assert info.value.offset == data.index(junk)
    skipping = JsonLinesReader(MemorySource(data), on_error="skip")
    assert lines_of(skipping) == [1, 2]
    assert [offset for offset, _ in skipping.skipped] == [data.index(junk)]


def test_jsonl_raise_after_the_good_records() -> None:
    data = b'{"a": 1}\n{"a": 2}\n{oops\n{"a": 4}\n'
    delivered: list[Any] = []
    with pytest.raises(MalformedRecordError) as info:
        for batch in JsonLinesReader(MemorySource(data, bucket="b", key="x.jsonl")).batches(10):
            delivered.extend(batch)
    assert delivered == [{"a": 1}, {"a": 2}]
    assert info.value.offset == data.index(b"{oops")
    assert (info.value.bucket, info.value.key) == ("b", "x.jsonl")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_jsonl_skip_reports_each_bad_line_once_across_hops() -> None:
    data = b"1\nbad1\n2\n3\nbad2\n4\nbad3\n"
    first = JsonLinesReader(MemorySource(data), on_error="skip", range_size=1 << 20)
    batches = first.batches(2)
    batch = next(batches)
    assert batch.records == [1, 2]
    assert [offset for offset, _ in first.skipped] == [2]  # bad2 was parsed but lies past the batch
    batches.close()
    second = JsonLinesReader(MemorySource(data), batch.end, on_error="skip")
    assert lines_of(second, 2) == [3, 4]
    assert [offset for offset, _ in second.skipped] == [data.index(b"bad2"), data.index(b"bad3")]


def test_jsonl_on_error_is_checked() -> None:
    with pytest.raises(ValueError):
        JsonLinesReader(MemorySource(b""), on_error="ignore")  # type: ignore[arg-type]


def test_jsonl_custom_loads() -> None:
    reader = JsonLinesReader(MemorySource(b"1\n2\n"), loads=lambda b: int(b) * 10)
    assert lines_of(reader) == [10, 20]


def test_context_manager_closes() -> None:
    with LineReader(MemorySource(b"a\nb\n" * 100), range_size=4, prefetch=2) as reader:
        next(iter(reader.batches(1)))
    assert reader._fetcher is not None and reader._fetcher._executor is None
