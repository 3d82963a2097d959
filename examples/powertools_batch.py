"""Start chains from a Powertools ``BatchProcessor`` record handler (``pip install "recurse-lambda[powertools]"``).

A ``@recursive`` handler answers SQS batches by itself (see ``sqs_jobs.py``). Use this form when the function
already processes its batches with Powertools: the record handler calls :func:`start_chain` for each job of the
record, which raises when the chain cannot be started, so Powertools reports exactly that record in
``batchItemFailures``. The chain's hops are invocations of this same function, so :func:`handler` routes
everything that is not an SQS batch (continuation envelopes, direct invokes) to the chain.

Each job is ``{"bucket": ..., "key": ...}`` (or an S3 event notification sent to the queue, which
:func:`record_jobs` unwraps into one job per object); each chain counts the object's lines and bytes.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env
from recurse_lambda.triggers import is_trigger_event, record_jobs, start_chain

processor = BatchProcessor(event_type=EventType.SQS)


class Count(BaseModel):
    offset: int = 0
    lines: int = 0
    bytes: int = 0


@recursive(state=Count, ledger=ledger_from_env())
def chain(event: dict[str, Any], state: Count, run: Run) -> Generator[None, None, dict[str, int]]:
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset, encoding=None)
    for batch in reader.batches(20_000):
        state.lines += len(batch.records)
        state.bytes = batch.end
        state.offset = batch.end
        yield
    return {"lines": state.lines, "bytes": state.bytes}


def record_handler(record: SQSRecord, lambda_context: Any) -> list[str]:
    """Start the chain of every job in the message; an exception marks the message as failed."""
    return [start_chain(chain, job, lambda_context).chain_id for job in record_jobs(record.raw_event)]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point: SQS batches through Powertools, the chain's own hops to the chain."""
    if is_trigger_event(event):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    return chain(event, context)
