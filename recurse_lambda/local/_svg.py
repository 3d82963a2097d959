"""A chain's timeline as a plain SVG picture: one lane per chain, one bar per invocation, coloured by outcome.

Pure Python and deterministic (the same report gives the same bytes), so the picture can be diffed, attached to
a bug report, or opened in any browser. Hover a bar for its figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..shards.plan import SHARD_ID_PREFIX

if TYPE_CHECKING:
    from ._report import ChainReport, InvocationRow

WIDTH = 1200
LABEL_W = 150  # the lane labels' column
RIGHT = 24
LANE_MAX = 34.0  # px per lane while few lanes
PLOT_MAX = 900.0  # px for all lanes: past this, lanes get thinner rather than the picture taller
LABEL_EVERY_PX = 13.0  # at least this far between two lane labels
LABEL_CHARS = 20
CHAR_W = 6.0  # approximate width of a character at font-size 11

# Category -> (colour, legend). The pale part of a bar is its time outside chunks, the dark part chunk work.
CATEGORIES: dict[str, tuple[str, str]] = {
    "handoff": ("#0072b2", "handed off"),
    "succeeded": ("#009e73", "succeeded"),
    "resent": ("#56b4e9", "re-sent a lost hand-off"),
    "retrying": ("#e69f00", "raised: Lambda retries"),
    "timeout": ("#c62828", "timed out"),
    "crash": ("#8e44ad", "crashed"),
    "failed": ("#1a1a1a", "failed for good"),
    "dropped": ("#9e9e9e", "duplicate dropped"),
    "lost_lease": ("#cc79a7", "lost its lease"),
    "rejected": ("#b8a000", "rejected"),
    "split": ("#3b3b98", "split into shards"),
    "waiting": ("#a6cee3", "job waiting for its shards"),
    "dispatched": ("#6d4c41", "trigger: started chains"),
    "other": ("#c8c8c8", "other"),
}
OUTCOME_CATEGORY = {
    "handed_off": "handoff",
    "succeeded": "succeeded",
    "resent": "resent",
    "retrying": "retrying",
    "error": "retrying",  # an exception escaped the handler: Lambda retries it, as after `retrying`
    "timeout": "timeout",
    "crash": "crash",
    "failed": "failed",
    "duplicate": "dropped",
    "stale": "dropped",
    "lost_lease": "lost_lease",
    "rejected": "rejected",
    "split": "split",
    "waiting": "waiting",
    "dispatched": "dispatched",
}
KIND_STROKE = {"retry": "4,2", "destination": "1,2"}  # dash patterns of a bar's outline, by delivery kind

# Characters XML 1.0 forbids even when escaped (an error message may hold a terminal escape or a NUL).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def category(outcome: str) -> str:
    """The colour category of a row's outcome (``other`` for anything unknown)."""
    return OUTCOME_CATEGORY.get(outcome, "other")


def _text(value: object) -> str:
    s = _NOT_XML.sub("\ufffd", str(value))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: object) -> str:
    return '"' + _text(value).replace('"', "&quot;").replace("\n", "&#10;") + '"'


def _num(x: float) -> str:
    """Two decimals, without a trailing ``.00``: short output, the same bytes every time."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _tag(name: str, body: str = "", **attrs: object) -> str:
    parts = "".join(
        f" {k.rstrip('_').replace('_', '-')}={_attr(v)}" for k, v in attrs.items() if v is not None
    )
    return f"<{name}{parts}>{body}</{name}>" if body else f"<{name}{parts}/>"


def _ticks(span: float) -> tuple[float, str, list[float]]:
    """A unit (seconds per unit and its name) chosen by the span, and 4-10 round tick values in that unit."""
    scale, unit = (1.0, "s") if span < 180 else (60.0, "min") if span < 3 * 3600 else (3600.0, "h")
    extent = span / scale
    step = 10.0 ** (math.floor(math.log10(extent)) - 1) if extent > 0 else 1.0
    for factor in (1.0, 2.0, 5.0, 10.0):  # the smallest round step that gives at most 10 intervals
        if extent / (step * factor) <= 10:
            step *= factor
            break
    count = int(extent / step + 1e-9)
    return scale, unit, [i * step for i in range(count + 1)]


def _tick_label(value: float, step: float, unit: str) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:.{decimals}f} {unit}"


def _lanes(report: ChainReport) -> list[str | None]:
    """Chain ids in order of first appearance. Rows without one join the only chain, or get their own lane."""
    seen: list[str | None] = []
    for r in report.rows:
        if r.chain_id not in seen:
            seen.append(r.chain_id)
    known = [c for c in seen if c is not None]
    if len(known) <= 1:
        return [known[0] if known else report.chain_id]
    return seen


def _short_labels(lanes: list[str | None]) -> tuple[str, list[str]]:
    """Lane labels without the prefix shared by every chain id (a sharded job's ``job/``), and that prefix."""
    # A sharded job's own id counts as "job/", so its shards' labels lose the whole "job/" prefix (a shard's
    # id, "@shard/job/07", is read without its reserved prefix).
    lanes = [c.removeprefix(SHARD_ID_PREFIX) if c is not None else None for c in lanes]
    ids = [c if "/" in c else c + "/" for c in lanes if c is not None]
    common = ids[0] if len(ids) > 1 else ""
    for other in ids[1:]:
        while not other.startswith(common):
            common = common[:-1]
    prefix = common[: common.rfind("/") + 1]  # whole path segments only: "job/", never "job/00"
    labels = []
    for lane in lanes:
        label = (
            "(no chain)" if lane is None else "job" if lane + "/" == prefix else lane[len(prefix) :] or lane
        )
        labels.append(label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026")
    return prefix, labels


def _tooltip(r: InvocationRow, origin: float) -> str:
    hop = "-" if r.hop is None else r.hop
    lines = [
        f"#{r.number} hop {hop}, {r.kind}, attempt {r.attempt}",
        f"start {r.start - origin:.3f} s, duration {r.billed:.3f} s",
        f"chunks {r.chunks}, chunk time {r.chunk_time:.3f} s, utilisation {r.utilization:.1%}",
        f"outcome {r.outcome or '?'}",
        f"container {r.container}{' (cold)' if r.cold else ''}, request {r.request_id}",
    ]
    if r.chain_id is not None:
        lines.append(f"chain {r.chain_id}")
    if r.error:
        lines.append(f"error: {r.error}")
    return "\n".join(lines)


def _header(report: ChainReport, title: str | None, lanes: int, prefix: str) -> Iterable[str]:
    s = report.summary()
    if title is None and lanes > 1:
        title = f"recurse-lambda: {lanes} chains" + (f" of {prefix.rstrip('/')}" if prefix else "")
    elif title is None:
        title = f"recurse-lambda chain {report.chain_id}" if report.chain_id else "recurse-lambda chain"
    yield _tag("text", _text(title), x=16, y=24, class_="title")
    line = (
        f"status {s['status']} \u00b7 {s['hops']} hops \u00b7 {s['invocations']} invocations \u00b7 "
        f"{s['retries']} retries \u00b7 {s['duplicates_dropped']} duplicates dropped \u00b7 "
        f"{s['timeouts']} timeouts \u00b7 utilisation {s['utilization']:.1%}"
    )
    if lanes > 1:
        line += f" \u00b7 {lanes} chains"
    yield _tag("text", _text(line), x=16, y=44, class_="summary")


def _legend(report: ChainReport, y: float, width: int) -> tuple[list[str], float]:
    """Swatches of the categories present, then notes on the bars' parts; wraps. Returns the last line's y."""
    present = {category(r.outcome) for r in report.rows}
    items = [(cat, label) for cat, (_, label) in CATEGORIES.items() if cat in present]
    kinds = {r.kind for r in report.rows}
    notes = ["dark: chunk work, pale: the rest of the invocation"]
    if "retry" in kinds:
        notes.append("dashed outline: a Lambda retry")
    if "destination" in kinds:
        notes.append("dotted: an on-failure record")
    items.append(("", " \u00b7 ".join(notes)))
    out: list[str] = []
    x = 16.0
    for cat, label in items:
        item_w = (14 if cat else 0) + len(label) * CHAR_W
        if x > 16 and x + item_w > width - RIGHT:
            x, y = 16.0, y + 16
        if cat:
            colour = CATEGORIES[cat][0]
            out.append(
                _tag(
                    "rect",
                    x=_num(x),
                    y=_num(y - 9),
                    width=10,
                    height=10,
                    fill=colour,
                    class_=f"swatch c-{cat}",
                )
            )
            x += 14
        out.append(_tag("text", _text(label), x=_num(x), y=_num(y), class_="legend" if cat else "note"))
        x += len(label) * CHAR_W + 16
    return out, y


def _bar(
    r: InvocationRow, lane: int, x: float, w: float, y: float, h: float, origin: float, big: bool
) -> str:
    cat = category(r.outcome)
    colour = CATEGORIES[cat][0]
    kind = _NOT_TOKEN.sub("_", r.kind)
    outcome = _NOT_TOKEN.sub("_", r.outcome or "none")
    if w >= 6:  # a 1 px gap between back-to-back hops, which would otherwise merge into one block
        x, w = x + 1, w - 2
    work = w * min(1.0, max(0.0, r.utilization))
    dashes = KIND_STROKE.get(r.kind)
    parts = [
        _tag("title", _text(_tooltip(r, origin))),
        _tag(
            "rect",
            x=_num(x),
            y=_num(y),
            width=_num(w),
            height=_num(h),
            fill=colour,
            fill_opacity="0.35",
            stroke="#222" if dashes else colour,
            stroke_width="1",
            stroke_dasharray=dashes,
        ),
    ]
    if work >= 0.01:
        parts.append(
            _tag("rect", x=_num(x), y=_num(y), width=_num(work), height=_num(h), fill=colour, class_="work")
        )
    if big:
        hop = f"hop {r.hop}" if r.hop is not None else (r.outcome or "?")
        for label in (f"{hop} \u00b7 {r.utilization:.0%}", f"{r.utilization:.0%}"):
            if len(label) * CHAR_W + 6 <= w:
                parts.append(_tag("text", _text(label), x=_num(x + 3), y=_num(y + h / 2 + 4), class_="label"))
                break
    return _tag(
        "g", "".join(parts), class_=f"bar c-{cat} o-{outcome} k-{kind}", data_number=r.number, data_lane=lane
    )


STYLE = (
    "text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;fill:#222}"
    ".title{font-size:16px;font-weight:600}.summary{font-size:12px}.legend,.lane,.note{font-size:11px}"
    ".note{fill:#555}.tick{font-size:10px;fill:#555}.label{font-size:10px;fill:#111;paint-order:stroke;"
    "stroke:#fff;stroke-width:2px}.grid{stroke:#ddd;stroke-width:1}.stripe{fill:#f4f4f4}"
)


def timeline_svg(report: ChainReport, *, title: str | None = None, width: int = WIDTH) -> str:
    """The report's timeline as an SVG document: lanes per chain, bars per invocation on a shared time axis."""
    width = max(width, 480)
    rows = report.rows
    lanes = _lanes(report)
    prefix, labels = _short_labels(lanes)
    legend, legend_y = _legend(report, 66, width)
    top = legend_y + 26
    lane_h = min(LANE_MAX, PLOT_MAX / len(lanes))
    plot_h = lane_h * len(lanes)
    plot_w = width - LABEL_W - RIGHT
    height = top + plot_h + 44

    # The axis starts where the run started (times in tooltips match the text timeline) and covers every row.
    lo = min([r.start for r in rows], default=report.started)
    hi = max([r.end for r in rows], default=report.ended)
    if report.ended > report.started:
        lo, hi = min(lo, report.started), max(hi, report.ended)
    span = hi - lo if hi > lo else 1.0

    def x_of(t: float) -> float:
        return LABEL_W + (t - lo) / span * plot_w

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_num(height)}" '
        f'viewBox="0 0 {width} {_num(height)}">',
        _tag("style", STYLE),
        _tag("rect", x=0, y=0, width=width, height=_num(height), fill="#fff"),
        *_header(report, title, len(lanes), prefix),
        *legend,
    ]
    if prefix:  # the shards' common prefix, said once above their labels
        out.append(_tag("text", _text(prefix + "\u2026"), x=16, y=_num(top - 5), class_="lane"))

    every = max(1, math.ceil(LABEL_EVERY_PX / lane_h))  # with many lanes, label every n-th
    for i, label in enumerate(labels):
        y = top + i * lane_h
        if i % 2:
            out.append(
                _tag("rect", x=LABEL_W, y=_num(y), width=_num(plot_w), height=_num(lane_h), class_="stripe")
            )
        if i % every == 0:
            full = _tag("title", _text(lanes[i] or "invocations that named no chain"))
            ty = y + lane_h / 2 + 3.5  # centred on the lane (the first of its group)
            text = _tag("text", _text(label), x=16, y=_num(ty), class_="lane")
            out.append(_tag("g", full + text))  # hover a label for the chain's whole id

    scale, unit, ticks = _ticks(span)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for value in ticks:
        x = x_of(lo + value * scale)
        out.append(_tag("line", x1=_num(x), y1=_num(top), x2=_num(x), y2=_num(top + plot_h), class_="grid"))
        label = _text(_tick_label(value, step, unit))
        out.append(
            _tag("text", label, x=_num(x), y=_num(top + plot_h + 16), text_anchor="middle", class_="tick")
        )
    out.append(
        _tag(
            "text",
            "time since the run started",
            x=_num(LABEL_W + plot_w / 2),
            y=_num(top + plot_h + 34),
            text_anchor="middle",
            class_="tick",
        )
    )

    pad = lane_h * 0.15 if lane_h >= 6 else 0.0
    big = lane_h >= 14  # room for a text label inside a bar
    index = {chain: i for i, chain in enumerate(lanes)}
    for r in rows:
        lane = index.get(r.chain_id, 0)  # a row naming no chain, when it shares the only lane
        x = x_of(r.start)
        w = max(2.0, x_of(r.end) - x)  # an instant invocation still shows
        out.append(_bar(r, lane, x, w, top + lane * lane_h + pad, lane_h - 2 * pad, lo, big))
    if not rows:
        out.append(_tag("text", "no invocations", x=LABEL_W + 8, y=_num(top + lane_h / 2 + 4)))
    out.append("</svg>")
    return "\n".join(out) + "\n"
