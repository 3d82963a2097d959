"""Tracing with OpenTelemetry's in-memory exporter: one trace per chain, a span per invocation with child spans
for the claim, the chunks, the checkpoints and the hand-off, and parent links across hand-offs and retries."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from recurse_lambda import RecursiveHandler
from recurse_lambda.chain import trace as tracing
from recurse_lambda.config import ChainConfig
from recurse_lambda.local import FaultPlan, Simulator, VirtualClock

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the 'tracing' extra")

import itertools

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclasses.dataclass(frozen=True)
class TracedConfig(ChainConfig):
    """ChainConfig with the proposed ``tracer=`` / ``tracing=`` options (until config.py has them)."""

    tracer: Any = None
    tracing: bool = False


class Step(BaseModel):
    i: int = 0


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


def counting(clock: VirtualClock, config: ChainConfig) -> RecursiveHandler:
    def fn(event: Any, state: Step, run: Any) -> Any:
        while state.i < event["n"]:
            clock.advance(0.1)
            state.i += 1
            yield
        return state.i

    return RecursiveHandler(fn, config)


def hops(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.name == "recurse_lambda.hop"),
        key=lambda s: (s.start_time or 0, s.attributes["recurse_lambda.hop"] if s.attributes else 0),
    )


def test_a_chain_is_one_trace_with_a_span_per_hop_linked_by_its_hand_offs(
    exporter: InMemorySpanExporter,
) -> None:
    clock = VirtualClock()
    config = TracedConfig(state=Step, tracer=provider(exporter), checkpoint_every_chunks=3)
    report = Simulator(counting(clock, config), timeout=1.0, clock=clock, ledger="memory").run({"n": 30})
    assert report.status == "SUCCEEDED" and report.hops > 2
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace per chain
    invocations = hops(spans)
    assert [s.attributes["recurse_lambda.hop"] for s in invocations if s.attributes] == list(
        range(report.hops)
    )
    by_id = {s.context.span_id: s for s in spans}
    for before, after in itertools.pairwise(invocations):
        assert after.parent is not None
        handoff = by_id[after.parent.span_id]  # the next hop is the child of the hand-off span
        assert handoff.name == "recurse_lambda.hand_off"
        assert handoff.parent is not None and handoff.parent.span_id == before.context.span_id
    names = Counter(s.name for s in spans)
    assert names["recurse_lambda.claim"] == report.hops
    assert names["recurse_lambda.hand_off"] == report.hops - 1
    assert names["recurse_lambda.checkpoint"] >= report.hops  # every 3 chunks
    chunks = sum(
        s.attributes["recurse_lambda.chunks"]
        for s in spans
        if s.name == "recurse_lambda.chunks" and s.attributes
    )
    assert chunks == sum(row.chunks for row in report.rows) == 31  # every chunk (and the return) in one batch
    for s in spans:  # every child span lies inside its invocation's span
        if s.name != "recurse_lambda.hop":
            assert s.parent is not None
            parent = by_id[s.parent.span_id]
            assert parent.start_time is not None and s.start_time is not None
            assert parent.start_time <= s.start_time and s.end_time <= parent.end_time  # type: ignore[operator]
    assert invocations[-1].attributes["recurse_lambda.outcome"] == "succeeded"  # type: ignore[index]


def test_retries_are_children_of_the_same_hand_off_and_stay_in_the_trace(
    exporter: InMemorySpanExporter,
) -> None:
    clock = VirtualClock()
    config = TracedConfig(state=Step, tracer=provider(exporter), checkpoint_every_chunks=2)
    faults = FaultPlan(crash=0.3, hang=0.2, duplicate=0.3)
    report = Simulator(
        counting(clock, config), timeout=1.0, clock=clock, ledger="memory", faults=faults, seed=5
    ).run({"n": 40})
    assert report.retries > 0
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    invocations = hops(spans)
    # a span for every invocation that opened its envelope (one crashed before it may have none)
    assert report.hops < len(invocations) <= report.invocations
    parents: dict[int, set[int]] = {}
    for s in invocations:
        assert s.parent is not None
        parents.setdefault(s.attributes["recurse_lambda.hop"], set()).add(s.parent.span_id)  # type: ignore[index]
    # Every attempt of a hop (first delivery or Lambda's retry) is the child of the one hand-off that sent it.
    for hop, ids in parents.items():
        assert len(ids) == 1, (hop, ids)
    retried = [
        h for h, n in Counter(s.attributes["recurse_lambda.hop"] for s in invocations).items() if n > 1
    ]  # type: ignore[index]
    assert retried, "the faults should make Lambda retry some hop"
    failed = [s for s in invocations if s.status.status_code.name == "ERROR"]
    assert failed  # a crashed or timed-out attempt is marked as an error


def test_lambda_trace_header_parents_the_first_hop_and_the_envelope_carries_both_headers(
    exporter: InMemorySpanExporter,
) -> None:
    clock = VirtualClock()
    config = TracedConfig(state=Step, tracer=provider(exporter))
    root = "1-67891233-abcdef012345678912345678"
    environ = {tracing.XRAY_ENV: f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"}
    sim = Simulator(counting(clock, config), timeout=1.0, clock=clock, ledger="memory", environ=environ)
    report = sim.run({"n": 25})
    assert report.hops > 1
    spans = exporter.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {"67891233abcdef012345678912345678"}
    first = hops(spans)[0]
    assert first.parent is not None and first.parent.span_id == 0x53995C3F42CD8AD8


def test_header_round_trips() -> None:
    tp = tracing.traceparent(0xABC, 0x123, True)
    assert tracing.parse_traceparent(tp) == (0xABC, 0x123, True)
    xr = tracing.xray_header(0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, False)
    assert xr == "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    assert tracing.parse_xray(xr) == (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, False)
    assert tracing.parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert tracing.parse_xray("Root=nonsense") is None
    trace_id, _ = tracing.chain_root("chain-1", 1767225600.0)
    assert f"{trace_id:032x}".startswith(f"{1767225600:08x}")  # X-Ray accepts it: it starts with the time


def test_tracing_is_off_by_default_and_the_envelope_carries_nothing() -> None:
    clock = VirtualClock()
    sim = Simulator(counting(clock, ChainConfig(state=Step)), timeout=1.0, clock=clock, ledger="memory")
    report = sim.run({"n": 25})
    assert report.hops > 1
    assert tracing.tracer_for(ChainConfig()) is None


# ---------------------------------------------------------------------------------------------------- Powertools


@dataclasses.dataclass(frozen=True)
class PowertoolsConfig(ChainConfig):
    """ChainConfig with the proposed ``powertools_metrics=`` option (until config.py has it)."""

    powertools_metrics: Any = None


def test_log_records_carry_the_chain_hop_and_request_id_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    sim = Simulator(counting(clock, ChainConfig(state=Step)), timeout=1.0, clock=clock, ledger="memory")
    with caplog.at_level(logging.INFO, logger="recurse_lambda"):
        report = sim.run({"n": 25})
    records = [r for r in caplog.records if hasattr(r, "recurse_lambda")]  # the hop and terminal lines
    assert len(records) >= report.hops + 1
    for r in records:
        body = r.recurse_lambda  # type: ignore[attr-defined]
        assert r.chain_id == report.chain_id  # type: ignore[attr-defined]
        assert r.hop == body["hop"] and r.request_id == body["request_id"]  # type: ignore[attr-defined]
    assert {r.hop for r in records} == set(range(report.hops))  # type: ignore[attr-defined]
    outside = logging.LogRecord("recurse_lambda", logging.INFO, __file__, 1, "x", None, None)
    assert logging.getLogger("recurse_lambda").filter(outside) and not hasattr(outside, "chain_id")


def test_powertools_logger_shows_the_fields_at_the_top_level(capsys: pytest.CaptureFixture[str]) -> None:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logger = Logger(service="trace-test", stream=sys.stdout)
    copy_config_to_registered_loggers(source_logger=logger, include={"recurse_lambda"})
    library = logging.getLogger("recurse_lambda")
    try:
        clock = VirtualClock()
        sim = Simulator(counting(clock, ChainConfig(state=Step)), timeout=1.0, clock=clock, ledger="memory")
        report = sim.run({"n": 25})
    finally:
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.setLevel(logging.NOTSET)
        library.propagate = True
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    hop_lines = [line for line in lines if line.get("recurse_lambda", {}).get("kind") == "hop"]
    assert len(hop_lines) == report.hops
    for line in hop_lines:
        assert line["chain_id"] == report.chain_id
        assert line["hop"] == line["recurse_lambda"]["hop"]
        assert line["request_id"] == line["recurse_lambda"]["request_id"]


def test_metrics_go_through_a_powertools_metrics_object() -> None:
    from aws_lambda_powertools import Metrics

    metrics = Metrics(namespace="RecurseLambdaTest", service="trace-test")
    metrics.clear_metrics()
    printed: list[str] = []
    clock = VirtualClock()
    config = PowertoolsConfig(state=Step, powertools_metrics=metrics)
    sim = Simulator(
        counting(clock, config), timeout=1.0, clock=clock, ledger="memory", metrics_sink=printed.append
    )
    try:
        report = sim.run({"n": 25})
        doc = metrics.serialize_metric_set()
    finally:
        metrics.clear_metrics()
    assert not printed  # not also printed as EMF lines of our own
    assert doc["Hops"] == [1.0] * report.hops
    assert sum(doc["Chunks"]) == 26 and doc["ChainsSucceeded"] == [1.0]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RecurseLambdaTest"
    assert doc["chain_id"] == report.chain_id


def test_an_invocation_the_deadline_killed_has_its_span_ended_at_the_deadline_and_leaks_no_fields(
    exporter: InMemorySpanExporter,
) -> None:
    clock = VirtualClock()
    config = TracedConfig(state=Step, tracer=provider(exporter), checkpoint_every_chunks=2)
    sim = Simulator(
        counting(clock, config), timeout=1.0, clock=clock, ledger="memory", faults=FaultPlan(hang=0.5), seed=2
    )
    report = sim.run({"n": 30})
    assert report.timeouts > 0
    killed = [
        s for s in hops(exporter.get_finished_spans()) if s.attributes["recurse_lambda.outcome"] == "killed"
    ]  # type: ignore[index]
    assert len(killed) == report.timeouts
    for s in killed:
        assert s.status.status_code.name == "ERROR"
        assert s.end_time is not None and s.start_time is not None
        assert abs((s.end_time - s.start_time) / 1e9 - 1.0) < 1e-6  # the whole 1 s timeout
    outside = logging.LogRecord("recurse_lambda", logging.INFO, __file__, 1, "x", None, None)
    assert logging.getLogger("recurse_lambda").filter(outside) and not hasattr(outside, "chain_id")
