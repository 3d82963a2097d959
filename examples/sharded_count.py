"""Count the lines and words of one large text object (or of every object under a prefix) with parallel shards.

The job's event is ``{"bucket": ..., "key": ...}`` or ``{"bucket": ..., "prefix": ...}``. The library cuts the
bytes into ``SHARDS`` equal ranges and runs each as its own chain; every shard reads the lines that begin in its
range (``run.shard.lines``), and when the last shard ends, ``merge`` combines their results once.

Run locally (an in-memory ledger, an embedded S3, virtual time)::

    recurse-lambda simulate examples.sharded_count:handler --put README.md=s3://demo/readme.txt \\
        --event '{"bucket": "demo", "key": "readme.txt"}' --timeline shards.svg
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, Shards, recursive
from recurse_lambda.aws import ledger_from_env

SHARDS = 8


class Count(BaseModel):
    offset: int = 0  # bytes from the start of this shard's range: where the next unread line begins
    lines: int = 0
    words: int = 0


def merge(results: list[dict[str, int]]) -> dict[str, int]:
    """The job's result: the shards' results (in shard order) added up."""
    return {"lines": sum(r["lines"] for r in results), "words": sum(r["words"] for r in results)}


@recursive(
    state=Count,
    ledger=ledger_from_env(),  # shards need a ledger: their join is recorded there
    shards=Shards(count=SHARDS, reduce=merge, min_bytes=1024),
)
def handler(event: dict[str, Any], state: Count, run: Run) -> Generator[None, None, dict[str, int]]:
    assert run.shard is not None  # a sharded job's code runs in its shards
    for batch in run.shard.lines(start=state.offset).batches(10_000):
        state.lines += len(batch)
        state.words += sum(len(line.split()) for line in batch)
        state.offset = batch.end
        yield
    return {"lines": state.lines, "words": state.words}
