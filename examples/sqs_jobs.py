"""Grep jobs from an SQS queue: each message describes one job, and each job runs as its own chain.

Message body: ``{"bucket": ..., "key": ..., "pattern": ...}``. Result of each chain: ``{"lines": L, "matches":
M}``, the number of lines of the object and of those that contain ``pattern`` (UTF-8 text; lines split as in
``line_count``). Any S3 object works, whatever its size: the chain hands off before the function's timeout.

Deployed behind an SQS event source mapping with ``FunctionResponseTypes: [ReportBatchItemFailures]``, the
handler answers each batch with ``{"batchItemFailures": [...]}``: a message whose chain could not be started (a
body that is not JSON or lacks a field, a throttled invoke, the ledger unreachable) is delivered again, the
others are not. The same job sent twice starts one chain: the chain id is a digest of bucket, key and pattern.
The function's own hops (continuation envelopes) and direct invokes of a job go to the same handler.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, keys, recursive
from recurse_lambda.aws import ledger_from_env


class Grep(BaseModel):
    offset: int = 0  # byte offset of the next unread line
    lines: int = 0
    matches: int = 0


@recursive(
    state=Grep,
    ledger=ledger_from_env(),  # stateless when no table is configured: then a redelivered job runs again
    chain_id=keys.from_fields("bucket", "key", "pattern"),  # a message without them is reported as failed
)
def handler(event: dict[str, Any], state: Grep, run: Run) -> Generator[None, None, dict[str, int]]:
    pattern = str(event["pattern"])
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset)
    for batch in reader.batches(20_000):
        state.matches += sum(pattern in line for line in batch.records)
        state.lines += len(batch.records)
        state.offset = batch.end
        yield  # a safe point: the runner may hand off here, with the state as it is now
    return {"lines": state.lines, "matches": state.matches}
