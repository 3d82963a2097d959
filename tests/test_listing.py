"""The resumable listing (s3/_listing.py) on moto: every key once, in order, across resumptions at any batch end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda.s3._listing import KeyLister, make_keys

BUCKET = "listed"


@pytest.fixture
def s3(moto_s3: Any) -> Iterator[Any]:
    moto_s3.create_bucket(Bucket=BUCKET)
    for i in range(57):
        moto_s3.put_object(Bucket=BUCKET, Key=f"p/{i:03d}-ü", Body=b"x" * i)
    moto_s3.put_object(Bucket=BUCKET, Key="other", Body=b"")
    yield moto_s3


def test_records_have_key_size_etag_time_and_class(s3: Any) -> None:
    records = list(KeyLister(s3, BUCKET, "p/"))
    assert [r.key for r in records] == sorted(f"p/{i:03d}-ü" for i in range(57))
    first = records[1]
    assert first.size == 1 and first.etag == "9dd4e461268c8034f5c8564e155c67a6"  # md5(b"x"), no quotes
    assert first.storage_class == "STANDARD" and first.last_modified.startswith("20")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.integers(1, 20), stops=st.lists(st.integers(0, 10), max_size=8))
def test_resuming_at_any_batch_end_lists_every_key_once_in_order(
    s3: Any, page: int, stops: list[int]
) -> None:
    seen: list[str] = []
    cursor = ""
    for stop in [*stops, 10**6]:  # each hop reads `stop` batches, then hands off its cursor
        lister = make_keys(lambda: s3, BUCKET, "p/", start_after=cursor, page_size=page)
        for n, batch in enumerate(lister.batches()):
            if n == stop:
                break
            assert len(batch) <= page
            seen += [r.key for r in batch]
            cursor = batch.end
            assert cursor == batch.records[-1].key
        else:
            break
    assert seen == sorted(f"p/{i:03d}-ü" for i in range(57))


def test_an_empty_prefix_and_a_cursor_past_the_end(s3: Any) -> None:
    assert list(KeyLister(s3, BUCKET, "none/")) == []
    assert list(KeyLister(s3, BUCKET, "p/", start_after="p/999")) == []
    with pytest.raises(ValueError):
        KeyLister(s3, BUCKET, page_size=1001)
