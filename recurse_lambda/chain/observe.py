"""Observability: one structured log record per hop and per terminal transition, and optional EMF metrics.

Records are plain dicts built from the runner's :class:`InvocationStats`; :func:`log_json` sends one through
the standard ``logging`` module as a single JSON message, with the dict also attached as
``extra={"recurse_lambda": record}`` so that any formatter (Powertools' ``Logger`` merges ``extra`` keys into
its JSON) can route it. Nothing secret goes in: the signing key is never part of the runner's statistics, and
the state appears only as a summary (numbers at its top level, its size) unless the caller passes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.state_codec import strict_dumps
from .world import InvocationStats, Outcome

__all__ = [
    "cursor_summary",
    "emf_metrics",
    "hop_log_record",
    "hop_utilization",
    "log_json",
    "terminal_log_record",
]

MAX_ERROR_CHARS = 4096
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_RAN = frozenset(
    {Outcome.HANDED_OFF, Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRYING, Outcome.LOST_LEASE}
)
_DROPPED = frozenset({Outcome.DUPLICATE, Outcome.STALE})


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _error(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def hop_utilization(stats: InvocationStats) -> float:
    """Chunk time over the invocation's duration (the simulator's report uses the same ratio)."""
    if stats.ended is None:
        return 0.0
    duration = stats.ended - stats.started
    return stats.chunk_time / duration if duration > 0 else 0.0


def cursor_summary(progress: Mapping[str, Any] | None, *, max_fields: int = 8) -> dict[str, Any] | None:
    """A loggable summary of a committed cursor: chunk count, state size, and the state's top-level numbers.

    Only numbers are copied (``offset``, ``lines``: what an operator wants to see); strings and nested values
    may hold anything, so they are left out.
    """
    if progress is None:
        return None
    state = progress.get("state")
    summary: dict[str, Any] = {"chunks": progress.get("chunks")}
    if isinstance(state, Mapping):
        summary["state_bytes"] = len(strict_dumps(state, separators=(",", ":"), default=str))
        numbers = {
            str(k): v for k, v in state.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        summary["fields"] = dict(sorted(numbers.items())[:max_fields])
    return summary


def hop_log_record(
    stats: InvocationStats,
    *,
    function: str | None,
    cursor_summary: Mapping[str, Any] | None,
    utilization: float | None = None,
    at: float | None = None,
    state: Any = None,
) -> dict[str, Any]:
    """The record of one invocation, built once it ended (``stats.ended`` set).

    ``utilization`` defaults to :func:`hop_utilization`; ``at`` is the wall-clock time (epoch seconds, from
    the injected clock) and becomes the EMF timestamp; ``state`` is included only when given (opt-in).
    """
    duration = None if stats.ended is None else stats.ended - stats.started
    record: dict[str, Any] = {
        "kind": "hop",
        "chain_id": stats.chain_id,
        "hop": stats.hop,
        "request_id": stats.request_id,
        "attempt": stats.attempt,
        "function": function,
        "outcome": None if stats.outcome is None else str(stats.outcome),
        "chunks": stats.chunks,
        "chunk_time": _round(stats.chunk_time),
        "checkpoints": stats.checkpoints,
        "handoff_time": _round(stats.handoff_time),
        "duration": _round(duration),
        # The library's own time: claim, clients, HEAD, envelope, everything outside the chunks and hand-off.
        "library_time": None
        if duration is None
        else _round(duration - stats.chunk_time - stats.handoff_time),
        "utilization": _round(hop_utilization(stats) if utilization is None else utilization),
        "cursor": None if cursor_summary is None else dict(cursor_summary),
    }
    if at is not None:
        record["time"] = at
    if state is not None:
        record["state"] = state
    return record


def terminal_log_record(
    *,
    chain_id: str,
    hop: int | None,
    status: str,
    error: str | None = None,
    request_id: str | None = None,
    function: str | None = None,
    attempt: int | None = None,
    started_at: float | None = None,
    at: float | None = None,
    cursor_summary: Mapping[str, Any] | None = None,
    state: Any = None,
) -> dict[str, Any]:
    """The record of a chain's end: SUCCEEDED, FAILED (with its error) or CANCELLED.

    ``started_at`` and ``at`` (epoch seconds) give the chain's duration. The result is not logged (it may be
    large or private); ``state`` only when given.
    """
    status = str(status)
    if status not in _TERMINAL:
        raise ValueError(f"a terminal record needs one of {', '.join(_TERMINAL)}, not {status!r}")
    record: dict[str, Any] = {
        "kind": "terminal",
        "chain_id": chain_id,
        "hop": hop,
        "status": status,
        "error": _error(error),
        "request_id": request_id,
        "function": function,
        "attempt": attempt,
        "chain_duration": _round(at - started_at) if at is not None and started_at is not None else None,
        "cursor": None if cursor_summary is None else dict(cursor_summary),
    }
    if at is not None:
        record["time"] = at
    if state is not None:
        record["state"] = state
    return record


def log_json(logger: logging.Logger, level: int, record: Mapping[str, Any]) -> None:
    """Log ``record`` as one JSON message, with the dict attached as ``extra={"recurse_lambda": record}``."""
    if not logger.isEnabledFor(level):
        return
    text = strict_dumps(record, separators=(",", ":"), default=str)  # RFC 8259: NaN is spelled "NaN"
    # No arguments: logging leaves a message without args alone, so a '%' in the JSON is harmless.
    logger.log(level, text, extra={"recurse_lambda": dict(record)}, stacklevel=2)


# ---------------------------------------------------------------------------------------------------- EMF
#
# CloudWatch embedded metric format (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
# CloudWatch_Embedded_Metric_Format_Specification.html): a JSON object whose root has an "_aws" member with
# "Timestamp" (integer milliseconds since the epoch) and "CloudWatchMetrics", an array of MetricDirectives
# {"Namespace": str, "Dimensions": [[dimension names, at most 9 per set]], "Metrics": [{"Name", "Unit"}],
# at most 100}. Every metric Name and dimension name refers to a member of the root: a number (or array of
# numbers) for a metric, a string for a dimension. Other root members are kept in the log and ignored for
# metrics. On Lambda, one such object printed as a line on stdout is enough: no API call.

_MAX_DIMENSIONS = 9


def _function_name(function: Any) -> str:
    """``arn:aws:lambda:region:account:function:NAME[:qualifier]`` -> ``NAME``; a plain name stays."""
    if not isinstance(function, str) or not function:
        return "unknown"
    parts = function.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[5] == "function":
        return parts[6]
    return function


def _dimension_value(record: Mapping[str, Any], name: str) -> str:
    if name == "FunctionName":
        return _function_name(record.get("function"))
    if name == "Outcome":
        return str(record.get("outcome") or record.get("status") or "unknown")
    value = record.get(name)
    if value is None:
        raise ValueError(f"EMF dimension {name!r} has no value in the record")
    return str(value)


def _hop_metrics(record: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    outcome = record.get("outcome")
    ran = outcome in _RAN
    metrics: list[tuple[str, str, float]] = [
        ("Hops", "Count", 1 if ran else 0),
        ("Chunks", "Count", int(record.get("chunks") or 0)),
        ("DuplicatesDropped", "Count", 1 if outcome in _DROPPED else 0),
        ("Retries", "Count", 1 if outcome == Outcome.RETRYING else 0),
    ]
    if ran and record.get("utilization") is not None:
        metrics.append(("Utilization", "Percent", round(float(record["utilization"]) * 100, 3)))
    if outcome == Outcome.HANDED_OFF:
        metrics.append(("HandOffLatency", "Milliseconds", round(float(record["handoff_time"]) * 1000, 3)))
    if isinstance(record.get("bytes"), int | float):
        metrics.append(("Bytes", "Bytes", record["bytes"]))
    return metrics


def _terminal_metrics(record: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    status = record.get("status")
    metrics: list[tuple[str, str, float]] = [
        ("ChainsSucceeded", "Count", 1 if status == "SUCCEEDED" else 0),
        ("ChainsFailed", "Count", 1 if status == "FAILED" else 0),
        ("ChainsCancelled", "Count", 1 if status == "CANCELLED" else 0),
    ]
    if record.get("chain_duration") is not None:
        metrics.append(("ChainDuration", "Seconds", record["chain_duration"]))
    return metrics


def emf_metrics(
    record: Mapping[str, Any],
    namespace: str = "RecurseLambda",
    dimensions: Iterable[str] = ("FunctionName",),
    *,
    timestamp: float | None = None,
) -> dict[str, Any]:
    """An EMF document for a hop or terminal record; the caller prints ``json.dumps(doc)`` to stdout.

    Hop records give Hops, Chunks, DuplicatesDropped, Retries, Utilization (Percent; hops that ran) and
    HandOffLatency (Milliseconds; hand-offs only); terminal records give ChainsSucceeded, ChainsFailed,
    ChainsCancelled and ChainDuration. ``dimensions`` name record members (``FunctionName`` and ``Outcome``
    are derived); keep them low-cardinality: every distinct value is a new metric, billed as such.
    ``timestamp`` (epoch seconds) defaults to the record's ``time``, then to now.
    """
    dims = list(dimensions)
    if len(dims) > _MAX_DIMENSIONS:
        raise ValueError(f"EMF allows at most {_MAX_DIMENSIONS} dimensions in a set, got {len(dims)}")
    kind = record.get("kind")
    if kind == "hop":
        metrics = _hop_metrics(record)
    elif kind == "terminal":
        metrics = _terminal_metrics(record)
    else:
        raise ValueError(f"not a hop or terminal record: kind={kind!r}")
    when = timestamp if timestamp is not None else record.get("time")
    if when is None:
        when = time.time()
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(float(when) * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [dims],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in metrics],
                }
            ],
        }
    }
    for name in dims:
        doc[name] = _dimension_value(record, name)
    for name, _, value in metrics:
        doc[name] = value
    # Context for Logs Insights; not dimensions (a chain id per metric would be a metric per chain).
    for key in ("chain_id", "hop", "request_id", "outcome", "status"):
        if key in record and key not in doc:
            doc[key] = record[key]
    return doc
