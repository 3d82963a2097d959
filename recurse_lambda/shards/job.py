"""How the runner drives a sharded job (see :mod:`recurse_lambda.shards.plan`) through the ledger.

The job is a chain of its own. Its hop 0 plans the shards (checkpointed, so a retry splits the same way),
starts one chain per shard (idempotent starts), hands the job off to hop 1 *without* invoking it, and only then
invokes the shards: while the shards run, the job is unowned, so a failing shard can always fail it. Each
shard that finishes adds its index to the job's ``joined`` set (the ledger's ``join``); the join that makes the
set complete sends the job's envelope for its current hop, and that invocation, which claims the job like any
hop, runs ``reduce`` and finishes the job. A duplicate of that envelope is dropped at the claim, and a retry
reruns ``reduce`` from the shards' committed results, so the job's result is committed exactly once.

A shard that fails or is cancelled ends its job at once with the ledger's ``abort`` (FAILED or CANCELLED, naming
the shard), which needs no ownership: an invocation holding the job meanwhile is fenced off at its next write,
so the job never waits for a delivery that may not come. Any delivery of a shard that has already ended
re-drives its join (or its abort), so a crash between a shard's end and its join is repaired by Lambda's retry.
A job woken before its last shard ended (after a resume, or a resent split) re-sends the invokes of shards that
never started and hands itself on to the next hop, where the last join will find it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..chain.context import HopContext, envelope_of
from ..chain.drive import Finished
from ..chain.first import initial_progress
from ..chain.report import chain_ended
from ..chain.run import Run
from ..chain.world import Outcome
from ..core.ledger import ChainRecord, ChainStatus, Ledger
from ..core.progress import Progress
from ..errors import ConfigurationError, LedgerConflict, LedgerError, LostLeaseError
from .plan import (
    SHARD_ID_PREFIX,
    SHARD_KEY,
    ObjectInfo,
    Part,
    Shard,
    plan_shards,
    shard_chain_ids,
    shard_part,
)

log = logging.getLogger("recurse_lambda")


def shard_spec(event: Any) -> Mapping[str, Any] | None:
    """A shard chain's place in its job (``job``, ``index``, ``count``, ``parts``), or None for other chains."""
    if isinstance(event, Mapping):
        spec = event.get(SHARD_KEY)
        if isinstance(spec, Mapping):
            return spec
    return None


def user_event(event: Any) -> Any:
    """The event the user's handler sees: a shard sees its job's event."""
    return event["event"] if shard_spec(event) is not None else event


def shard_view(spec: Mapping[str, Any], run: Run) -> Shard:
    parts = [Part.from_json(p) for p in spec["parts"]]
    return Shard(str(spec["job"]), int(spec["index"]), int(spec["count"]), parts, lambda: run.s3)


def is_job(record: ChainRecord) -> bool:
    return isinstance(record.progress, Mapping) and "shards" in record.progress


# ---------------------------------------------------------------------------------------------------- the job


def drive_job(ctx: HopContext, state: Any, run: Run) -> Finished | dict[str, Any]:
    """One invocation of a sharded job: split it, or wait for its shards (the invocation's response), or
    reduce their results (:class:`Finished`: the runner finishes the job with it)."""
    env, ledger, config = ctx.env, ctx.ledger, ctx.config
    assert env is not None and ledger is not None and config.shards is not None
    plan = ctx.carried().shards
    if plan is None:
        lister = ctx.world.lister
        if lister is None:
            raise ConfigurationError(
                "a sharded job needs a lister for its source (World.lister); this world has none"
            )
        objects = lister(config.shards.source(env.event))
        read = stored_bytes(run) if config.shards.compression == "auto" else None
        parts = plan_shards(objects, config.shards.count, config.shards.min_bytes, read)
        plan = {
            "count": len(parts),
            "parts": [[p.to_json() for p in ps] for ps in parts],
            "started": False,
            "ids": SHARD_ID_PREFIX,  # shard chain ids live in the reserved namespace (older plans lack this)
        }
        ctx.carry(shards=plan)
        ctx.checkpoint(state, run)  # a retry splits exactly the same way, even if the prefix changed
    n = int(plan["count"])
    record = ctx.record
    assert record is not None
    shards: list[ChainRecord] = []
    if plan.get("started") and len(record.joined) < n:
        shards = [r for r in shard_records(ctx, plan) if r is not None]
        for r in shards:
            part = r.chain_id.rsplit("/", 1)[-1]
            if r.status is ChainStatus.SUCCEEDED and part not in record.joined:
                # It ended while the job was not RUNNING (failed, then resumed): its join was refused then.
                try:
                    record = ledger.join(env.chain_id, part=part, now=ctx.clock.time())
                except LedgerConflict as conflict:  # aborted (or cancelled) while this invocation held it
                    raise LostLeaseError(
                        f"join refused for job {env.chain_id}", conflict.current
                    ) from conflict
    if len(record.joined) >= n:
        return Finished(config.shards.reduce(shard_results(ctx, plan)))
    if not plan.get("started"):
        shards = start_shards(ctx, plan)
        ctx.carry(shards={**plan, "started": True})
    # Hand the job on before invoking anything: while its shards run nobody owns it, so a failing shard can
    # fail it and the last join finds it at this new hop.
    handed = ledger.hand_off(
        env.chain_id,
        hop=env.hop,
        owner=ctx.request_id,
        progress=ctx.snapshot(state, run).to_json(),
        now=ctx.clock.time(),
    )
    sent = send_unstarted(ctx, shards)
    if len(handed.joined) >= n:
        wake_job(ctx, handed)  # the last shard joined before the hand-off, so it could not wake the job
    outcome = Outcome.SPLIT if not plan.get("started") else Outcome.WAITING
    return ctx.respond(outcome, ChainStatus.RUNNING, shards=n, joined=len(handed.joined), sent=sent)


def stored_bytes(run: Run) -> Callable[[ObjectInfo, int, int], bytes]:
    """``read(object, start, end)``: its stored bytes, through the job's ``run.s3`` (pinned like any read)."""

    def read(o: ObjectInfo, start: int, end: int) -> bytes:
        # Pinned to the version listed (the one the shards read), with no HEAD of its own.
        run.s3.pins.setdefault(
            f"{o.bucket}/{o.key}", {"etag": o.etag, "version_id": o.version_id, "size": o.size}
        )
        chunks = run.s3.reader("chunks", o.bucket, o.key, start, end=end, compression=None)
        return b"".join(chunks)

    return read


def start_shards(ctx: HopContext, plan: Mapping[str, Any]) -> list[ChainRecord]:
    env, ledger, config = ctx.env, ctx.ledger, ctx.config
    assert env is not None and ledger is not None
    n = int(plan["count"])
    function = ctx.target()
    first: Progress = initial_progress(config, env.event)
    records = []
    for i, (chain_id, parts) in enumerate(
        zip(shard_chain_ids(env.chain_id, plan), plan["parts"], strict=True)
    ):
        pins = dict(Part.from_json(p).pin for p in parts)
        record, _ = ledger.start(
            chain_id,
            progress=first.with_(pins=pins).to_json(),
            event={
                SHARD_KEY: {"job": env.chain_id, "index": i, "count": n, "parts": parts},
                "event": env.event,
            },
            now=ctx.clock.time(),
            function=function,
        )
        records.append(record)
    return records


def shard_records(ctx: HopContext, plan: Mapping[str, Any]) -> list[ChainRecord | None]:
    assert ctx.env is not None and ctx.ledger is not None
    return [ctx.ledger.get(chain_id) for chain_id in shard_chain_ids(ctx.env.chain_id, plan)]


def shard_results(ctx: HopContext, plan: Mapping[str, Any]) -> list[Any]:
    """The shards' results in shard order; every shard of a complete join has SUCCEEDED."""
    results = []
    for i, record in enumerate(shard_records(ctx, plan)):
        if record is None or record.status is not ChainStatus.SUCCEEDED:
            raise LedgerError(
                f"shard {i} of job {ctx.env.chain_id if ctx.env else '?'} is joined but "
                f"{record.status if record else 'missing'}"
            )
        results.append(record.result)
    return results


def send_unstarted(ctx: HopContext, records: list[ChainRecord]) -> int:
    """Invoke every shard that waits for its first (or resumed) hop and that nobody has claimed yet.

    A shard already in Lambda's queue gets a second delivery, which its claim drops as a duplicate.
    """
    assert ctx.env is not None
    sent = 0
    for r in records:
        if r.status is ChainStatus.RUNNING and r.owner is None and r.attempts == 0:
            ctx.send(envelope_of(r, ctx.env.code_version))
            sent += 1
    return sent


def wake_job(ctx: HopContext, job: ChainRecord) -> None:
    """Send the job's envelope for its current hop: that invocation reduces (or waits, if woken early)."""
    assert ctx.env is not None
    if job.status is not ChainStatus.RUNNING or job.hop == 0:
        return  # ended, or still splitting: the splitter sees the complete join after its hand-off
    ctx.send(envelope_of(job, ctx.env.code_version))


# ---------------------------------------------------------------------------------------------------- a shard


def shard_succeeded(ctx: HopContext, spec: Mapping[str, Any]) -> None:
    """Count the finished shard in its job; the join that completes the set wakes the job to reduce."""
    assert ctx.env is not None and ctx.ledger is not None
    job_id = str(spec["job"])
    try:
        part = shard_part(int(spec["index"]), int(spec["count"]))
        job = ctx.ledger.join(job_id, part=part, now=ctx.clock.time())
    except LedgerConflict as conflict:
        status = conflict.current.status if conflict.current is not None else "missing"
        log.info("shard %s finished, but its job %s is %s", ctx.env.chain_id, job_id, status)
        return
    if len(job.joined) >= int(spec["count"]):
        wake_job(ctx, job)


def end_job(
    ledger: Ledger,
    spec: Mapping[str, Any],
    shard_id: str,
    status: ChainStatus,
    error: str | None,
    now: float,
) -> ChainRecord | None:
    """End the shard's job as ``status`` (FAILED or CANCELLED), naming the shard, whoever holds the job.

    Returns the job's record, or None when the job had already ended (or the shard had joined: a stale report).
    """
    index, count = int(spec["index"]), int(spec["count"])
    if status is ChainStatus.CANCELLED:
        message = f"shard {index} of {count} ({shard_id}) was cancelled"
    else:
        message = f"shard {index} of {count} ({shard_id}) failed: {error or 'failed'}"
    job_id = str(spec["job"])
    try:
        return ledger.abort(job_id, part=shard_part(index, count), status=status, error=message, now=now)
    except LedgerConflict as conflict:
        current = conflict.current.status if conflict.current is not None else "missing"
        log.info("shard %s ended %s, but its job %s is %s", shard_id, status, job_id, current)
        return None


def shard_failed(
    ctx: HopContext, spec: Mapping[str, Any], error: str | None, status: ChainStatus = ChainStatus.FAILED
) -> None:
    """End the shard's job, naming the shard: FAILED (``resume`` of the job continues it) or CANCELLED."""
    assert ctx.env is not None and ctx.ledger is not None
    record = end_job(ctx.ledger, spec, ctx.env.chain_id, status, error, ctx.clock.time())
    if record is None:
        return
    chain_ended(ctx, status, record, record.error, env=envelope_of(record))


def redrive(ctx: HopContext, current: ChainRecord) -> None:
    """A delivery of a shard that has already ended repeats what its end had to do to the job."""
    spec = shard_spec(current.event)
    if spec is None:
        return
    if current.status is ChainStatus.SUCCEEDED:
        shard_succeeded(ctx, spec)
    elif current.status is ChainStatus.FAILED:
        shard_failed(ctx, spec, current.error)
    elif current.status is ChainStatus.CANCELLED:
        shard_failed(ctx, spec, None, ChainStatus.CANCELLED)
