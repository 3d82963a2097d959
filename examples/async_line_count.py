"""Count the lines of an S3 object, as a chain of Lambda invocations, written as an async generator.

The same contract as ``examples/line_count.py``. Event: ``{"bucket": ..., "key": ...}``. Result:
``{"lines": L, "bytes": B, "checksum": C}``, where the content's bytes are split at ``\\n`` (a last piece without
one counts if it is not empty), a line's content excludes its ``\\n`` and one ``\\r`` before it, ``C`` is the
sum of ``zlib.crc32(content)`` over all lines, modulo 2**64, and ``B`` is the content's size. A gzip or zstd object
is counted decompressed, and the result also holds ``"object_bytes"``, the stored size.

The batches are read on the reader's own thread (``reader.abatches``), so the event loop stays free for the handler's
concurrent awaits between two safe points. Python forbids ``return value`` in an async generator: the result is
``run.result``, set just before the generator ends.

Run it locally: ``recurse-lambda simulate examples.async_line_count:handler --put data.txt=s3://demo/data.txt
--event '{"bucket": "demo", "key": "data.txt"}'``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncGenerator
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
async def handler(event: dict[str, Any], state: Progress, run: Run) -> AsyncGenerator[None, None]:
    reader = run.s3.lines(event["bucket"], event["key"], start=state.cursor, encoding=None)
    async with reader.abatches(20_000) as batches:
        async for batch in batches:
            state.checksum = (state.checksum + sum(map(zlib.crc32, batch.records))) % 2**64
            state.lines += len(batch.records)
            state.cursor, state.offset = batch.cursor, batch.end
            yield  # a safe point: the runner may hand off here, with the state as it is now
    # The pinned size may need a HEAD request, which blocks: it runs on a thread, not on the loop.
    size = await asyncio.to_thread(lambda: reader.source.size)
    run.result = {"lines": state.lines, "bytes": size, "checksum": state.checksum}
    if reader.compression in ("gzip", "zstd"):  # read decompressed: the content ended where the reader stands
        run.result.update(bytes=reader.position, object_bytes=size)
