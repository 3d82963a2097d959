"""The SVG primitives the timeline is drawn with: escaped text and attributes, tags, numbers, axis ticks."""

from __future__ import annotations

import math
import re

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def text(value: object) -> str:
    s = _NOT_XML.sub("\ufffd", str(value))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def attr(value: object) -> str:
    return '"' + text(value).replace('"', "&quot;").replace("\n", "&#10;") + '"'


def num(x: float) -> str:
    """Two decimals, without a trailing ``.00``: short output, the same bytes every time."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def tag(name: str, body: str = "", **attrs: object) -> str:
    parts = "".join(
        f" {k.rstrip('_').replace('_', '-')}={attr(v)}" for k, v in attrs.items() if v is not None
    )
    return f"<{name}{parts}>{body}</{name}>" if body else f"<{name}{parts}/>"


def axis_ticks(span: float) -> tuple[float, str, list[float]]:
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


def tick_label(value: float, step: float, unit: str) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:.{decimals}f} {unit}"


def break_mark(x: float, y: float, half: float) -> str:
    """An axis-break mark: two short parallel slashes centred on (x, y)."""
    d = " ".join(
        f"M{num(x + dx - half / 2)},{num(y + half)} L{num(x + dx + half / 2)},{num(y - half)}"
        for dx in (-2, 2)
    )
    return tag("path", d=d, class_="break")


def token(value: str) -> str:
    """``value`` made safe as a CSS class or data token."""
    return _NOT_TOKEN.sub("_", value)
