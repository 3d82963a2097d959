"""Tracing (optional): one OpenTelemetry span per invocation, with child spans for the claim, each batch of chunks
between checkpoints, each checkpoint and the hand-off; the hops of a chain joined into one trace.

Off by default. It is on when the handler's configuration has ``tracer=`` (an OpenTelemetry ``Tracer``, or a
``TracerProvider``) or ``tracing=True`` (the global provider's tracer); only then is ``opentelemetry`` imported
(the ``tracing`` extra). When off, the runner's hooks cost a dictionary lookup per invocation and a ``None`` test
per checkpoint: nothing per safe point.

How the hops join up. The hand-off span's context travels to the next hop in the envelope, under ``"trace"``:
``{"traceparent": W3C traceparent, "xray": "Root=…;Parent=…;Sampled=…"}``, so the next invocation's span is its
child, and a retry of a hop (the same envelope, delivered again) is a child of the same hand-off. A first event has
no such context: its span is the child of Lambda's own trace when ``_X_AMZN_TRACE_ID`` is set (active tracing), so
the chain's trace is the one X-Ray started; otherwise of a root derived from the chain (the same for every attempt
and every hop that lost its context, such as a resent hand-off): its trace id is the chain's start time (8 hex
digits, as X-Ray's ids begin) followed by a hash of the chain id. Each invocation span also links to Lambda's own
trace of that invocation when it is another one.

Times: spans are stamped with the runner's clock (``clock.time()``), so a simulated chain's spans sit on its
virtual time line, and a real one's on the epoch.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.codec import ENVELOPE_KEY
from .world import Outcome

if TYPE_CHECKING:
    from .context import HopContext

log = logging.getLogger("recurse_lambda")

TRACE_KEY = "trace"  # the envelope body's entry carrying the trace context
XRAY_ENV = "_X_AMZN_TRACE_ID"  # where Lambda puts its own trace header for the current invocation
SPAN_PREFIX = "recurse_lambda"

_ERRORS = {Outcome.RETRYING, Outcome.FAILED, Outcome.REJECTED, Outcome.LOST_LEASE}
_traces: weakref.WeakKeyDictionary[HopContext, HopTrace] = weakref.WeakKeyDictionary()


def tracer_for(config: Any) -> Any | None:
    """The tracer ``config`` asks for (``tracer=`` or ``tracing=True``), or None when tracing is off."""
    tracer = config.tracer
    if tracer is None:
        if not config.tracing:
            return None
        from opentelemetry import trace as otel  # only now: the "tracing" extra

        return otel.get_tracer(SPAN_PREFIX)
    if not hasattr(tracer, "start_span") and hasattr(tracer, "get_tracer"):
        return tracer.get_tracer(SPAN_PREFIX)  # a TracerProvider
    return tracer


# ---------------------------------------------------------------------------------------------------- headers


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: Any) -> tuple[int, int, bool] | None:
    """``00-<32 hex>-<16 hex>-<2 hex>`` → (trace id, span id, sampled); None when malformed or all zeros."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


def xray_header(trace_id: int, span_id: int, sampled: bool) -> str:
    """X-Ray's form of a span context: ``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1``."""
    hexid = f"{trace_id:032x}"
    return f"Root=1-{hexid[:8]}-{hexid[8:]};Parent={span_id:016x};Sampled={1 if sampled else 0}"


def parse_xray(value: Any) -> tuple[int, int | None, bool] | None:
    """An X-Ray header (``Root=…;Parent=…;Sampled=…``, in any order) → (trace id, parent span id, sampled)."""
    if not isinstance(value, str):
        return None
    fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
    root = fields.get("Root", "").split("-")
    if len(root) != 3 or root[0] != "1" or len(root[1]) != 8 or len(root[2]) != 24:
        return None
    try:
        trace_id = int(root[1] + root[2], 16)
        parent = int(fields["Parent"], 16) if len(fields.get("Parent", "")) == 16 else None
    except ValueError:
        return None
    return trace_id, parent or None, fields.get("Sampled", "1") != "0"


def chain_root(chain_id: str, started_at: float) -> tuple[int, int]:
    """The (trace id, span id) every hop of ``chain_id`` can derive: the chain's start time, then a hash."""
    digest = hashlib.sha256(chain_id.encode()).hexdigest()
    seconds = int(started_at) & 0xFFFFFFFF
    return int(f"{seconds:08x}{digest[:24]}", 16) or 1, int(digest[24:40], 16) or 1


def carried_context(event: Any) -> Mapping[str, Any] | None:
    """The ``"trace"`` entry of an envelope event (signed with the rest of its body), if any."""
    body = event.get(ENVELOPE_KEY) if isinstance(event, Mapping) else None
    carried = body.get(TRACE_KEY) if isinstance(body, Mapping) else None
    return carried if isinstance(carried, Mapping) else None


# ---------------------------------------------------------------------------------------------------- spans


class HopTrace:
    """The spans of one invocation. Times are the runner's ``clock.now()`` readings."""

    def __init__(self, tracer: Any, ctx: HopContext, event: Any) -> None:
        from opentelemetry import trace as otel

        self._otel = otel
        self.tracer = tracer
        self._ctx = weakref.ref(ctx)  # not a strong reference: _traces is keyed by the context
        clock = ctx.clock
        self._offset = clock.time() - clock.now()  # now() readings → epoch seconds
        env = ctx.env
        assert env is not None
        carried = carried_context(event)
        lambda_own = parse_xray(ctx.world.environ.get(XRAY_ENV))
        parent: tuple[int, int, bool] | None = None
        if carried is not None:
            parent = parse_traceparent(carried.get("traceparent"))
            if parent is None:
                xray = parse_xray(carried.get("xray"))
                if xray is not None and xray[1] is not None:
                    parent = (xray[0], xray[1], xray[2])
        if parent is None and env.hop == 0 and lambda_own is not None and lambda_own[1] is not None:
            parent = (lambda_own[0], lambda_own[1], lambda_own[2])
        if parent is None:
            trace_id, span_id = chain_root(env.chain_id, env.started_at)
            parent = (trace_id, span_id, True)
        remote = otel.SpanContext(
            trace_id=parent[0],
            span_id=parent[1],
            is_remote=True,
            trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED if parent[2] else otel.TraceFlags.DEFAULT),
        )
        links = []
        if lambda_own is not None and lambda_own[0] != parent[0] and lambda_own[1] is not None:
            own = otel.SpanContext(
                trace_id=lambda_own[0],
                span_id=lambda_own[1],
                is_remote=True,
                trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED if lambda_own[2] else 0),
            )
            links.append(otel.Link(own, {"recurse_lambda.link": "lambda invocation"}))
        self.span = tracer.start_span(
            f"{SPAN_PREFIX}.hop",
            context=otel.set_span_in_context(otel.NonRecordingSpan(remote)),
            kind=otel.SpanKind.SERVER,
            start_time=self._ns(ctx.stats.started),
            links=links,
            attributes={
                "recurse_lambda.chain_id": env.chain_id,
                "recurse_lambda.hop": env.hop,
                "faas.invocation_id": ctx.request_id,
            },
        )
        self._inner = otel.set_span_in_context(self.span)
        self._handoff: Any = None
        self._batch_start: float | None = None
        self._batch_chunks = 0

    def _ns(self, t: float) -> int:
        return round((t + self._offset) * 1e9)

    def child(self, name: str, start: float, end: float | None, **attributes: Any) -> Any:
        """A child span from ``start`` (ended at ``end`` unless None); returns it."""
        span = self.tracer.start_span(
            f"{SPAN_PREFIX}.{name}", context=self._inner, start_time=self._ns(start), attributes=attributes
        )
        if end is not None:
            span.end(end_time=self._ns(end))
        return span

    @property
    def ctx(self) -> HopContext:
        ctx = self._ctx()
        assert ctx is not None, "the invocation's context is gone"
        return ctx

    def chunks_start(self, t: float) -> None:
        self._batch_start, self._batch_chunks = t, self.ctx.stats.chunks

    def _close_batch(self, t: float) -> None:
        if self._batch_start is None:
            return
        done = self.ctx.stats.chunks - self._batch_chunks
        self.child("chunks", self._batch_start, max(t, self._batch_start), **{"recurse_lambda.chunks": done})
        self._batch_start = None

    def checkpoint(self, start: float, end: float) -> None:
        """A checkpoint committed from ``start`` to ``end``: it closes a batch of chunks and starts the next."""
        self._close_batch(start)
        self.child("checkpoint", start, end)
        self.chunks_start(end)

    def hand_off(self, since: float) -> dict[str, Any]:
        """Open the hand-off span at ``since``; the envelope extra that makes it the next hop's parent."""
        self._close_batch(since)
        env = self.ctx.env
        assert env is not None
        self._handoff = self.child("hand_off", since, None, **{"recurse_lambda.next_hop": env.hop + 1})
        sc = self._handoff.get_span_context()
        sampled = bool(sc.trace_flags & 1)
        return {
            TRACE_KEY: {
                "traceparent": traceparent(sc.trace_id, sc.span_id, sampled),
                "xray": xray_header(sc.trace_id, sc.span_id, sampled),
            }
        }

    def end(self) -> None:
        ctx = self.ctx
        stats = ctx.stats
        # Not ended: the deadline killed it (in the simulator; on Lambda nothing runs then), and reading the
        # clock would raise again.
        ended = stats.ended if stats.ended is not None else max(ctx.deadline, stats.started)
        self._close_batch(ended)
        if self._handoff is not None:
            self._handoff.end(end_time=self._ns(ended))
        outcome = stats.outcome
        span = self.span
        span.set_attribute("recurse_lambda.outcome", str(outcome) if outcome is not None else "killed")
        span.set_attribute("recurse_lambda.chunks", stats.chunks)
        span.set_attribute("recurse_lambda.checkpoints", stats.checkpoints)
        if ctx.attempt is not None:
            span.set_attribute("recurse_lambda.attempt", ctx.attempt)
        if outcome is None or outcome in _ERRORS:
            span.set_status(self._otel.Status(self._otel.StatusCode.ERROR, str(outcome or "killed")))
        span.end(end_time=self._ns(ended))


# ---------------------------------------------------------------------------------------------------- hooks
# One call each in the runner; each is a no-op (a lookup) when tracing is off, and never raises an Exception.


def begin(ctx: HopContext, event: Any) -> None:
    """The invocation now acts for ``ctx.env``: open its span (when tracing is on)."""
    try:
        tracer = tracer_for(ctx.config)
        if tracer is not None and ctx not in _traces:
            _traces[ctx] = HopTrace(tracer, ctx, event)
    except Exception:  # tracing must never change how the invocation ends
        log.exception("recurse_lambda: could not start the invocation's span")


def of(ctx: HopContext, chunks_start: float | None = None) -> HopTrace | None:
    """The invocation's spans (None when tracing is off); ``chunks_start`` marks where its chunks begin."""
    trace = _traces.get(ctx)
    if trace is not None and chunks_start is not None:
        trace.chunks_start(chunks_start)
    return trace


def span(ctx: HopContext, name: str, start: float, end: float, **attributes: Any) -> None:
    """A finished child span of the invocation's (``claim``, say), when tracing is on."""
    trace = _traces.get(ctx)
    if trace is not None:
        trace.child(name, start, end, **attributes)


def hand_off(ctx: HopContext, since: float) -> dict[str, Any]:
    """The envelope extra carrying the trace context to the next hop (empty when tracing is off)."""
    trace = _traces.get(ctx)
    if trace is None:
        return {}
    try:
        return trace.hand_off(since)
    except Exception:
        log.exception("recurse_lambda: could not open the hand-off's span")
        return {}


def end(ctx: HopContext) -> None:
    trace = _traces.pop(ctx, None)
    if trace is None:
        return
    try:
        trace.end()
    except Exception:
        log.exception("recurse_lambda: could not end the invocation's span")
