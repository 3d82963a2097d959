"""Where things go in the SVG timeline: a time axis that compresses idle gaps, tracks, lane names, hop labels.

Pure geometry, no SVG: :mod:`._svg` draws what this module places.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..shards import SHARD_ID_PREFIX

GAP_W = 64.0  # px drawn for a compressed idle gap, whatever its real length
GAP_MIN_RATIO = 4.0  # a gap is compressed only when longer than this many median invocations...
GAP_MIN_PX = 2 * GAP_W  # ...and when, drawn to scale, it would be wider than this
NAME_CHARS = 21  # a lane name's room at 11 px (the label column)
HOP_CHAR_W = 5.6  # approximate width of a character at font-size 10
NICE_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000)


def duration_text(seconds: float) -> str:
    """A gap's real length, short: ``0.35 s``, ``57 s``, ``120 s``, ``14 min``, ``3.2 h``."""
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def middle(text: str, limit: int = NAME_CHARS) -> str:
    """``text`` shortened in the middle to at most ``limit`` characters: both ends of an id stay readable."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    head = (keep + 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (keep - head) :]


@dataclass
class TimeAxis:
    """Real time -> x, linear except across long idle gaps, which each take :data:`GAP_W` pixels."""

    lo: float
    hi: float
    x0: float
    width: float
    gaps: list[tuple[float, float]] = field(default_factory=list)  # compressed (start, end), in order
    knots_t: list[float] = field(default_factory=list)
    knots_x: list[float] = field(default_factory=list)

    @classmethod
    def build(
        cls, intervals: Sequence[tuple[float, float]], lo: float, hi: float, x0: float, width: float
    ) -> TimeAxis:
        axis = cls(lo, hi if hi - lo > 1e-6 else lo + 1.0, x0, width)
        axis.gaps = _long_gaps(intervals, axis.lo, axis.hi, width)
        axis.lay_knots()
        return axis

    @property
    def visible(self) -> float:
        """The real time drawn to scale (the span less the compressed gaps)."""
        return (self.hi - self.lo) - sum(b - a for a, b in self.gaps)

    def lay_knots(self) -> None:
        # The scale divides by the very sums the knots add up (not by `visible`, whose subtraction of nearly
        # equal spans can be off by a relative 1e-5), so the last knot lands on x0 + width.
        starts, ends = [self.lo, *(b for _, b in self.gaps)], [*(a for a, _ in self.gaps), self.hi]
        shown = sum(e - s for s, e in zip(starts, ends, strict=True))
        scale = (self.width - GAP_W * len(self.gaps)) / shown if shown > 0 else 0.0
        t, x = self.lo, self.x0
        self.knots_t, self.knots_x = [t], [x]
        for a, b in self.gaps:
            x += (a - t) * scale
            self.knots_t += [a, b]
            self.knots_x += [x, x + GAP_W]
            t, x = b, x + GAP_W
        self.knots_t.append(self.hi)
        self.knots_x.append(x + (self.hi - t) * scale)

    def x(self, t: float) -> float:
        i = min(max(bisect.bisect_right(self.knots_t, t) - 1, 0), len(self.knots_t) - 2)
        t0, t1 = self.knots_t[i], self.knots_t[i + 1]
        x0, x1 = self.knots_x[i], self.knots_x[i + 1]
        return x0 if t1 <= t0 else x0 + (t - t0) / (t1 - t0) * (x1 - x0)

    def in_gap(self, t: float) -> bool:
        return any(a < t < b for a, b in self.gaps)

    def ticks(self, step_s: float) -> list[float]:
        """Multiples of ``step_s`` (seconds since ``lo``) on the parts drawn to scale."""
        out: list[float] = []
        starts = [self.lo, *(b for _, b in self.gaps)]
        ends = [*(a for a, _ in self.gaps), self.hi]
        for a, b in zip(starts, ends, strict=True):
            k = math.ceil((a - self.lo) / step_s - 1e-9)
            while self.lo + k * step_s <= b + 1e-9:
                out.append(k * step_s)
                k += 1
        return out


def _long_gaps(
    intervals: Sequence[tuple[float, float]], lo: float, hi: float, width: float
) -> list[tuple[float, float]]:
    """The idle stretches (no invocation running in any lane) worth compressing, in order."""
    if not intervals:
        return []
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    edges = [lo, *(v for m in merged for v in m), hi]
    idle = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] > edges[i]]
    typical = statistics.median(b - a for a, b in intervals)
    candidates = sorted((g for g in idle if g[1] - g[0] > GAP_MIN_RATIO * typical), key=lambda g: g[0] - g[1])
    chosen: list[tuple[float, float]] = []
    for gap in candidates:  # longest first; each compression widens what remains
        shown = (hi - lo) - sum(b - a for a, b in chosen)
        scale = (width - GAP_W * len(chosen)) / shown
        rest = shown - (gap[1] - gap[0])
        if (
            (gap[1] - gap[0]) * scale <= GAP_MIN_PX
            or rest <= 0
            or width - GAP_W * (len(chosen) + 1) < width / 2
        ):
            break
        chosen.append(gap)
    return sorted(chosen)


def pack(spans: Sequence[tuple[float, float]]) -> list[int]:
    """A track for each (x0, x1) span so that spans on one track never overlap: first free track, by x0."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], i))
    ends: list[float] = []
    track = [0] * len(spans)
    for i in order:
        x0, x1 = spans[i]
        for t, end in enumerate(ends):
            if end <= x0 + 0.5:
                track[i], ends[t] = t, x1
                break
        else:
            track[i] = len(ends)
            ends.append(x1)
    return track


@dataclass
class LaneName:
    kind: str | None  # "shard" before a shard's number, else None
    name: str
    detail: str | None = None  # a second, smaller line (a chain's id shortened in the middle)


def lane_names(lanes: Sequence[str | None]) -> tuple[str, list[LaneName]]:
    """Readable lane names, and the prefix every chain id shares when it is left out of them.

    One chain: ``chain``, its id below. A sharded job: ``job`` and ``shard 0``, ``shard 1``... Several chains
    (a trigger's): their ids without the shared prefix, shortened in the middle.
    """
    if len(lanes) == 1:
        only = lanes[0]
        return "", [LaneName(None, "chain", middle(only) if only else None)]
    shards = {c for c in lanes if c is not None and c.startswith(SHARD_ID_PREFIX)}
    bare = [c.removeprefix(SHARD_ID_PREFIX) if c is not None else None for c in lanes]
    ids = [c + "/" for c in bare if c is not None]
    common = ids[0] if len(ids) > 1 else ""
    for other in ids[1:]:
        while not other.startswith(common):
            common = common[:-1]
    prefix = common[: common.rfind("/") + 1]  # whole path segments only: "job/", never "job/00"
    has_job = any(c is not None and c + "/" == prefix for c in bare)
    names: list[LaneName] = []
    for full, lane in zip(lanes, bare, strict=True):
        if lane is None:
            names.append(LaneName(None, "(no chain)"))
        elif lane + "/" == prefix:
            names.append(LaneName(None, "job", middle(lane)))
        else:
            rest = lane[len(prefix) :] or lane
            if rest.isdigit() and (full in shards or has_job):
                names.append(LaneName("shard", str(int(rest))))
            else:
                names.append(LaneName(None, middle(rest)))
    return prefix, names


def nice_every(pitch: float, label_w: float) -> int:
    """The smallest round N such that labels of every N-th bar, ``pitch`` px apart, do not touch."""
    for n in NICE_STEPS:
        if n * pitch >= label_w:
            return n
    return NICE_STEPS[-1]


def place_labels(items: Sequence[tuple[float, str, bool, int]], lo: float, hi: float) -> dict[int, float]:
    """Non-overlapping labels under a track's bars: (centre x, text, notable, hop) in, {item: label x} out.

    Notable bars (anything but a plain hand-off) are labelled first, then every N-th hop (N round, from the
    bars' spacing) and the last bar, each where it does not touch a label already placed.
    """
    if not items:
        return {}
    widest = max(len(text) for _, text, _, _ in items) * HOP_CHAR_W + 6
    pitch = (items[-1][0] - items[0][0]) / max(1, len(items) - 1) if len(items) > 1 else widest
    every = nice_every(pitch, widest)
    wanted = [i for i, item in enumerate(items) if item[2] or item[3] % every == 0 or i == len(items) - 1]
    ranked = sorted(wanted, key=lambda i: (not items[i][2], items[i][3] % every != 0, i))
    taken: list[tuple[float, float]] = []
    out: dict[int, float] = {}
    for i in ranked:
        x, text, _, _ = items[i]
        half = len(text) * HOP_CHAR_W / 2 + 2
        x = min(max(x, lo + half), hi - half)
        if any(a < x + half and x - half < b for a, b in taken):
            continue
        taken.append((x - half, x + half))
        out[i] = x
    return out
