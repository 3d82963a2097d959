"""What an invocation reports when it ends: one structured log line per hop, one per terminal transition,
optional CloudWatch EMF metrics, and the failure notice of a chain that failed for good."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ..core.codec import Envelope
from ..core.invoke import same_version_target
from ..core.ledger import ChainRecord, ChainStatus
from ..core.notify import ChainFailureNotice, send_notice
from .observe import cursor_summary, emf_metrics, hop_log_record, log_json, terminal_log_record
from .world import Outcome

if TYPE_CHECKING:
    from .hop import Hop

log = logging.getLogger("recurse_lambda")

_WARN = {Outcome.RETRYING, Outcome.LOST_LEASE, Outcome.REJECTED}


def _function(inv: Hop) -> str | None:
    try:
        return same_version_target(inv.context)
    except AttributeError:  # a context without an ARN (a bare test double)
        return None


def _state(inv: Hop, progress: dict[str, Any] | None) -> Any:
    return progress.get("state") if inv.config.log_state and progress else None


def observe_invocation(inv: Hop) -> None:
    """Log the invocation's record (and print its metrics when enabled). Never raises an ``Exception``."""
    if inv.stats.outcome is None:
        return
    try:
        progress = inv.last_progress or (inv.env.progress if inv.env is not None else None)
        record = hop_log_record(
            inv.stats,
            function=_function(inv),
            cursor_summary=cursor_summary(progress),
            at=inv.clock.time(),
            state=_state(inv, progress),
        )
        level = logging.WARNING if inv.stats.outcome in _WARN else logging.INFO
        log_json(log, level, record)
        if inv.config.metrics:
            inv.world.metrics_sink(json.dumps(emf_metrics(record, inv.config.metrics_namespace)))
    except Exception:  # reporting must never change how the invocation ends
        log.exception("recurse_lambda: could not report the invocation")


def chain_ended(
    inv: Hop,
    status: ChainStatus,
    record: ChainRecord | None,
    error: str | None = None,
    *,
    env: Envelope | None = None,
) -> None:
    """Log a terminal transition; for FAILED, send the failure notice. Never raises an ``Exception``.

    ``env`` names another chain than the invocation's own (a shard failing its job).
    """
    env = env if env is not None else inv.env
    if env is None:
        return
    try:
        progress = record.progress if record is not None else env.progress
        entry = terminal_log_record(
            chain_id=env.chain_id,
            hop=record.hop if record is not None else env.hop,
            status=str(status),
            error=error,
            request_id=inv.request_id,
            function=_function(inv),
            attempt=inv.attempt,
            started_at=env.started_at,
            at=inv.clock.time(),
            cursor_summary=cursor_summary(progress),
            state=_state(inv, progress),
        )
        log_json(log, logging.ERROR if status is ChainStatus.FAILED else logging.INFO, entry)
        if inv.config.metrics:
            inv.world.metrics_sink(json.dumps(emf_metrics(entry, inv.config.metrics_namespace)))
        if status is ChainStatus.FAILED:
            notice = ChainFailureNotice(
                chain_id=env.chain_id,
                hop=record.hop if record is not None else env.hop,
                error=error or "failed",
                function=(record.function if record is not None else None) or _function(inv),
                last_state=progress.get("state") if progress else None,
                attempts=record.attempts if record is not None else inv.attempt,
                failed_at=inv.clock.time(),
                table=getattr(inv.ledger, "table", None),
                resumable=inv.ledger is not None,
            )
            send_notice(inv.config.notifier, notice)
    except Exception:
        log.exception("recurse_lambda: could not report the end of chain %s", env.chain_id)
