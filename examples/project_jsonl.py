"""Project a JSON Lines file onto three fields, written exactly once to another S3 object, across hops.

Event: ``{"bucket", "key", "out_bucket", "out_key"}``. The input is read as JSON Lines: a blank line (JSON
whitespace only) is ignored; a line that is not valid JSON, or whose value is not a JSON object, is skipped and
counted. For every object record, in input order, one line

    json.dumps({"id": rec.get("id"), "user": rec.get("user"), "amount": rec.get("amount")},
               ensure_ascii=False, separators=(",", ":")) + "\\n"

is written, UTF-8, to ``s3://out_bucket/out_key`` through the resumable writer. Result:
``{"records": lines written, "skipped": lines skipped, "output": {"bucket", "key", "etag", "bytes"}}``.

The output's position (upload id, parts, a reference to the bytes that do not fill a part yet) is a field of the
state, so it is committed with the input offset at every safe point: a retry or the next hop continues the same
object, and the object appears once, when the chain completes it. An object already at the output key fails the
job before any work (``if_exists="replace"`` replaces it instead).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env
from recurse_lambda.s3 import WriterState

JSON_WHITESPACE = b" \t\r\n"


class Progress(BaseModel):
    offset: int = 0  # byte offset of the next unread line
    records: int = 0
    skipped: int = 0
    out: WriterState = WriterState()  # the output's position, committed with the offset


def _reject(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def project(line: bytes) -> bytes | None:
    """The output line for one input line; None when the line is skipped (not JSON, or not an object)."""
    try:
        rec = json.loads(line.decode("utf-8"), parse_constant=_reject)
    except ValueError:  # not UTF-8, or not JSON (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return None
    if not isinstance(rec, dict):
        return None
    value = {"id": rec.get("id"), "user": rec.get("user"), "amount": rec.get("amount")}
    # "surrogatepass": a lone surrogate escape ("\\ud800") is valid JSON; it is kept rather than fail the job.
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
        "utf-8", "surrogatepass"
    )


@recursive(state=Progress, ledger=ledger_from_env())
def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, Any]]:
    out = run.s3.writer(event["out_bucket"], event["out_key"], state.out)  # checks the key first
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset, encoding=None)
    for batch in reader.batches(20_000):
        lines = []
        for line in batch.records:
            if not line.strip(JSON_WHITESPACE):
                continue
            projected = project(line)
            if projected is None:
                state.skipped += 1
            else:
                lines.append(projected)
        out.write(b"".join(lines))
        state.records += len(lines)
        state.offset = batch.end
        yield  # a safe point: the offset, the counts and the output's position are committed together
    output = out.complete()
    return {"records": state.records, "skipped": state.skipped, "output": output}
