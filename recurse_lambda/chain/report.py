"""What an invocation reports when it ends: one structured log line per hop, one per terminal transition,
optional CloudWatch EMF metrics (or metrics through a Powertools ``Metrics`` object), and the failure notice of a
chain that failed for good.

While an invocation runs (:func:`bind_log_fields`), every record of the ``recurse_lambda`` logger carries its
``chain_id``, ``hop``, ``request_id`` and ``attempt`` as record attributes: structured fields that Powertools'
Logger (and any formatter that shows ``extra=`` fields) prints at the top level of its JSON.
"""

from __future__ import annotations

import contextvars
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

LOG_FIELDS = ("chain_id", "hop", "request_id", "attempt")
_bound: contextvars.ContextVar[HopContext | None] = contextvars.ContextVar("recurse_lambda_hop", default=None)


class ChainFields(logging.Filter):
    """Adds the running invocation's chain id, hop, request id and attempt to each record (as ``extra=`` would);
    fields the call passed itself are kept. Outside an invocation, records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _bound.get()
        if ctx is not None:
            env = ctx.env
            values = (env.chain_id if env else None, env.hop if env else None, ctx.request_id, ctx.attempt)
            for name, value in zip(LOG_FIELDS, values, strict=True):
                if value is not None and not hasattr(record, name):
                    setattr(record, name, value)
        return True


log.addFilter(ChainFields())


def bind_log_fields(ctx: HopContext) -> contextvars.Token[HopContext | None]:
    """From now on (in this thread) the library's log records carry ``ctx``'s chain, hop and request id."""
    return _bound.set(ctx)


def unbind_log_fields(token: contextvars.Token[HopContext | None]) -> None:
    _bound.reset(token)


def _metrics(ctx: HopContext, record: Mapping[str, Any]) -> None:
    """The record's metrics: through the user's Powertools ``Metrics`` (``powertools_metrics=``), else as an EMF
    line to the world's sink when ``metrics=True``."""
    powertools = ctx.config.powertools_metrics
    if powertools is not None:
        to_powertools(powertools, emf_metrics(record, ctx.config.metrics_namespace))
    elif ctx.config.metrics:
        ctx.world.metrics_sink(json.dumps(emf_metrics(record, ctx.config.metrics_namespace)))


def to_powertools(metrics: Any, doc: Mapping[str, Any]) -> None:
    """Add an EMF document's metrics to a Powertools ``Metrics`` (it publishes them when the handler returns, under
    its own namespace, service and dimensions); the chain id, hop and request id go in as metadata."""
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for metric in directive["Metrics"]:
            metrics.add_metric(name=metric["Name"], unit=metric["Unit"], value=doc[metric["Name"]])
    for key in ("chain_id", "hop", "request_id"):
        if doc.get(key) is not None:
            metrics.add_metadata(key=key, value=str(doc[key]))


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
        _metrics(ctx, record)
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
        _metrics(ctx, entry)
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
