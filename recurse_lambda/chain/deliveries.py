"""Deliveries that do no work: duplicates, stale and lost hand-offs, rejected envelopes, and Lambda's on-failure
records. Each ends the invocation quietly (or fails the chain for good) without running the user's code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..core.codec import ENVELOPE_KEY, Envelope, is_envelope
from ..core.ledger import ChainRecord, ChainStatus
from ..errors import (
    ConfigurationError,
    EnvelopeError,
    EnvelopeSignatureError,
    HopNotDead,
    LedgerConflict,
    RecurseLambdaError,
)
from ..shards.job import redrive
from .context import HopContext, envelope_of, error_text
from .first import first_envelope
from .report import chain_ended
from .warm import killed_chunk_error
from .world import Outcome

__all__ = ["DEAD_AFTER", "MAX_RESENDS", "abandoned", "error_text", "not_claimed", "rejected"]

log = logging.getLogger("recurse_lambda")


def not_claimed(ctx: HopContext, current: ChainRecord | None, *, sender: str | None = None) -> dict[str, Any]:
    """The hop's claim (or a write) was refused: the chain is unknown, ended, past this hop or held by another
    invocation. Repeats a lost hand-off that ``sender`` (by default this request) committed but never invoked."""
    env = ctx.env
    assert env is not None
    sender = ctx.request_id if sender is None else sender
    if current is None:
        log.warning("chain %s is unknown to the ledger; dropping hop %d", env.chain_id, env.hop)
        return ctx.respond(Outcome.REJECTED, None, error="unknown chain")
    extra: dict[str, Any] = {}
    if current.status is ChainStatus.SUCCEEDED:
        extra["result"] = current.result
    elif current.status is ChainStatus.FAILED:
        extra["error"] = current.error
    if current.status.terminal:
        redrive(ctx, current)  # a shard that ended: repeat its join (or its job's failure), idempotently
        return ctx.respond(Outcome.STALE, current.status, **extra)
    if current.hop < env.hop:
        return ctx.respond(Outcome.STALE, current.status, **extra)
    if current.hop == env.hop:
        return ctx.respond(Outcome.DUPLICATE, current.status)
    if current.hop == env.hop + 1 and current.owner is None and current.handed_off_by == sender:
        # This request id committed the hand-off, then died before (or while) invoking: send it again.
        # Claims are idempotent, so a second delivery of the next hop is dropped as a duplicate.
        ctx.send(envelope_of(current, env.code_version))
        return ctx.respond(Outcome.RESENT, current.status, next_hop=current.hop)
    return ctx.respond(Outcome.STALE, current.status)


# An on-failure record is never authenticated (Lambda writes it, the forwarder hands it on, and anyone who may invoke
# the function can forge one), so it acts only on a hop that the ledger shows as dead: no write to the chain's
# record, and any lease expired, for DEAD_AFTER seconds. Lambda retries a failed event about 1 and then 2 minutes
# after each failure, so a hop that is silent for 5 minutes past its lease has no retry still due. Its first action
# is to resend the hop (a live copy would be dropped at the claim); only when MAX_RESENDS resends of that hop did not
# bring it back does a record fail the chain. A record that comes too early raises HopNotDead: the forwarder leaves
# it in its queue, which delivers it again (every 3 minutes, 5 times, in the template).
DEAD_AFTER = 300.0
MAX_RESENDS = 1


def abandoned(ctx: HopContext, record: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda gave up on a hop (retries exhausted, event too old, recursion stopped): resend it, or record FAILED.

    Nothing in the record is trusted: a badly signed envelope or a forged shard event is rejected, touching
    nothing, and the ledger decides what the record may do (see ``DEAD_AFTER``).
    """
    request = record["requestContext"]
    payload = record["requestPayload"]
    failed_request = str(request.get("requestId", ""))
    condition = str(request.get("condition", "unknown"))
    # A first event's chain was started by the failed request: in stateless mode its id names the chain.
    first = not is_envelope(payload)
    sender = failed_request if first else ctx.request_id
    try:
        if first:
            env = first_envelope(
                ctx.config,
                payload,
                request_id=failed_request,
                stateful=ctx.ledger is not None,
                now=ctx.clock.time(),
                code_version=ctx.code_version,
            )
        else:
            env = ctx.codec.decode(payload)
    except (EnvelopeError, ConfigurationError) as exc:
        log.error("rejected an on-failure record: %s", error_text(exc))
        return ctx.respond(Outcome.REJECTED, None, error=error_text(exc))
    except (
        Exception
    ) as exc:  # chain_id= or initial_state= refused the payload, as they would on every delivery
        if isinstance(exc, RecurseLambdaError) and not ctx.config.is_permanent(exc):
            raise  # a transient library error: the forwarder delivers the record again
        log.error("rejected an on-failure record: %s", error_text(exc))
        return ctx.respond(Outcome.REJECTED, None, error=error_text(exc))
    ctx.identify(env)
    error = f"Lambda stopped delivering hop {env.hop} ({condition})"
    if "recurs" in condition.lower():
        error += (
            ": AWS recursive loop detection stopped the chain after about 16 invocations; set the "
            "function's RecursiveLoop to Allow (PutFunctionRecursionConfig) and rely on max_hops instead"
        )
    if ctx.ledger is None:
        chain_ended(ctx, ChainStatus.FAILED, None, error, request_id=sender)
        return ctx.respond(Outcome.FAILED, ChainStatus.FAILED, error=error)
    current = ctx.ledger.get(env.chain_id)
    hop = env.hop
    proven = None
    if (
        current is not None
        and current.hop == hop + 1
        and current.owner is None
        and current.handed_off_by == failed_request
    ):
        hop = current.hop  # the hand-off was committed but its invoke never went out
    elif current is not None and current.hop == hop and not current.status.terminal:
        proven = killed_chunk_error(current.progress, hop, current.attempts)  # a chunk outlived every attempt
        error = error_text(proven) if proven is not None else error
    if current is None or current.status is not ChainStatus.RUNNING or current.hop != hop:
        return not_claimed(ctx, current, sender=sender)
    now = ctx.clock.time()
    quiet_since = now - DEAD_AFTER
    if current.updated_at > quiet_since or current.lease_until > quiet_since:
        ctx.stats.outcome = Outcome.RETRYING
        raise HopNotDead(
            f"an on-failure record ({condition}) came for hop {hop} of chain {env.chain_id}, which may still be "
            f"alive: it acts only after {DEAD_AFTER:.0f} s without a write or a lease; deliver it again later"
        )
    resends = current.resends_of(hop)
    try:
        if resends < MAX_RESENDS and proven is None:  # a chunk too large for any attempt: resending is futile
            resent = ctx.ledger.resend(
                env.chain_id, hop=hop, resends=resends, quiet_since=quiet_since, now=now
            )
            ctx.send(envelope_of(resent, env.code_version, hop=hop))
            log.warning(
                "chain %s hop %d: Lambda gave up on it (%s); resent it (%d of %d)",
                env.chain_id,
                hop,
                condition,
                resends + 1,
                MAX_RESENDS,
            )
            return ctx.respond(Outcome.RESENT, ChainStatus.RUNNING, next_hop=hop)
        updated = ctx.ledger.fail(env.chain_id, hop=hop, owner=None, error=error, now=now)
    except LedgerConflict as conflict:  # a claim, a hand-off or another record came first
        return not_claimed(ctx, conflict.current, sender=sender)
    chain_ended(ctx, ChainStatus.FAILED, updated, error, request_id=sender)
    redrive(ctx, updated)  # a shard: fail its job too
    return ctx.respond(
        Outcome.FAILED, ChainStatus.FAILED, error=error, last_state=updated.progress.get("state")
    )


def rejected(ctx: HopContext, event: Any, exc: EnvelopeError | ConfigurationError) -> dict[str, Any]:
    """An event that cannot be run: log it, and return (a retry would fail the same way).

    A signature failure touches nothing: a forger must not be able to fail someone else's chain. An authentic
    envelope that cannot be loaded (its spilled body is gone, say) fails its chain, so nothing is silently lost.
    """
    log.error("rejected an event: %s", error_text(exc))
    if not is_envelope(event):  # a first event: there is no chain to fail
        return ctx.respond(Outcome.REJECTED, None, error=error_text(exc))
    body = event.get(ENVELOPE_KEY) if isinstance(event, Mapping) else None
    if isinstance(exc, EnvelopeSignatureError) or ctx.ledger is None or not isinstance(body, Mapping):
        return ctx.respond(Outcome.REJECTED, None, error=error_text(exc))
    try:
        chain_id, hop = str(body["chain_id"]), int(body["hop"])
        record = ctx.ledger.fail(
            chain_id, hop=hop, owner=ctx.request_id, error=error_text(exc), now=ctx.clock.time()
        )
    except (KeyError, TypeError, ValueError, LedgerConflict):
        return ctx.respond(Outcome.REJECTED, None, error=error_text(exc))
    ctx.env = Envelope(chain_id, hop, record.progress, record.event, record.started_at)
    chain_ended(ctx, ChainStatus.FAILED, record, error_text(exc))
    redrive(ctx, record)  # a shard: fail its job too
    return ctx.respond(Outcome.FAILED, ChainStatus.FAILED, error=error_text(exc))
