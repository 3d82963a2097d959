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
    assert [t.text for t in wide_bar.iter(f"{SVG}text") if t.get("class") == "label"] == ["hop 0"]
    assert [t.text for t in ended_bar.iter(f"{SVG}text")] == ["hop 1 \u00b7 timed out"]
    assert [(t.text, t.get("class")) for t in narrow_bar.iter(f"{SVG}text")] == [("2", "hop")]


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
