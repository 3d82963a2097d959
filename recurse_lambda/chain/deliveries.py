"""Deliveries that do no work: duplicates, stale and lost hand-offs, rejected envelopes, and Lambda's on-failure
records. Each ends the invocation quietly (or fails the chain for good) without running the user's code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
from ..shards.plan import SHARD_KEY
from .report import chain_ended
from .warm import killed_chunk_error
from .world import Outcome

if TYPE_CHECKING:
    from .hop import Hop  # the invocation these functions act for

log = logging.getLogger("recurse_lambda")


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def not_claimed(inv: Hop, current: ChainRecord | None) -> dict[str, Any]:
    env = inv.env
    assert env is not None
    if current is None:
        log.warning("chain %s is unknown to the ledger; dropping hop %d", env.chain_id, env.hop)
        return inv._response(Outcome.REJECTED, None, error="unknown chain")
    extra: dict[str, Any] = {}
    if current.status is ChainStatus.SUCCEEDED:
        extra["result"] = current.result
    elif current.status is ChainStatus.FAILED:
        extra["error"] = current.error
    if current.status.terminal:
        redrive(inv, current)  # a shard that ended: repeat its join (or its job's failure), idempotently
        return inv._response(Outcome.STALE, current.status, **extra)
    if current.hop < env.hop:
        return inv._response(Outcome.STALE, current.status, **extra)
    if current.hop == env.hop:
        return inv._response(Outcome.DUPLICATE, current.status)
    if current.hop == env.hop + 1 and current.owner is None and current.handed_off_by == inv.request_id:
        # This request id committed the hand-off, then died before (or while) invoking: send it again.
        # Claims are idempotent, so a second delivery of the next hop is dropped as a duplicate.
        nxt = Envelope.from_record(current, code_version=env.code_version)
        inv._invoke(inv.codec.encode(nxt))
        return inv._response(Outcome.RESENT, current.status, next_hop=current.hop)
    return inv._response(Outcome.STALE, current.status)


# An on-failure record is never authenticated (Lambda writes it, the forwarder hands it on, and anyone who may invoke
# the function can forge one), so it acts only on a hop that the ledger shows as dead: no write to the chain's
# record, and any lease expired, for DEAD_AFTER seconds. Lambda retries a failed event about 1 and then 2 minutes
# after each failure, so a hop that is silent for 5 minutes past its lease has no retry still due. Its first action
# is to resend the hop (a live copy would be dropped at the claim); only when MAX_RESENDS resends of that hop did not
# bring it back does a record fail the chain. A record that comes too early raises HopNotDead: the forwarder leaves
# it in its queue, which delivers it again (every 3 minutes, 5 times, in the template).
DEAD_AFTER = 300.0
MAX_RESENDS = 1


def refuse_internal_markers(event: Any) -> None:
    """A first event (not an envelope) may not carry the library's internal markers.

    A shard is only ever started by an envelope (signed when a signing key is set) whose event carries
    ``SHARD_KEY``; a plain event carrying it is forged, and would otherwise run as a shard of someone's job.
    """
    if isinstance(event, Mapping) and SHARD_KEY in event:
        raise EnvelopeError(
            f"a first event carries the internal marker {SHARD_KEY!r}: shards are started by the library's "
            "own envelopes, never by a plain event; rejected"
        )


def abandoned(inv: Hop, record: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda gave up on a hop (retries exhausted, event too old, recursion stopped): resend it, or record FAILED.

    Nothing in the record is trusted: a badly signed envelope or a forged shard event is rejected, touching
    nothing, and the ledger decides what the record may do (see ``DEAD_AFTER``).
    """
    ctx = record["requestContext"]
    payload = record["requestPayload"]
    failed_request = str(ctx.get("requestId", ""))
    condition = str(ctx.get("condition", "unknown"))
    try:
        if is_envelope(payload):
            env = inv.codec.decode(payload)
        else:
            refuse_internal_markers(payload)
            inv.request_id = failed_request  # in stateless mode the first hop's chain id is its request id
            inv.event = payload
            env = inv._first_envelope()
    except (EnvelopeError, ConfigurationError) as exc:
        log.error("rejected an on-failure record: %s", error_text(exc))
        return inv._response(Outcome.REJECTED, None, error=error_text(exc))
    except (
        Exception
    ) as exc:  # chain_id= or initial_state= refused the payload, as they would on every delivery
        if isinstance(exc, RecurseLambdaError) and not inv.config.is_permanent(exc):
            raise  # a transient library error: the forwarder delivers the record again
        log.error("rejected an on-failure record: %s", error_text(exc))
        return inv._response(Outcome.REJECTED, None, error=error_text(exc))
    inv.env = env
    inv.stats.chain_id, inv.stats.hop = env.chain_id, env.hop
    error = f"Lambda stopped delivering hop {env.hop} ({condition})"
    if "recurs" in condition.lower():
        error += (
            ": AWS recursive loop detection stopped the chain after about 16 invocations; set the "
            "function's RecursiveLoop to Allow (PutFunctionRecursionConfig) and rely on max_hops instead"
        )
    if inv.ledger is None:
        chain_ended(inv, ChainStatus.FAILED, None, error)
        return inv._response(Outcome.FAILED, ChainStatus.FAILED, error=error)
    current = inv.ledger.get(env.chain_id)
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
        return not_claimed(inv, current)
    now = inv.clock.time()
    quiet_since = now - DEAD_AFTER
    if current.updated_at > quiet_since or current.lease_until > quiet_since:
        inv.stats.outcome = Outcome.RETRYING
        raise HopNotDead(
            f"an on-failure record ({condition}) came for hop {hop} of chain {env.chain_id}, which may still be "
            f"alive: it acts only after {DEAD_AFTER:.0f} s without a write or a lease; deliver it again later"
        )
    resends = current.resends_of(hop)
    try:
        if resends < MAX_RESENDS and proven is None:  # a chunk too large for any attempt: resending is futile
            resent = inv.ledger.resend(
                env.chain_id, hop=hop, resends=resends, quiet_since=quiet_since, now=now
            )
            nxt = Envelope.from_record(resent, code_version=env.code_version)
            inv._invoke(inv.codec.encode(nxt))
            log.warning(
                "chain %s hop %d: Lambda gave up on it (%s); resent it (%d of %d)",
                env.chain_id,
                hop,
                condition,
                resends + 1,
                MAX_RESENDS,
            )
            return inv._response(Outcome.RESENT, ChainStatus.RUNNING, next_hop=hop)
        updated = inv.ledger.fail(env.chain_id, hop=hop, owner=None, error=error, now=now)
    except LedgerConflict as conflict:  # a claim, a hand-off or another record came first
        return not_claimed(inv, conflict.current)
    chain_ended(inv, ChainStatus.FAILED, updated, error)
    redrive(inv, updated)  # a shard: fail its job too
    return inv._response(
        Outcome.FAILED, ChainStatus.FAILED, error=error, last_state=updated.progress.get("state")
    )


def rejected(inv: Hop, exc: EnvelopeError | ConfigurationError) -> dict[str, Any]:
    """An event that cannot be run: log it, and return (a retry would fail the same way).

    A signature failure touches nothing: a forger must not be able to fail someone else's chain. An authentic
    envelope that cannot be loaded (its spilled body is gone, say) fails its chain, so nothing is silently lost.
    """
    log.error("rejected an event: %s", error_text(exc))
    if not is_envelope(inv.event):  # a first event: there is no chain to fail
        return inv._response(Outcome.REJECTED, None, error=error_text(exc))
    body = inv.event.get(ENVELOPE_KEY) if isinstance(inv.event, Mapping) else None
    if isinstance(exc, EnvelopeSignatureError) or inv.ledger is None or not isinstance(body, Mapping):
        return inv._response(Outcome.REJECTED, None, error=error_text(exc))
    try:
        chain_id, hop = str(body["chain_id"]), int(body["hop"])
        record = inv.ledger.fail(
            chain_id, hop=hop, owner=inv.request_id, error=error_text(exc), now=inv.clock.time()
        )
    except (KeyError, TypeError, ValueError, LedgerConflict):
        return inv._response(Outcome.REJECTED, None, error=error_text(exc))
    inv.env = Envelope.from_record(record)
    chain_ended(inv, ChainStatus.FAILED, record, error_text(exc))
    redrive(inv, record)  # a shard: fail its job too
    return inv._response(Outcome.FAILED, ChainStatus.FAILED, error=error_text(exc))
