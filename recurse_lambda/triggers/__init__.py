"""Start chains from event sources: S3 notifications (direct or through EventBridge), SNS, SQS, Kinesis,
DynamoDB streams; see docs/triggers.md.

A ``@recursive`` handler dispatches such events by itself: each job a record describes starts one chain,
idempotently (by business key, with a ledger), and a batch source gets ``{"batchItemFailures": [...]}`` naming
exactly the records whose chain could not be started. The functions here are for code that handles records
itself, such as a Powertools ``BatchProcessor`` record handler::

    def record_handler(record, lambda_context):
        for job in record_jobs(record.raw_event):
            start_chain(chain, job, lambda_context)  # raises: Powertools reports the record as failed
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TriggerError
from .parse import DEFAULT_S3_EVENTS, S3_JOB_FIELDS, record_jobs, trigger_records
from .start import ChainStart, job_chain_id, start_job

if TYPE_CHECKING:
    from ..chain.handler import RecursiveHandler
    from ..chain.world import World

__all__ = [
    "DEFAULT_S3_EVENTS",
    "S3_JOB_FIELDS",
    "ChainStart",
    "TriggerError",
    "chain_id_of",
    "is_trigger_event",
    "record_jobs",
    "start_chain",
]


def start_chain(
    handler: RecursiveHandler, job: Any, context: Any, *, world: World | None = None
) -> ChainStart:
    """Start the chain of ``job`` (the first event of ``handler``'s chain), or join it if it exists.

    Hop 0 is sent asynchronously to the function version ``context`` names, which must run ``handler`` for
    continuation envelopes. Raises when the chain could not be started (the ledger or the invoke failed,
    ``chain_id=`` or ``initial_state=`` raised, the job is a trigger event itself); calling it again for the
    same job is safe. ``world`` defaults to the handler's AWS world (the simulator passes its own).
    """
    from ..chain.handler import RecursiveHandler  # the chain layer imports this package: import it late

    if not isinstance(handler, RecursiveHandler):
        raise TypeError(f"start_chain needs a @recursive handler, not {handler!r}")
    return start_job(handler.config, job, context, world if world is not None else handler.aws_world())


def chain_id_of(handler: RecursiveHandler, job: Any) -> str:
    """The chain id a job gets: ``chain_id=`` if set; an S3 job keys on bucket, key and ETag; else a digest."""
    return job_chain_id(handler.config, job)


def is_trigger_event(event: Any) -> bool:
    """Whether a ``@recursive`` handler dispatches ``event`` (raises :class:`TriggerError` if it is malformed)."""
    return trigger_records(event) is not None
