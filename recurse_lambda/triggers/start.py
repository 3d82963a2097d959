"""Starting chains from trigger events: one chain per job, idempotently, and the batch answer Lambda reads.

The chain is created in the ledger under its business key, then hop 0 is sent to this same function version
as a continuation envelope, so the hop's claim drops any duplicate delivery. A record whose chain cannot be
started is reported in ``batchItemFailures`` (batch sources) or fails the invocation (S3, EventBridge, SNS), so
only it is delivered again; a record whose chain exists already joins it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..chain.deliveries import error_text
from ..chain.hop import codec_for
from ..chain.observe import log_json
from ..chain.world import World
from ..config import ChainConfig
from ..core.codec import Envelope, is_envelope
from ..core.invoke import same_version_target
from ..core.ledger import ChainStatus
from ..core.state_codec import dump_state
from ..errors import ConfigurationError, TriggerError
from ..keys import default as default_chain_id
from ..keys import s3_object
from ..shards.plan import SHARD_KEY
from .parse import S3_JOB_FIELDS, Source, TriggerRecord, trigger_records

log = logging.getLogger("recurse_lambda")

# Stop starting records when less than twice the slowest record so far is left, and never start one in the
# last tenth of the invocation (at most this many seconds): the rest are reported as failed and delivered
# again, rather than the whole batch timing out.
MAX_FLOOR_S = 0.5


@dataclass(frozen=True, slots=True)
class ChainStart:
    """What starting one job did: ``outcome`` is ``started``, ``resent`` or ``joined``.

    ``started``: this call created the chain and sent hop 0. ``resent``: the chain existed at hop 0, never
    claimed (an earlier start may have died before its invoke), so hop 0 was sent again; a duplicate is dropped
    by the hop's claim. ``joined``: the chain was already running or had ended; nothing was sent. ``status``
    and ``hop`` are the chain's as the ledger holds them (``RUNNING`` and 0 in stateless mode).
    """

    chain_id: str
    outcome: str
    status: str
    hop: int = 0

    @property
    def created(self) -> bool:
        return self.outcome == "started"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_chain_id(config: ChainConfig, job: Any) -> str:
    """``chain_id=`` of the job; by default an S3 job is keyed on its object, anything else on its digest."""
    if config.chain_id is not None:
        return str(config.chain_id(job))
    if isinstance(job, Mapping) and tuple(job) == S3_JOB_FIELDS and job["etag"]:
        return s3_object(job)  # bucket, key and ETag, with no request: the ETag is in the job
    return default_chain_id(job)


def job_pins(job: Any) -> dict[str, dict[str, Any]]:
    """An S3 job's object pinned to the notification's ETag, so an upload after the event fails the chain.

    ``run.s3`` would otherwise pin the object at its first read, which may already be a newer upload.
    """
    if not (isinstance(job, Mapping) and tuple(job) == S3_JOB_FIELDS and job["etag"]):
        return {}
    pin = {"etag": f'"{job["etag"]}"', "version_id": job["version_id"], "size": job["size"]}
    return {f"{job['bucket']}/{job['key']}": pin}


def start_job(config: ChainConfig, job: Any, context: Any, world: World) -> ChainStart:
    """Start (or join) the chain of ``job`` and send its hop 0; raises when the chain could not be started."""
    if is_envelope(job) or _is_trigger(job):
        raise TriggerError("a job cannot be a continuation envelope or another trigger event")
    if isinstance(job, Mapping) and SHARD_KEY in job:  # it would be signed below and run as a shard of a job
        raise TriggerError(f"a job cannot carry the internal shard marker {SHARD_KEY!r}")
    chain_id = job_chain_id(config, job)
    state = config.initial_state(job) if config.initial_state else config.state()
    if not isinstance(state, config.state):
        raise ConfigurationError(
            f"initial_state returned {type(state).__name__}, not {config.state.__name__}"
        )
    progress = {"state": dump_state(state), "chunks": 0, "pins": job_pins(job)}
    version = str(getattr(context, "function_version", "$LATEST") or "$LATEST")
    target = same_version_target(context)
    codec = codec_for(config, world)
    env = Envelope(chain_id, 0, progress, job, world.clock.time(), version)
    payload = codec.encode(env)  # an oversized job fails here, before the ledger holds anything
    ledger = world.ledger
    if ledger is None:  # stateless: nothing to join, so every delivery of the job starts it again
        world.invoker.invoke_async(target, payload)
        return ChainStart(chain_id, "started", str(ChainStatus.RUNNING))
    record, created = ledger.start(
        chain_id, progress=progress, event=job, now=env.started_at, function=target
    )
    if created:
        world.invoker.invoke_async(target, payload)
        return ChainStart(chain_id, "started", str(record.status))
    if (
        record.status is ChainStatus.RUNNING
        and record.hop == 0
        and record.attempts == 0
        and record.owner is None
    ):
        again = Envelope.from_record(record, code_version=version)
        world.invoker.invoke_async(target, codec.encode(again))
        return ChainStart(chain_id, "resent", str(record.status))
    return ChainStart(chain_id, "joined", str(record.status), record.hop)


def _is_trigger(job: Any) -> bool:
    try:
        return trigger_records(job) is not None
    except TriggerError:
        return True


def _start_record(config: ChainConfig, rec: TriggerRecord, context: Any, world: World) -> list[ChainStart]:
    return [start_job(config, job, context, world) for job in rec.jobs(config.s3_events)]


def dispatch(config: ChainConfig, event: Any, context: Any, world: World) -> dict[str, Any]:
    """Start one chain per job of a trigger event; the answer Lambda reads (batch sources) or a summary.

    Raises :class:`TriggerError` for an empty or malformed event, and, for an S3 notification, EventBridge
    event or SNS notification, when any record could not be started (Lambda then retries the whole event; started chains join).
    """
    found = trigger_records(event)
    if found is None:
        raise TriggerError(
            "not a trigger event (an S3, EventBridge, SNS, SQS, Kinesis or DynamoDB stream event)"
        )
    source, records = found
    clock = world.clock
    started_at = clock.now()
    budget = context.get_remaining_time_in_millis() / 1000.0
    deadline, floor = started_at + budget, min(MAX_FLOOR_S, budget / 10)
    starts: list[ChainStart] = []
    failed: list[tuple[TriggerRecord, str]] = []
    failed_groups: set[str] = set()
    slowest = 0.0
    for rec in records:
        t0 = clock.now()
        why: str | None = None
        if rec.group is not None and rec.group in failed_groups:
            why = f"not started: an earlier message of FIFO group {rec.group!r} failed"
        elif deadline - t0 < max(floor, 2 * slowest):
            why = "not started: the invocation is running out of time"
        else:
            try:
                starts.extend(_start_record(config, rec, context, world))
            except Exception as exc:  # any error fails this record alone; its source delivers it again
                why = error_text(exc)
            slowest = max(slowest, clock.now() - t0)
        if why is not None:
            failed.append((rec, why))
            if rec.group is not None:  # keep the group's order: its later messages wait for this one
                failed_groups.add(rec.group)
    for rec, why in failed:
        log.warning("%s record %s (Records[%d]) failed: %s", source, rec.identifier or "-", rec.index, why)
    _log_summary(source, records, starts, failed, context, clock.now() - started_at)
    if source.batch:
        return {"batchItemFailures": [{"itemIdentifier": rec.identifier} for rec, _ in failed]}
    if failed:
        rec, why = failed[0]
        raise TriggerError(
            f"{len(failed)} of {len(records)} {source} record(s) could not start a chain (Records[{rec.index}]: "
            f"{why}); Lambda retries the whole event, and the chains already started are joined, not restarted"
        )
    return {"outcome": "dispatched", "source": str(source), "chains": [s.as_dict() for s in starts]}


def _log_summary(
    source: Source,
    records: list[TriggerRecord],
    starts: list[ChainStart],
    failed: list[tuple[TriggerRecord, str]],
    context: Any,
    duration: float,
) -> None:
    outcomes = {o: sum(1 for s in starts if s.outcome == o) for o in ("started", "resent", "joined")}
    log_json(
        log,
        logging.WARNING if failed else logging.INFO,
        {
            "event": "trigger",
            "source": str(source),
            "request_id": str(getattr(context, "aws_request_id", "")),
            "records": len(records),
            "failed": len(failed),
            **outcomes,
            "duration_s": round(duration, 6),
        },
    )
