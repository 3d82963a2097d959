"""Count the lines of an S3 object, as a chain of Lambda invocations; a gzip or zstd object is counted decompressed.

Event: ``{"bucket": ..., "key": ...}``. Result: ``{"lines": L, "bytes": B, "checksum": C}``, where the content's
bytes are split at ``\\n`` (a last piece without one counts if it is not empty), a line's content excludes its
``\\n`` and one ``\\r`` before it, ``C`` is the sum of ``zlib.crc32(content)`` over all lines, modulo 2**64, and
``B`` is the content's size. The content is the object's bytes as stored, or, for a gzip or zstd object (told by
its first bytes), its decompressed bytes: the result then also holds ``"object_bytes"``, the stored size.

The state keeps ``batch.cursor``: a byte offset for a plain object, a small dict (a decompression cursor) for a
compressed one, which the next hop resumes from without decompressing from the start. Every ranged GET is pinned
to the ETag the first hop saw, so a chain never mixes two versions of the object.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env


class Progress(BaseModel):
    cursor: int | dict[str, Any] = 0  # where the next hop resumes: batch.cursor
    offset: int = 0  # offset of the next unread line in the (decompressed) content: batch.end
    lines: int = 0
    checksum: int = 0


@recursive(state=Progress, ledger=ledger_from_env())  # stateless when no table is configured
def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, int]]:
    reader = run.s3.lines(event["bucket"], event["key"], start=state.cursor, encoding=None)
    for batch in reader.batches(20_000):
        state.checksum = (state.checksum + sum(map(zlib.crc32, batch.records))) % 2**64
        state.lines += len(batch.records)
        state.cursor, state.offset = batch.cursor, batch.end
        yield  # a safe point: the runner may hand off here, with the state as it is now
    result = {"lines": state.lines, "bytes": reader.source.size, "checksum": state.checksum}
    if reader.compression in ("gzip", "zstd"):  # read decompressed: the content ended where the reader stands
        result.update(bytes=reader.position, object_bytes=reader.source.size)
    return result
