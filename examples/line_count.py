"""Count the lines of an S3 object, as a chain of Lambda invocations.

Event: ``{"bucket": ..., "key": ...}``. Result: ``{"lines": L, "bytes": B, "checksum": C}``, where the object's
bytes are split at ``\\n`` (a last piece without one counts if it is not empty), a line's content excludes its
``\\n`` and one ``\\r`` before it, and ``C`` is the sum of ``zlib.crc32(content)`` over all lines, modulo 2**64.

The cursor is a byte offset; every ranged GET is pinned to the ETag the first hop saw, so a chain never mixes
two versions of the object.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env


class Progress(BaseModel):
    offset: int = 0  # byte offset of the next unread line
    lines: int = 0
    checksum: int = 0


@recursive(state=Progress, ledger=ledger_from_env())  # stateless when no table is configured
def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, int]]:
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset, encoding=None)
    for batch in reader.batches(20_000):
        state.checksum = (state.checksum + sum(map(zlib.crc32, batch.records))) % 2**64
        state.lines += len(batch.records)
        state.offset = batch.end
        yield  # a safe point: the runner may hand off here, with the state as it is now
    size = run.s3.open(event["bucket"], event["key"]).size
    return {"lines": state.lines, "bytes": size, "checksum": state.checksum}
