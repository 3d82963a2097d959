"""Join every record of a large JSON Lines object against a lookup table, as a chain of Lambda invocations.

Event: ``{"bucket": ..., "key": ..., "lookup_bucket": ..., "lookup_key": ...}``, optionally ``"id_field"``
(default ``"id"``) and ``"amount_field"`` (default ``"amount"``). The object at ``bucket/key`` holds one JSON
object per line, each with a string id and a numeric amount; blank lines are ignored. The lookup object is a
JSON object mapping ids to categories: ``{"sku-1": "books", ...}``.
Result: ``{"lines": N, "matched": M, "unmatched": N - M, "totals": {category: total}}``: ``N`` records,
``M`` of them with an id in the lookup, and per category the sum, as a float, of ``float(amount)`` over its
matched records, added in file order. A record without the id or amount field, an amount that is not a
number, or a line that is not JSON fails the chain.

The lookup goes through the warm-container cache (``run.s3.get``): the first hop in a container downloads it,
a warm hop revalidates it with one conditional GET (a 304, no body) and reuses the table already parsed. The
lookup is pinned like the data: if it changes while the chain runs, the chain fails with ObjectChangedError
naming both ETags rather than join some records against one version of the table and some against another.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env


class Totals(BaseModel):
    offset: int = 0  # byte offset of the next unread line
    lines: int = 0
    matched: int = 0
    totals: dict[str, float] = {}


@functools.lru_cache(maxsize=1)
def parse_lookup(data: bytes) -> dict[str, str]:
    """The table in ``data``, parsed once per container: a warm hop gets the very same cached bytes object back
    from ``run.s3.get``, whose hash Python keeps, so finding it here costs nothing."""
    table = json.loads(data)
    if not isinstance(table, dict):
        raise ValueError(f"the lookup must be a JSON object of id -> category, not {type(table).__name__}")
    return table


# Bad input (a missing field, an amount that is not a number) fails the chain at once: a retry cannot help.
@recursive(state=Totals, ledger=ledger_from_env(), permanent_errors=(KeyError, TypeError, ValueError))
def handler(event: dict[str, Any], state: Totals, run: Run) -> Generator[None, None, dict[str, Any]]:
    id_field, amount_field = event.get("id_field", "id"), event.get("amount_field", "amount")
    lookup = run.s3.open(event["lookup_bucket"], event["lookup_key"])  # the first hop pins its ETag
    table = parse_lookup(run.s3.get(lookup.bucket, lookup.key))
    lookup.read(0, 1)  # sent with IfMatch: raises ObjectChangedError if the table is no longer the pinned one
    totals = state.totals
    for batch in run.s3.jsonl(event["bucket"], event["key"], start=state.offset).batches(10_000):
        for record in batch.records:
            category = table.get(record[id_field])
            if category is not None:
                state.matched += 1
                totals[category] = totals.get(category, 0.0) + float(record[amount_field])
        state.lines += len(batch.records)
        state.offset = batch.end
        yield  # a safe point: the runner may hand off here, with the state as it is now
    return {
        "lines": state.lines,
        "matched": state.matched,
        "unmatched": state.lines - state.matched,
        "totals": totals,
    }
