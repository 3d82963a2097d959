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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..chain.report import chain_ended
from ..chain.world import Outcome, Run
from ..core.codec import Envelope
from ..core.invoke import same_version_target
from ..core.ledger import ChainRecord, ChainStatus, Ledger
from ..core.state_codec import dump_state
from ..errors import LedgerConflict, LedgerError, LostLeaseError
from .plan import SHARD_ID_PREFIX, SHARD_KEY, Part, Shard, plan_shards, shard_chain_ids, shard_part

if TYPE_CHECKING:
    from ..chain.hop import Hop

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


def drive_job(inv: Hop, state: Any, run: Run) -> dict[str, Any]:
    """One invocation of a sharded job: split it, or wait for its shards, or reduce their results."""
    env, ledger, config = inv.env, inv.ledger, inv.config
    assert env is not None and ledger is not None and config.shards is not None
    progress = dict(env.progress)
    plan = progress.get("shards")
    if plan is None:
        from ..s3._objects import list_objects  # the adapter layer, imported only by a job's first hop

        client = (inv.world.s3_client or inv.world.warm.client_getter("s3"))()
        objects = list_objects(client, config.shards.source(env.event))
        parts = plan_shards(objects, config.shards.count, config.shards.min_bytes)
        plan = {
            "count": len(parts),
            "parts": [[p.to_json() for p in ps] for ps in parts],
            "started": False,
            "ids": SHARD_ID_PREFIX,  # shard chain ids live in the reserved namespace (older plans lack this)
        }
        progress["shards"] = plan
        inv.extra_progress["shards"] = plan
        inv._checkpoint(state, run)  # a retry splits exactly the same way, even if the prefix changed
    n = int(plan["count"])
    record = inv.record
    assert record is not None
    shards: list[ChainRecord] = []
    if plan.get("started") and len(record.joined) < n:
        shards = [r for r in shard_records(inv, plan) if r is not None]
        for r in shards:
            part = r.chain_id.rsplit("/", 1)[-1]
            if r.status is ChainStatus.SUCCEEDED and part not in record.joined:
                # It ended while the job was not RUNNING (failed, then resumed): its join was refused then.
                try:
                    record = ledger.join(env.chain_id, part=part, now=inv.clock.time())
                except LedgerConflict as conflict:  # aborted (or cancelled) while this invocation held it
                    raise LostLeaseError(
                        f"join refused for job {env.chain_id}", conflict.current
                    ) from conflict
    if len(record.joined) >= n:
        return inv._finish(config.shards.reduce(shard_results(inv, plan)), state, run)
    if not plan.get("started"):
        shards = start_shards(inv, plan)
        inv.extra_progress["shards"] = {**plan, "started": True}
    # Hand the job on before invoking anything: while its shards run nobody owns it, so a failing shard can
    # fail it and the last join finds it at this new hop.
    handed = ledger.hand_off(
        env.chain_id,
        hop=env.hop,
        owner=inv.request_id,
        progress=inv._progress(state, run),
        now=inv.clock.time(),
    )
    sent = send_unstarted(inv, shards)
    if len(handed.joined) >= n:
        wake_job(inv, handed)  # the last shard joined before the hand-off, so it could not wake the job
    outcome = Outcome.SPLIT if not plan.get("started") else Outcome.WAITING
    return inv._response(outcome, ChainStatus.RUNNING, shards=n, joined=len(handed.joined), sent=sent)


def start_shards(inv: Hop, plan: Mapping[str, Any]) -> list[ChainRecord]:
    env, ledger, config = inv.env, inv.ledger, inv.config
    assert env is not None and ledger is not None
    n = int(plan["count"])
    function = same_version_target(inv.context)
    state = config.initial_state(env.event) if config.initial_state else config.state()
    records = []
    for i, (chain_id, parts) in enumerate(
        zip(shard_chain_ids(env.chain_id, plan), plan["parts"], strict=True)
    ):
        pins = dict(Part.from_json(p).pin for p in parts)
        record, _ = ledger.start(
            chain_id,
            progress={"state": dump_state(state), "chunks": 0, "pins": pins},
            event={
                SHARD_KEY: {"job": env.chain_id, "index": i, "count": n, "parts": parts},
                "event": env.event,
            },
            now=inv.clock.time(),
            function=function,
        )
        records.append(record)
    return records


def shard_records(inv: Hop, plan: Mapping[str, Any]) -> list[ChainRecord | None]:
    assert inv.env is not None and inv.ledger is not None
    return [inv.ledger.get(chain_id) for chain_id in shard_chain_ids(inv.env.chain_id, plan)]


def shard_results(inv: Hop, plan: Mapping[str, Any]) -> list[Any]:
    """The shards' results in shard order; every shard of a complete join has SUCCEEDED."""
    results = []
    for i, record in enumerate(shard_records(inv, plan)):
        if record is None or record.status is not ChainStatus.SUCCEEDED:
            raise LedgerError(
                f"shard {i} of job {inv.env.chain_id if inv.env else '?'} is joined but "
                f"{record.status if record else 'missing'}"
            )
        results.append(record.result)
    return results


def send_unstarted(inv: Hop, records: list[ChainRecord]) -> int:
    """Invoke every shard that waits for its first (or resumed) hop and that nobody has claimed yet.

    A shard already in Lambda's queue gets a second delivery, which its claim drops as a duplicate.
    """
    assert inv.env is not None
    sent = 0
    for r in records:
        if r.status is ChainStatus.RUNNING and r.owner is None and r.attempts == 0:
            nxt = Envelope.from_record(r, code_version=inv.env.code_version)
            inv._invoke(inv.codec.encode(nxt))
            sent += 1
    return sent


def wake_job(inv: Hop, job: ChainRecord) -> None:
    """Send the job's envelope for its current hop: that invocation reduces (or waits, if woken early)."""
    assert inv.env is not None
    if job.status is not ChainStatus.RUNNING or job.hop == 0:
        return  # ended, or still splitting: the splitter sees the complete join after its hand-off
    nxt = Envelope.from_record(job, code_version=inv.env.code_version)
    inv._invoke(inv.codec.encode(nxt))


# ---------------------------------------------------------------------------------------------------- a shard


def shard_succeeded(inv: Hop, spec: Mapping[str, Any]) -> None:
    """Count the finished shard in its job; the join that completes the set wakes the job to reduce."""
    assert inv.env is not None and inv.ledger is not None
    job_id = str(spec["job"])
    try:
        part = shard_part(int(spec["index"]), int(spec["count"]))
        job = inv.ledger.join(job_id, part=part, now=inv.clock.time())
    except LedgerConflict as conflict:
        status = conflict.current.status if conflict.current is not None else "missing"
        log.info("shard %s finished, but its job %s is %s", inv.env.chain_id, job_id, status)
        return
    if len(job.joined) >= int(spec["count"]):
        wake_job(inv, job)


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
    inv: Hop, spec: Mapping[str, Any], error: str | None, status: ChainStatus = ChainStatus.FAILED
) -> None:
    """End the shard's job, naming the shard: FAILED (``resume`` of the job continues it) or CANCELLED."""
    assert inv.env is not None and inv.ledger is not None
    record = end_job(inv.ledger, spec, inv.env.chain_id, status, error, inv.clock.time())
    if record is None:
        return
    job_env = Envelope.from_record(record)
    chain_ended(inv, status, record, record.error, env=job_env)


def redrive(inv: Hop, current: ChainRecord) -> None:
    """A delivery of a shard that has already ended repeats what its end had to do to the job."""
    spec = shard_spec(current.event)
    if spec is None:
        return
    if current.status is ChainStatus.SUCCEEDED:
        shard_succeeded(inv, spec)
    elif current.status is ChainStatus.FAILED:
        shard_failed(inv, spec, current.error)
    elif current.status is ChainStatus.CANCELLED:
        shard_failed(inv, spec, None, ChainStatus.CANCELLED)
