"""A chain's timeline as a plain SVG picture: one lane per chain, one bar per invocation, coloured by outcome.

Pure Python and deterministic (the same report gives the same bytes), so the picture can be diffed, attached to
a bug report, or opened in any browser. Hover a bar for its figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._svg_layout import HOP_CHAR_W, LaneName, TimeAxis, duration_text, lane_names, pack, place_labels
from ._svg_parts import axis_ticks, break_mark, num, tag, text, tick_label, token

if TYPE_CHECKING:
    from ._report import ChainReport, InvocationRow

WIDTH = 1200
LABEL_W = 150  # the lane labels' column
RIGHT = 24
LANE_MAX = 34.0  # px per lane while few lanes
PLOT_MAX = 900.0  # px for all lanes: past this, lanes get thinner rather than the picture taller
LABEL_EVERY_PX = 13.0  # at least this far between two lane labels
CHAR_W = 5.8  # approximate width of a character at font-size 11

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
# The word written after a hop number in a bar wide enough (none for a plain hand-off: the colour says it).
OUTCOME_WORD = {
    "succeeded": "succeeded",
    "resent": "re-sent",
    "retrying": "raised",
    "timeout": "timed out",
    "crash": "crashed",
    "failed": "failed",
    "dropped": "duplicate",
    "lost_lease": "lost lease",
    "rejected": "rejected",
    "split": "split",
    "waiting": "waiting",
    "dispatched": "dispatched",
}
KIND_STROKE = {"retry": "4,2", "destination": "1,2"}  # dash patterns of a bar's outline, by delivery kind

# Characters XML 1.0 forbids even when escaped (an error message may hold a terminal escape or a NUL).


def category(outcome: str) -> str:
    """The colour category of a row's outcome (``other`` for anything unknown)."""
    return OUTCOME_CATEGORY.get(outcome, "other")


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
    yield tag("text", text(title), x=16, y=24, class_="title")
    line = (
        f"status {s['status']} \u00b7 {s['hops']} hops \u00b7 {s['invocations']} invocations \u00b7 "
        f"{s['retries']} retries \u00b7 {s['duplicates_dropped']} duplicates dropped \u00b7 "
        f"{s['timeouts']} timeouts \u00b7 utilisation {s['utilization']:.1%}"
    )
    if lanes > 1:
        line += f" \u00b7 {lanes} chains"
    yield tag("text", text(line), x=16, y=44, class_="summary")


def _legend(
    report: ChainReport, y: float, width: int, notes: list[str], gaps: bool
) -> tuple[list[str], float]:
    """Swatches of the categories present, then what the marks mean; wraps. Returns the last line's y."""
    present = {category(r.outcome) for r in report.rows}
    items = [(cat, label) for cat, (_, label) in CATEGORIES.items() if cat in present]
    if gaps:
        items.append(("gap", "idle time, drawn compressed: its real length is written above it"))
    items += [("", note) for note in notes]
    out: list[str] = []
    x = 16.0
    for n, (cat, label) in enumerate(items):
        item_w = (14 if cat else 0) + len(label) * CHAR_W
        first_note = not cat and n > 0 and items[n - 1][0] != ""
        if x > 16 and (x + item_w > width - RIGHT or first_note):  # the notes start a line of their own
            x, y = 16.0, y + 16
        if cat == "gap":
            out.append(tag("rect", x=num(x), y=num(y - 9), width=10, height=10, class_="gap swatch-gap"))
            out.append(break_mark(x + 5, y - 4, 5))
            x += 14
        elif cat:
            colour = CATEGORIES[cat][0]
            out.append(
                tag(
                    "rect",
                    x=num(x),
                    y=num(y - 9),
                    width=10,
                    height=10,
                    fill=colour,
                    class_=f"swatch c-{cat}",
                )
            )
            x += 14
        out.append(tag("text", text(label), x=num(x), y=num(y), class_="legend" if cat else "note"))
        x += len(label) * CHAR_W + 16
    return out, y


@dataclass
class _Bar:
    row: InvocationRow
    lane: int
    x: float
    w: float
    track: int = 0
    inside: str | None = None  # the label written in the bar, when one fits
    below: str | None = None  # the hop number written under it, when placed
    below_x: float = 0.0


def _inside_label(r: InvocationRow, w: float) -> str | None:
    word = OUTCOME_WORD.get(category(r.outcome))
    options = (
        [] if r.hop is None else [f"hop {r.hop} \u00b7 {word}" if word else f"hop {r.hop}", f"hop {r.hop}"]
    )
    options += [str(r.hop)] if r.hop is not None else [word] if word else []
    return next((o for o in options if len(o) * HOP_CHAR_W + 6 <= w), None)


def _span(label: str) -> str:
    """A bar's text inside a ``tspan``: a hop number is never mistaken for a lane name ("0") by a reader that
    looks at the text elements' own text only."""
    return tag("tspan", text(label))


def _draw_bar(b: _Bar, y: float, h: float, origin: float, text_y: float | None, below_y: float) -> str:
    r = b.row
    cat = category(r.outcome)
    colour = CATEGORIES[cat][0]
    kind = token(r.kind)
    outcome = token(r.outcome or "none")
    x, w = b.x, b.w
    if w >= 6:  # a gap between back-to-back hops, which would otherwise merge into one block
        x, w = x + 1, w - 2
    elif w >= 3:
        x, w = x + 0.5, w - 1
    work = w * min(1.0, max(0.0, r.utilization))
    dashes = KIND_STROKE.get(r.kind)
    parts = [
        tag("title", text(_tooltip(r, origin))),
        tag(
            "rect",
            x=num(x),
            y=num(y),
            width=num(w),
            height=num(h),
            fill=colour,
            fill_opacity="0.35",
            stroke="#222" if dashes else colour,
            stroke_width="1",
            stroke_dasharray=dashes,
        ),
    ]
    if work >= 0.01:
        parts.append(
            tag("rect", x=num(x), y=num(y), width=num(work), height=num(h), fill=colour, class_="work")
        )
    if b.inside and text_y is not None:
        parts.append(tag("text", _span(b.inside), x=num(x + 3), y=num(text_y), class_="label"))
    if b.below:
        mid = b.x + b.w / 2
        tick = tag("line", x1=num(mid), y1=num(y + h), x2=num(mid), y2=num(y + h + 3), class_="hop-tick")
        parts.append(tick)
        parts.append(
            tag(
                "text",
                _span(b.below),
                x=num(b.below_x),
                y=num(below_y),
                text_anchor="middle",
                class_="hop",
            )
        )
    return tag(
        "g",
        "".join(parts),
        class_=f"bar c-{cat} o-{outcome} k-{kind}",
        data_number=r.number,
        data_lane=b.lane,
        data_track=b.track,
    )


STYLE = (
    "text{font-family:'DejaVu Sans',system-ui,-apple-system,'Segoe UI',sans-serif;fill:#222}"
    ".title{font-size:16px;font-weight:600}.summary{font-size:12px}.legend,.lane,.lane-kind,.note{font-size:11px}"
    ".lane{font-weight:600}.lane-id{font-size:9px;fill:#666}"
    ".note{fill:#555}.tick{font-size:10px;fill:#555}.label,.hop{font-size:10px;fill:#111;paint-order:stroke;"
    "stroke:#fff;stroke-width:2px}.hop{fill:#333}.grid{stroke:#ddd;stroke-width:1}.stripe{fill:#f4f4f4}"
    ".gap{fill:#fff;stroke:#bbb;stroke-dasharray:2,2}.break{stroke:#555;stroke-width:1.5;fill:none}"
    ".gap-label{font-size:10px;font-weight:600;fill:#444}.hop-tick{stroke:#555;stroke-width:1}"
)


def _time_axis(rows: list[InvocationRow], report: ChainReport, plot_w: float) -> TimeAxis:
    # The axis starts where the run started (times in tooltips match the text timeline) and covers every row.
    lo = min([r.start for r in rows], default=report.started)
    hi = max([r.end for r in rows], default=report.ended)
    if report.ended > report.started:
        lo, hi = min(lo, report.started), max(hi, report.ended)
    return TimeAxis.build([(r.start, r.end) for r in rows], lo, hi, LABEL_W, plot_w)


def timeline_svg(report: ChainReport, *, title: str | None = None, width: int = WIDTH) -> str:
    """The report's timeline as an SVG document: lanes per chain, bars per invocation on a shared time axis.

    Idle stretches much longer than the invocations (Lambda's retry delays, waits) are drawn compressed, with
    their real length written above them; bars carry their hop number, inside when it fits, else below.
    """
    width = max(width, 480)
    rows = report.rows
    lanes = _lanes(report)
    prefix, names = lane_names(lanes)
    plot_w = width - LABEL_W - RIGHT
    axis = _time_axis(rows, report, plot_w)

    # Bars, and the tracks of each lane: invocations of one chain that overlap (a duplicate, a retry running
    # beside a hung attempt) are stacked rather than drawn over each other.
    index = {chain: i for i, chain in enumerate(lanes)}
    drawn: list[_Bar] = []
    for r in rows:
        x = axis.x(r.start)
        drawn.append(_Bar(r, index.get(r.chain_id, 0), x, max(3.0, axis.x(r.end) - x)))
    depth = [1] * len(lanes)
    for lane in range(len(lanes)):
        mine = [b for b in drawn if b.lane == lane]
        for b, t in zip(mine, pack([(b.x, b.x + b.w) for b in mine]), strict=True):
            b.track = t
        depth[lane] = max([b.track + 1 for b in mine], default=1)
    track_h = min(LANE_MAX, PLOT_MAX / sum(depth))
    strip = track_h >= 28  # room under a track's bars for hop numbers
    bar_pad = track_h * 0.15 if track_h >= 6 else 0.0
    for b in drawn:
        b.inside = _inside_label(b.row, b.w - 2) if track_h - 2 * bar_pad >= 12 else None

    notes = ["number on or under a bar: its hop", "dark: chunk work, pale: the rest of the invocation"]
    kinds = {r.kind for r in rows}
    if "retry" in kinds:
        notes.append("dashed outline: a Lambda retry")
    if "destination" in kinds:
        notes.append("dotted: an on-failure record")
    if max(depth) > 1:
        notes.append("bars stacked in a lane: invocations of the chain that overlapped")
    legend, legend_y = _legend(report, 66, width, notes, bool(axis.gaps))
    top = legend_y + (40 if axis.gaps else 26)
    lane_top = [top]
    for d in depth:
        lane_top.append(lane_top[-1] + d * track_h)
    plot_h = lane_top[-1] - top
    height = top + plot_h + 44

    job_named = any(n.name == "job" for n in names)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{num(height)}" '
        f'viewBox="0 0 {width} {num(height)}">',
        tag("style", STYLE),
        tag("rect", x=0, y=0, width=width, height=num(height), fill="#fff"),
        *_header(report, title, len(lanes), prefix),
        *legend,
    ]
    if prefix and not job_named:  # the chains' common prefix, said once above their labels
        out.append(tag("text", text(prefix + "\u2026"), x=16, y=num(top - 5), class_="lane"))
    out += _lane_labels(names, lanes, lane_top, plot_w)
    out += _axis(axis, top, plot_h)

    lane_of_track = [lane_top[b.lane] + b.track * track_h for b in drawn]
    below_y = track_h - 4
    for lane in range(len(lanes)):
        for t in range(depth[lane]):
            mine = [b for b in drawn if b.lane == lane and b.track == t]
            if not strip:
                continue
            need = [b for b in mine if b.row.hop is not None and not b.inside]
            items = [
                (b.x + b.w / 2, str(b.row.hop), category(b.row.outcome) != "handoff", b.row.hop or 0)
                for b in need
            ]
            for i, x in place_labels(items, LABEL_W, LABEL_W + plot_w).items():
                need[i].below, need[i].below_x = str(need[i].row.hop), x
    for b, y in zip(drawn, lane_of_track, strict=True):
        lane_strip = strip and any(o.below for o in drawn if o.lane == b.lane and o.track == b.track)
        bar_y = y + (3 if lane_strip else bar_pad)
        bar_h = (track_h - 17) if lane_strip else track_h - 2 * bar_pad
        text_y = bar_y + bar_h / 2 + 3.5 if bar_h >= 12 else None
        out.append(_draw_bar(b, bar_y, bar_h, axis.lo, text_y, y + below_y))
    if not rows:
        out.append(tag("text", "no invocations", x=LABEL_W + 8, y=num(top + track_h / 2 + 4)))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _lane_labels(
    names: list[LaneName], lanes: list[str | None], lane_top: list[float], plot_w: float
) -> list[str]:
    out: list[str] = []
    last = -1e9
    for i, name in enumerate(names):
        y, h = lane_top[i], lane_top[i + 1] - lane_top[i]
        if i % 2:
            out.append(tag("rect", x=LABEL_W, y=num(y), width=num(plot_w), height=num(h), class_="stripe"))
        two_lines = name.detail is not None and h >= 30
        ty = y + 14 if two_lines else y + min(h, LANE_MAX) / 2 + 3.5  # centred on the lane's first track
        if ty - last < LABEL_EVERY_PX:  # with many thin lanes, only some are labelled
            continue
        last = ty
        parts = [tag("title", text(lanes[i] or "invocations that named no chain"))]
        if name.kind:
            parts.append(tag("text", text(name.kind), x=16, y=num(ty), class_="lane-kind"))
            parts.append(
                tag("text", text(name.name), x=LABEL_W - 12, y=num(ty), text_anchor="end", class_="lane")
            )
        else:
            parts.append(tag("text", text(name.name), x=16, y=num(ty), class_="lane"))
        if two_lines:
            parts.append(tag("text", text(name.detail), x=16, y=num(ty + 12), class_="lane-id"))
        out.append(tag("g", "".join(parts)))  # hover a label for the chain's whole id
    return out


def _axis(axis: TimeAxis, top: float, plot_h: float) -> list[str]:
    """Ticks in real time on the parts drawn to scale, and each compressed gap with its real length."""
    out: list[str] = []
    scale, unit, ticks = axis_ticks(axis.visible)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    last = -1e9
    for value in axis.ticks(step * scale):
        x = axis.x(axis.lo + value)
        if x - last < 36:
            continue
        last = x
        out.append(tag("line", x1=num(x), y1=num(top), x2=num(x), y2=num(top + plot_h), class_="grid"))
        label = text(tick_label(value / scale, step, unit))
        out.append(
            tag("text", label, x=num(x), y=num(top + plot_h + 16), text_anchor="middle", class_="tick")
        )
    for a, b in axis.gaps:
        x0, x1 = axis.x(a), axis.x(b)
        mid = (x0 + x1) / 2
        out.append(tag("rect", x=num(x0), y=num(top), width=num(x1 - x0), height=num(plot_h), class_="gap"))
        out.append(break_mark(mid, top, 5))
        out.append(break_mark(mid, top + plot_h, 5))
        out.append(
            tag(
                "text",
                text(duration_text(b - a) + " idle"),
                x=num(mid),
                y=num(top - 8),
                text_anchor="middle",
                class_="gap-label",
                data_seconds=num(b - a),
            )
        )
    out.append(
        tag(
            "text",
            "time since the run started (idle gaps compressed)"
            if axis.gaps
            else "time since the run started",
            x=num(LABEL_W + axis.width / 2),
            y=num(top + plot_h + 34),
            text_anchor="middle",
            class_="tick",
        )
    )
    return out
