"""What an invocation reports when it ends: one structured log line per hop, one per terminal transition,
optional CloudWatch EMF metrics, and the failure notice of a chain that failed for good."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.codec import Envelope
from ..core.invoke import same_version_target
from ..core.ledger import ChainRecord, ChainStatus
from ..core.notify import ChainFailureNotice, send_notice
from .observe import cursor_summary, emf_metrics, hop_log_record, log_json, terminal_log_record
from .world import Outcome

if TYPE_CHECKING:
    from ..core.progress import Progress
    from .context import HopContext

log = logging.getLogger("recurse_lambda")

_WARN = {Outcome.RETRYING, Outcome.LOST_LEASE, Outcome.REJECTED}


def _function(ctx: HopContext) -> str | None:
    try:
        return same_version_target(ctx.lambda_context)
    except AttributeError:  # a context without an ARN (a bare test double)
        return None


def _state(ctx: HopContext, progress: Mapping[str, Any] | None) -> Any:
    return progress.get("state") if ctx.config.log_state and progress else None


def _wire(progress: Progress | None) -> dict[str, Any] | None:
    return progress.to_json() if progress is not None else None


def observe_invocation(ctx: HopContext) -> None:
    """Log the invocation's record (and print its metrics when enabled). Never raises an ``Exception``."""
    if ctx.stats.outcome is None:
        return
    try:
        progress = _wire(ctx.last_progress) or (ctx.env.progress if ctx.env is not None else None)
        record = hop_log_record(
            ctx.stats,
            function=_function(ctx),
            cursor_summary=cursor_summary(progress),
            at=ctx.clock.time(),
            state=_state(ctx, progress),
        )
        level = logging.WARNING if ctx.stats.outcome in _WARN else logging.INFO
        log_json(log, level, record)
        if ctx.config.metrics:
            ctx.world.metrics_sink(json.dumps(emf_metrics(record, ctx.config.metrics_namespace)))
    except Exception:  # reporting must never change how the invocation ends
        log.exception("recurse_lambda: could not report the invocation")


def chain_ended(
    ctx: HopContext,
    status: ChainStatus,
    record: ChainRecord | None,
    error: str | None = None,
    *,
    env: Envelope | None = None,
    request_id: str | None = None,
) -> None:
    """Log a terminal transition; for FAILED, send the failure notice. Never raises an ``Exception``.

    ``env`` names another chain than the invocation's own (a shard failing its job); ``request_id`` another
    request than the invocation's own (the failed request of an on-failure record for a first event).
    """
    env = env if env is not None else ctx.env
    if env is None:
        return
    try:
        progress = record.progress if record is not None else env.progress
        entry = terminal_log_record(
            chain_id=env.chain_id,
            hop=record.hop if record is not None else env.hop,
            status=str(status),
            error=error,
            request_id=request_id if request_id is not None else ctx.request_id,
            function=_function(ctx),
            attempt=ctx.attempt,
            started_at=env.started_at,
            at=ctx.clock.time(),
            cursor_summary=cursor_summary(progress),
            state=_state(ctx, progress),
        )
        log_json(log, logging.ERROR if status is ChainStatus.FAILED else logging.INFO, entry)
        if ctx.config.metrics:
            ctx.world.metrics_sink(json.dumps(emf_metrics(entry, ctx.config.metrics_namespace)))
        if status is ChainStatus.FAILED:
            notice = ChainFailureNotice(
                chain_id=env.chain_id,
                hop=record.hop if record is not None else env.hop,
                error=error or "failed",
                function=(record.function if record is not None else None) or _function(ctx),
                last_state=progress.get("state") if progress else None,
                attempts=record.attempts if record is not None else ctx.attempt,
                failed_at=ctx.clock.time(),
                table=ctx.ledger.name if ctx.ledger is not None else None,
                resumable=ctx.ledger is not None,
            )
            send_notice(ctx.config.notifier, notice)
    except Exception:
        log.exception("recurse_lambda: could not report the end of chain %s", env.chain_id)
