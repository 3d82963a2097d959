"""Sum one column of a large CSV object per value of another, as a chain of Lambda invocations.

Event: ``{"bucket": ..., "key": ..., "group_by": COLUMN, "sum": COLUMN}``. The object is UTF-8 CSV (the excel
dialect: quoted fields may hold commas and newlines) whose first row names the columns.
Result: ``{"rows": N, "groups": {value: total}}``: ``N`` counts the data rows (blank lines are not rows), and
``total`` is the sum, as a float, of ``float(row[sum])`` over the rows whose ``group_by`` cell is ``value``,
added in file order. A column missing from the header, a ``sum`` cell that is missing or not a number, or
CSV the csv module rejects, fails the chain.
An object with no header row at all gives ``{"rows": 0, "groups": {}}``.

The cursor is the byte offset of the next unread row. The header is read once, by the first hop, and carried in
the state, so every later hop names the fields of its rows without reading the start of the object again.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env


class Totals(BaseModel):
    offset: int = 0  # byte offset of the next unread row
    header: list[str] | None = None  # the column names, once the first hop has read them
    rows: int = 0
    groups: dict[str, float] = {}


# Bad input (a missing column, a cell that is not a number) fails the chain at once: a retry cannot help.
@recursive(state=Totals, ledger=ledger_from_env(), permanent_errors=(KeyError, TypeError, ValueError))
def handler(event: dict[str, Any], state: Totals, run: Run) -> Generator[None, None, dict[str, Any]]:
    group_by, column = event["group_by"], event["sum"]
    reader = run.s3.csv(event["bucket"], event["key"], start=state.offset, header=state.header)
    state.header = reader.header
    if state.header is not None and not {group_by, column} <= set(state.header):
        raise KeyError(f"columns {group_by!r} and {column!r} are not both in the header {state.header}")
    groups = state.groups
    for batch in reader.batches(10_000):
        for row in batch.records:
            groups[row[group_by]] = groups.get(row[group_by], 0.0) + float(row[column])
        state.rows += len(batch.records)
        state.offset = batch.end
        yield  # a safe point: the runner may hand off here, with the state as it is now
    return {"rows": state.rows, "groups": groups}
