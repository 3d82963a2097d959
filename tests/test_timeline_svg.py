"""The SVG timeline: valid XML, a bar per invocation coloured by outcome, a lane per chain, a real time axis."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda.local import ChainReport, FaultPlan, InvocationRow, Simulator, VirtualClock
from recurse_lambda.local._svg import CATEGORIES, category, timeline_svg
from tests.conftest import counting_handler

SVG = "{http://www.w3.org/2000/svg}"


def row(number: int, start: float, end: float, outcome: str = "handed_off", **fields: Any) -> InvocationRow:
    values: dict[str, Any] = {
        "request_id": f"req-{number}",
        "kind": "hand_off" if number > 1 else "first",
        "attempt": 1,
        "container": 0,
        "cold": number == 1,
        "hop": number - 1,
        "chunks": 4,
        "chunk_time": (end - start) * 0.5,
        "chain_id": "chain-1",
    }
    values.update(fields)
    return InvocationRow(number=number, start=start, end=end, outcome=outcome, **values)


def report_of(*rows: InvocationRow, status: str = "SUCCEEDED") -> ChainReport:
    chain = next((r.chain_id for r in rows if r.chain_id), None)
    end = max((r.end for r in rows), default=0.0)
    return ChainReport(chain_id=chain, status=status, rows=list(rows), started=0.0, ended=end)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))


def bars(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "bar" in g.get("class", "").split()]


def classes(bar: ET.Element) -> set[str]:
    return set(bar.get("class", "").split())


def outer(bar: ET.Element) -> ET.Element:
    """The bar's full-length rectangle (the first), as opposed to its chunk-work part."""
    rect = bar.find(f"{SVG}rect")
    assert rect is not None
    return rect


def tooltip(bar: ET.Element) -> str:
    return bar.findtext(f"{SVG}title") or ""


def texts(root: ET.Element, cls: str) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text") if cls in t.get("class", "").split()]


ALL_OUTCOMES = {
    "handed_off": "handoff",
    "succeeded": "succeeded",
    "resent": "resent",
    "retrying": "retrying",
    "error": "retrying",
    "timeout": "timeout",
    "crash": "crash",
    "failed": "failed",
    "duplicate": "dropped",
    "stale": "dropped",
    "lost_lease": "lost_lease",
    "rejected": "rejected",
    "": "other",
    "something new": "other",
}


def test_the_picture_is_an_svg_document_with_a_view_box() -> None:
    root = parse(timeline_svg(report_of(row(1, 0.0, 4.0), row(2, 4.1, 6.0, "succeeded"))))
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == "1200"
    x, y, w, h = map(float, (root.get("viewBox") or "").split())
    assert (x, y, w) == (0, 0, 1200) and h == float(root.get("height") or 0) > 100


@pytest.mark.parametrize(("outcome", "cat"), list(ALL_OUTCOMES.items()))
def test_each_outcome_has_its_colour(outcome: str, cat: str) -> None:
    [bar] = bars(parse(timeline_svg(report_of(row(1, 0.0, 2.0, outcome)))))
    assert f"c-{cat}" in classes(bar)
    assert outer(bar).get("fill") == CATEGORIES[cat][0]


def test_one_bar_per_invocation_in_order_of_the_rows() -> None:
    rows = [row(i + 1, i * 10.0, i * 10.0 + 8.0, outcome) for i, outcome in enumerate(ALL_OUTCOMES)]
    root = parse(timeline_svg(report_of(*rows)))
    found = bars(root)
    assert [b.get("data-number") for b in found] == [str(r.number) for r in rows]
    for bar, r in zip(found, rows, strict=True):
        assert f"c-{category(r.outcome)}" in classes(bar)
    # Every colour used is in the legend, and only those.
    swatches = {c for s in root.iter(f"{SVG}rect") for c in s.get("class", "").split() if c.startswith("c-")}
    assert swatches == {f"c-{cat}" for cat in ALL_OUTCOMES.values()}
    only_work = parse(timeline_svg(report_of(row(1, 0.0, 2.0))))
    assert texts(only_work, "legend") == ["handed off"]


def test_deliveries_are_told_apart_by_their_outline() -> None:
    first = row(1, 0.0, 5.0, "crash")
    retry = row(2, 65.0, 70.0, "handed_off", kind="retry", attempt=2, hop=0)
    duplicate = row(3, 66.0, 66.1, "duplicate", kind="duplicate", hop=0, chunks=0, chunk_time=0.0)
    root = parse(timeline_svg(report_of(first, retry, duplicate)))
    a, b, c = bars(root)
    assert "k-first" in classes(a) and outer(a).get("stroke-dasharray") is None
    assert "k-retry" in classes(b) and outer(b).get("stroke-dasharray")
    assert "k-duplicate" in classes(c) and "c-dropped" in classes(c)
    assert any("dashed outline" in t for t in texts(root, "note"))


def test_the_dark_part_of_a_bar_is_its_chunk_work() -> None:
    busy = row(1, 0.0, 40.0, chunk_time=30.0)  # 75 % utilisation
    idle = row(2, 40.0, 80.0, "stale", chunks=0, chunk_time=0.0)
    busy_bar, idle_bar = bars(parse(timeline_svg(report_of(busy, idle))))
    whole, work = busy_bar.findall(f"{SVG}rect")
    assert work.get("class") == "work"
    assert float(work.get("width") or 0) == pytest.approx(0.75 * float(whole.get("width") or 0), abs=0.02)
    assert whole.get("fill-opacity") == "0.35" and work.get("fill-opacity") is None
    assert len(idle_bar.findall(f"{SVG}rect")) == 1  # no work, no dark part


def test_the_tooltip_gives_the_figures_of_the_hop() -> None:
    r = row(4, 10.0, 30.0, "handed_off", kind="retry", attempt=2, hop=3, chunks=12, chunk_time=15.0)
    [bar] = bars(parse(timeline_svg(report_of(row(1, 0.0, 10.0), r))))[1:]
    text = tooltip(bar)
    for part in ("#4", "hop 3", "retry", "attempt 2", "start 10.000 s", "duration 20.000 s", "chunks 12"):
        assert part in text
    assert "utilisation 75.0%" in text and "outcome handed_off" in text


def test_wide_bars_say_their_hop_and_how_they_ended_narrow_ones_carry_it_below() -> None:
    # (Replaces a test that pinned "hop 0 · 80%" in the bar: the utilisation is the dark part and the tooltip;
    # the text now says what a glance needs, the hop and, unless it handed off, how it ended.)
    wide = row(1, 0.0, 100.0, chunk_time=80.0)
    ended = row(2, 100.0, 200.0, "timeout", chunk_time=80.0)
    narrow = row(3, 200.0, 200.5, "succeeded", chunk_time=0.4)
    wide_bar, ended_bar, narrow_bar = bars(parse(timeline_svg(report_of(wide, ended, narrow))))
    assert visible(wide_bar) == ["hop 0"]
    assert visible(ended_bar) == ["hop 1 \u00b7 timed out"]
    assert [("".join(t.itertext()), t.get("class")) for t in narrow_bar.iter(f"{SVG}text")] == [("2", "hop")]


def test_a_later_invocation_is_further_right_and_longer_is_wider() -> None:
    rows = [row(1, 0.0, 10.0), row(2, 50.0, 70.0), row(3, 100.0, 110.0, "succeeded")]
    a, b, c = (outer(bar) for bar in bars(parse(timeline_svg(report_of(*rows)))))
    xs = [float(r.get("x") or 0) for r in (a, b, c)]
    assert xs == sorted(xs) and xs[0] < xs[1] < xs[2]
    # Positions and widths are proportional to time (up to the 1 px gap drawn between bars).
    assert (xs[1] - xs[0]) == pytest.approx(xs[2] - xs[1], abs=0.1)
    assert float(b.get("width") or 0) + 2 == pytest.approx(2 * (float(a.get("width") or 0) + 2), abs=0.1)


@pytest.mark.parametrize(
    ("span", "unit", "first_ticks"),
    [
        (30.0, "s", ["0 s", "5 s", "10 s"]),
        (1800.0, "min", ["0 min", "5 min"]),
        (5 * 3600.0, "h", ["0.0 h", "0.5 h"]),
    ],
)
def test_the_time_axis_unit_follows_the_span(span: float, unit: str, first_ticks: list[str]) -> None:
    root = parse(timeline_svg(report_of(row(1, 0.0, span / 2), row(2, span / 2, span, "succeeded"))))
    ticks = [
        t for t in root.iter(f"{SVG}text") if t.get("class") == "tick" and t.text and t.text[0].isdigit()
    ]
    labels = [t.text or "" for t in ticks]
    assert 3 <= len(labels) <= 11
    assert all(label.endswith(f" {unit}") for label in labels)
    assert labels[: len(first_ticks)] == first_ticks
    xs = [float(t.get("x") or 0) for t in ticks]
    assert xs == sorted(xs)


def test_each_chain_gets_a_lane_labelled_without_the_shared_prefix() -> None:
    rows = [
        row(1, 0.0, 5.0, chain_id="job/0000"),
        row(2, 0.5, 5.0, chain_id="job/0001"),
        row(3, 5.1, 9.0, "succeeded", chain_id="job/0000"),
        row(4, 1.0, 6.0, chain_id="job/0002"),
        row(5, 6.0, 8.0, "succeeded", chain_id="job/0001"),
        row(6, 6.1, 9.0, "succeeded", chain_id="job/0002"),
    ]
    root = parse(timeline_svg(report_of(*rows)))
    lanes = {b.get("data-number"): int(b.get("data-lane") or -1) for b in bars(root)}
    assert lanes == {"1": 0, "2": 1, "3": 0, "4": 2, "5": 1, "6": 2}
    ys = {b.get("data-number"): float(outer(b).get("y") or 0) for b in bars(root)}
    assert ys["1"] == ys["3"] < ys["2"] == ys["5"] < ys["4"] == ys["6"]
    labels = texts(root, "lane")
    assert labels == ["job/\u2026", "0000", "0001", "0002"]
    full = [
        g.findtext(f"{SVG}title")
        for g in root.iter(f"{SVG}g")
        if g.find(f"{SVG}text[@class='lane']") is not None
    ]
    assert full == ["job/0000", "job/0001", "job/0002"]
    assert "3 chains" in " ".join(texts(root, "summary"))


def test_rows_that_name_no_chain_join_the_only_chain_or_get_their_own_lane() -> None:
    lost = row(2, 5.0, 5.1, "rejected", kind="duplicate", chunks=0, chunk_time=0.0, chain_id=None)
    single = parse(timeline_svg(report_of(row(1, 0.0, 5.0), lost)))
    assert {b.get("data-lane") for b in bars(single)} == {"0"}
    sharded = parse(
        timeline_svg(report_of(row(1, 0.0, 5.0, chain_id="j/0"), lost, row(3, 1, 6, chain_id="j/1")))
    )
    assert [b.get("data-lane") for b in bars(sharded)] == ["0", "1", "2"]
    assert any(label.endswith("(no chain)") for label in texts(sharded, "lane"))


def test_hundreds_of_lanes_stay_readable() -> None:
    rows = [row(i + 1, i * 0.1, i * 0.1 + 30.0, chain_id=f"big-job/{i:04d}") for i in range(300)]
    root = parse(timeline_svg(report_of(*rows)))
    assert len(bars(root)) == 300
    assert float(root.get("height") or 0) < 1200  # lanes get thinner rather than the picture taller
    labels = texts(root, "lane")
    assert 10 < len(labels) < 150  # every n-th lane is labelled, so labels do not overlap
    few = parse(timeline_svg(report_of(*rows[:3])))
    assert len(texts(few, "lane")) == 4  # the prefix, then every lane


def test_the_header_summarises_the_chain() -> None:
    rows = [
        row(1, 0.0, 5.0, "timeout"),
        row(2, 65.0, 69.0, kind="retry", attempt=2, hop=0),
        row(3, 66.0, 66.0, "duplicate", kind="duplicate", chunks=0, chunk_time=0.0),
        row(4, 69.1, 72.0, "failed", hop=1),
    ]
    report = report_of(*rows, status="FAILED")
    root = parse(timeline_svg(report, title="my chain"))
    assert texts(root, "title") == ["my chain"]
    [summary] = texts(root, "summary")
    for part in (
        "status FAILED",
        "2 hops",
        "4 invocations",
        "1 retries",
        "1 duplicates dropped",
        "1 timeouts",
    ):
        assert part in summary
    assert f"utilisation {report.utilization:.1%}" in summary
    assert texts(parse(timeline_svg(report)), "title") == ["recurse-lambda chain chain-1"]


def test_hostile_text_is_escaped() -> None:
    evil = '<script>alert("x")</script> & \x00\x1b[31m ]]> \u2603'
    r = row(1, 0.0, 5.0, "error", error=evil, chain_id='c<&">')
    svg = timeline_svg(report_of(r), title="</svg><script>")
    assert "<script>" not in svg and "\x00" not in svg
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    text = tooltip(bars(root)[0])
    assert '<script>alert("x")</script> & ' in text and "\u2603" in text  # shown as written, not run
    assert texts(root, "title") == ["</svg><script>"]


def test_the_same_report_gives_the_same_bytes() -> None:
    def run() -> str:
        clock = VirtualClock()
        faults = FaultPlan(duplicate=0.3, crash=0.2)
        sim = Simulator(
            counting_handler(clock), timeout=5.0, clock=clock, ledger="memory", faults=faults, seed=4
        )
        return sim.run({"n": 200}).timeline_svg()

    first = run()
    assert first == run()
    assert re.search(r"\d\.\d{3,}\"", first) is None  # coordinates are rounded, not float noise


def faulty_run(seed: int) -> ChainReport:
    clock = VirtualClock()
    faults = FaultPlan(duplicate=0.3, crash=0.15, hang=0.15)
    sim = Simulator(
        counting_handler(clock), timeout=5.0, clock=clock, ledger="memory", faults=faults, seed=seed
    )
    return sim.run({"n": 200})


def test_a_simulated_chain_with_faults_is_drawn_bar_for_row() -> None:
    # The first seed whose schedule has a timeout, a crash, a retry and a dropped duplicate (a few tries).
    report = next(
        r
        for r in map(faulty_run, range(100))
        if r.timeouts and r.retries and r.duplicates_dropped and r.count("crash")
    )
    root = parse(report.timeline_svg())
    drawn = bars(root)
    assert len(drawn) == report.invocations
    for bar, r in zip(drawn, report.rows, strict=True):
        assert bar.get("data-number") == str(r.number)
        assert {f"c-{category(r.outcome)}", f"k-{r.kind}"} <= classes(bar)
        assert f"utilisation {r.utilization:.1%}" in tooltip(bar)
    found = set().union(*(classes(b) for b in drawn))
    assert {"c-timeout", "c-crash", "c-dropped", "c-handoff", "k-retry"} <= found


def test_an_empty_report_still_draws() -> None:
    root = parse(timeline_svg(ChainReport(chain_id=None, status="RUNNING")))
    assert bars(root) == [] and "no invocations" in "".join(root.itertext())


def test_write_timeline_writes_the_file(tmp_path: Path) -> None:
    report = report_of(row(1, 0.0, 5.0, "succeeded"))
    path = report.write_timeline(tmp_path / "chain.svg", title="written")
    assert path == tmp_path / "chain.svg"
    assert path.read_text(encoding="utf-8") == report.timeline_svg(title="written")
    assert texts(parse(path.read_text(encoding="utf-8")), "title") == ["written"]


# --- Readable at a glance: hop numbers as text, compressed idle gaps, lane names, a legend, 300 hops ---

import itertools  # noqa: E402

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from recurse_lambda.local._svg import LABEL_W, RIGHT, WIDTH  # noqa: E402
from recurse_lambda.local._svg_layout import GAP_W, HOP_CHAR_W, TimeAxis, middle  # noqa: E402


def visible(bar: ET.Element) -> list[str]:
    """The text drawn in or under a bar (its tooltip aside)."""
    return ["".join(t.itertext()) for t in bar.iter(f"{SVG}text")]


def hop_of(text: str) -> str:
    return text.removeprefix("hop ").split(" ")[0]


def test_every_hop_of_a_short_chain_is_labelled_with_its_number() -> None:
    clock = VirtualClock()
    report = Simulator(counting_handler(clock), timeout=5.0, clock=clock, ledger="memory").run({"n": 300})
    assert 5 <= report.hops <= 12
    drawn = bars(parse(report.timeline_svg()))
    assert [hop_of(t) for b in drawn for t in visible(b)] == [str(r.hop) for r in report.rows]


def test_a_two_hop_chain_names_each_hop_and_its_end_inside_the_bar() -> None:
    root = parse(timeline_svg(report_of(row(1, 0.0, 4.0), row(2, 4.1, 8.0, "succeeded"))))
    assert [visible(b) for b in bars(root)] == [["hop 0"], ["hop 1 \u00b7 succeeded"]]


def gap_report() -> ChainReport:
    """A hop that raised, Lambda's 120 s retry delay, then the retry and one more hop."""
    return report_of(
        row(1, 0.0, 2.0, "error"),
        row(2, 122.0, 124.0, kind="retry", attempt=2, hop=0),
        row(3, 124.05, 126.0, "succeeded", hop=1),
    )


def test_a_long_idle_gap_is_drawn_narrow_and_says_how_long_it_was() -> None:
    root = parse(timeline_svg(gap_report()))
    [gap] = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "gap"]
    assert float(gap.get("width") or 0) <= GAP_W  # 120 s of nothing takes a fixed, small width...
    [label] = [t for t in root.iter(f"{SVG}text") if t.get("class") == "gap-label"]
    assert label.text == "120 s idle" and label.get("data-seconds") == "120"  # ...and is said in words
    first, retry, last = (outer(b) for b in bars(root))
    # The work gets the room: each 2 s invocation is hundreds of pixels wide, not a sliver of a 126 s axis.
    assert min(float(r.get("width") or 0) for r in (first, retry, last)) > 250
    gap_x = float(gap.get("x") or 0)
    assert float(first.get("x") or 0) + float(first.get("width") or 0) <= gap_x + 1
    assert gap_x + float(gap.get("width") or 0) <= float(retry.get("x") or 0) + 1
    ticks = [
        t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "tick" and t.text[:1].isdigit()
    ]
    assert "122 s" in ticks or "123 s" in ticks  # the axis keeps real time after the break
    assert any("idle time, drawn compressed" in t for t in texts(root, "legend"))


def test_short_pauses_between_hops_are_not_compressed() -> None:
    root = parse(
        timeline_svg(report_of(row(1, 0.0, 10.0), row(2, 15.0, 25.0), row(3, 30.0, 40.0, "succeeded")))
    )
    assert not [r for r in root.iter(f"{SVG}rect") if r.get("class") == "gap"]


@given(
    st.lists(
        st.tuples(st.floats(0, 1e5, allow_nan=False), st.floats(0, 600, allow_nan=False)),
        min_size=1,
        max_size=40,
    )
)
@example(
    [(0.0, 1.6242699869161765e-11), (1.0, 0.0)]
)  # found by CI: the last knot was 0.0015 px past the plot
def test_the_time_axis_is_monotonic_and_fits_the_plot(spans: list[tuple[float, float]]) -> None:
    intervals = [(a, a + d) for a, d in spans]
    lo, hi = min(a for a, _ in intervals), max(b for _, b in intervals)
    axis = TimeAxis.build(intervals, lo, hi, LABEL_W, 1000.0)
    points = sorted({lo, hi, *(t for iv in intervals for t in iv)})
    xs = [axis.x(t) for t in points]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(xs))
    assert xs[0] >= LABEL_W - 1e-6 and xs[-1] <= LABEL_W + 1000.0 + 1e-6
    for a, b in axis.gaps:  # a compressed gap is idle: no invocation runs inside it
        assert not any(s < b and a < e for s, e in intervals)


def test_a_300_hop_chain_keeps_its_width_and_readable_hop_numbers() -> None:
    rows = [row(i + 1, i * 1.0, i * 1.0 + 0.95, "handed_off", hop=i) for i in range(300)]
    rows[137] = row(138, 137.0, 137.95, "timeout", hop=137)
    rows[-1] = row(300, 299.0, 299.95, "succeeded", hop=299)
    root = parse(timeline_svg(report_of(*rows)))
    assert root.get("width") == str(WIDTH) and len(bars(root)) == 300
    assert float(root.get("height") or 0) < 300  # one lane: the picture does not grow with the hops
    shown = [
        (float(t.get("x") or 0), "".join(t.itertext()))
        for b in bars(root)
        for t in b.iter(f"{SVG}text")
        if t.get("class") == "hop"
    ]
    numbers = [int(text) for _, text in shown]
    assert {0, 137, 299} <= set(numbers)  # the ends, and the hop that timed out
    regular = [n for n in numbers if n % 10 == 0]
    # Every 10th hop, but for those whose label would touch the timed-out hop's, which comes first.
    assert set(regular) <= set(range(0, 300, 10)) and set(range(0, 300, 10)) - set(regular) <= {130, 140}
    spans = sorted((x - len(s) * HOP_CHAR_W / 2, x + len(s) * HOP_CHAR_W / 2) for x, s in shown)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no two labels overlap
    assert spans[0][0] >= LABEL_W and spans[-1][1] <= WIDTH - RIGHT


def test_lanes_have_readable_names() -> None:
    chain = "ev-8a9f4c1bbbcc647d0123456789fa20c4af5e"
    root = parse(timeline_svg(report_of(row(1, 0.0, 5.0, "succeeded", chain_id=chain))))
    assert texts(root, "lane") == ["chain"]
    [short] = texts(root, "lane-id")
    assert (
        short == middle(chain)
        and short.startswith("ev-8a9f")
        and short.endswith("af5e")
        and "\u2026" in short
    )
    job = "orders-2024-06-01/7f3a9c2e"
    rows = [row(1, 0.0, 1.0, "split", chain_id=job)]
    rows += [row(i + 2, 1.1, 5.0, "succeeded", hop=0, chain_id=f"@shard/{job}/{i:02d}") for i in range(3)]
    sharded = parse(timeline_svg(report_of(*rows)))
    lines = []
    for g in sharded.iter(f"{SVG}g"):
        if g.find(f"{SVG}title") is not None and g.find(f"{SVG}text[@class='lane']") is not None:
            lines.append(" ".join(t.text or "" for t in g.iter(f"{SVG}text") if t.get("class") != "lane-id"))
    assert lines == ["job", "shard 0", "shard 1", "shard 2"]


@given(st.text(min_size=0, max_size=80), st.integers(3, 40))
def test_an_id_is_shortened_in_the_middle(text: str, limit: int) -> None:
    short = middle(text, limit)
    assert len(short) <= max(limit, 0) or short == text
    if len(text) <= limit:
        assert short == text
    else:
        head, tail = short.split("\u2026", 1) if short.count("\u2026") == 1 else (short[: limit // 2], "")
        assert text.startswith(head) and text.endswith(tail) and abs(len(head) - len(tail)) <= 1


def test_overlapping_invocations_of_a_chain_are_stacked_not_hidden() -> None:
    first = row(1, 0.0, 5.0, "timeout")
    duplicate = row(2, 1.0, 4.0, "duplicate", kind="duplicate", hop=0, chunks=0, chunk_time=0.0)
    root = parse(timeline_svg(report_of(first, duplicate, row(3, 5.1, 9.0, "succeeded"))))
    a, b, c = bars(root)
    assert (a.get("data-track"), b.get("data-track"), c.get("data-track")) == ("0", "1", "0")
    assert float(outer(b).get("y") or 0) > float(outer(a).get("y") or 0) + float(outer(a).get("height") or 0)
    assert any("overlapped" in t for t in texts(root, "note"))


def test_the_legend_explains_every_mark_used() -> None:
    root = parse(timeline_svg(gap_report()))
    assert texts(root, "legend")[:3] == ["handed off", "succeeded", "raised: Lambda retries"]
    notes = " ".join(texts(root, "note"))
    for part in ("its hop", "dark: chunk work", "dashed outline: a Lambda retry"):
        assert part in notes
