"""Every payload the library writes is RFC 8259 JSON, even when the state holds NaN or ±inf (issue 9, item 2)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from recurse_lambda import (
    ChainFailureNotice,
    ConfigurationError,
    InMemoryLedger,
    WarmState,
    World,
    after_chunks,
    recursive,
)
from recurse_lambda.cli import main
from recurse_lambda.core.state_codec import dump_state, jsonable, load_state, strict_dumps
from recurse_lambda.local import FakeContext, MemorySpillStore, VirtualClock
from tests.conftest import simulate


def _no_constants(name: str) -> Any:
    raise ValueError(f"not RFC 8259 JSON: {name}")


def strict_loads(text: str | bytes) -> Any:
    return json.loads(text, parse_constant=_no_constants)


def strict(value: Any) -> None:
    """``value`` (as the library stores it) is RFC 8259 JSON."""
    json.dumps(value, allow_nan=False)


class Best(BaseModel):
    i: int = 0
    best: float = -math.inf
    odd: float = math.nan
    values: list[float] = Field(default_factory=list)
    pad: str = ""


class RecordingInvoker:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.payloads.append(payload)


class Notices:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def notify(self, notice: ChainFailureNotice) -> None:
        self.texts.append(notice.to_json(include_state=True))


def best_handler(clock: VirtualClock, *, fail_at: int | None = None, **options: Any):
    @recursive(state=Best, policy=after_chunks(2), **options)
    def handler(event: Any, state: Best, run: Any):
        while state.i < event["n"]:
            clock.advance(0.1)
            if state.i == fail_at:
                raise ConfigurationError("stop here")
            state.values.append([math.nan, math.inf, -math.inf, 1.5][state.i % 4])
            state.pad = "x" * 300  # spills past max_payload_bytes
            state.i += 1
            yield
        return {"i": state.i, "best": None if math.isinf(state.best) else state.best}

    return handler


def drive(handler: Any, clock: VirtualClock, event: Any) -> tuple[list[dict[str, Any]], InMemoryLedger, Any]:
    """Run a chain hop by hop, parsing every hand-off payload strictly; checks the ledger after every hop."""
    ledger, spill, invoker = InMemoryLedger(), MemorySpillStore(), RecordingInvoker()
    responses: list[dict[str, Any]] = []
    for number in range(50):
        ctx = FakeContext(clock=clock, deadline=clock.now() + 10, aws_request_id=f"r-{number}")
        world = World(clock=clock, invoker=invoker, warm=WarmState(), ledger=ledger, spill=spill)
        sent = len(invoker.payloads)
        out = handler.handle(event, ctx, world)
        responses.append(out)
        strict_loads(json.dumps(out, allow_nan=False))  # the handler's response (Lambda serialises it)
        record = ledger.get(out["chain_id"])
        assert record is not None
        strict((record.progress, record.event, record.result, record.error))
        for body in spill.objects.values():
            strict_loads(body)
        if len(invoker.payloads) == sent:
            return responses, ledger, spill
        event = strict_loads(invoker.payloads[-1])
    raise AssertionError("the chain did not end")


def test_every_payload_of_a_chain_with_non_finite_state_is_strict_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="recurse_lambda")
    clock = VirtualClock()
    responses, _, spill = drive(best_handler(clock, max_payload_bytes=600), clock, {"n": 7})
    assert responses[-1]["status"] == "SUCCEEDED" and responses[-1]["result"] == {"i": 7, "best": None}
    assert len(responses) == 4 and spill.objects  # several hops, and the envelopes spilled
    body = strict_loads(next(iter(spill.objects.values())))
    assert body["progress"]["state"]["best"] == "-Infinity" and body["progress"]["state"]["odd"] == "NaN"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("{")]
    assert lines
    for line in lines:
        strict_loads(line)


def test_unspilled_envelopes_are_strict_json_and_state_comes_back_exactly() -> None:
    clock = VirtualClock()
    responses, ledger, _ = drive(best_handler(clock), clock, {"n": 5})
    record = ledger.get(responses[-1]["chain_id"])
    assert record is not None
    state = load_state(Best, record.progress["state"])
    assert state.best == -math.inf and math.isnan(state.odd)
    assert [repr(v) for v in state.values] == ["nan", "inf", "-inf", "1.5", "nan"]


def test_a_failure_notice_and_the_failed_response_are_strict_json() -> None:
    clock = VirtualClock()
    notices = Notices()
    responses, _, _ = drive(best_handler(clock, fail_at=3, notifier=notices), clock, {"n": 7})
    assert responses[-1]["status"] == "FAILED"
    assert notices.texts
    notice = strict_loads(notices.texts[0])
    assert notice["last_state"]["best"] == "-Infinity"


def test_a_result_holding_nan_fails_the_chain_at_once_naming_where() -> None:
    clock = VirtualClock()

    @recursive(state=Best)
    def handler(event: Any, state: Best, run: Any):
        clock.advance(0.1)
        yield
        return {"scores": [1.0, state.best]}

    sim = simulate(handler, timeout=10, clock=clock)
    report = sim.run({})
    assert report.status == "FAILED" and report.retries == 0
    assert "result['scores'][1]" in (report.error or "") and "NaN or infinite" in (report.error or "")


def test_an_event_holding_nan_is_refused_not_forwarded() -> None:
    # Lambda's Invoke API accepts only JSON, but a direct call (or the simulator) can pass anything.
    clock = VirtualClock()
    sim = simulate(best_handler(clock), timeout=10, clock=clock)
    report = sim.run({"n": 5, "x": math.nan})
    assert report.status == "REJECTED" and "payload['x'] is NaN or infinite" in (report.error or "")
    assert report.invocations == 1 and sim.invoke_targets == []


def test_the_envelope_codec_refuses_non_finite_values() -> None:
    from recurse_lambda.core.codec import Envelope, EnvelopeCodec

    env = Envelope("c", 1, {"state": {"x": math.inf}, "chunks": 0, "pins": {}}, {}, 0.0)
    with pytest.raises(ConfigurationError, match=r"\['progress'\]\['state'\]\['x'\] is NaN or infinite"):
        EnvelopeCodec().encode(env)


def test_codec_helpers() -> None:
    assert jsonable({"a": [math.nan, -math.inf, (math.inf, 1)]}) == {
        "a": ["NaN", "-Infinity", ["Infinity", 1]]
    }
    assert strict_dumps({"a": math.nan}) == '{"a": "NaN"}'
    assert dump_state(Best())["best"] == "-Infinity"


SCRIPT = """
import math
from pydantic import BaseModel
from recurse_lambda import after_chunks, recursive

class Best(BaseModel):
    i: int = 0
    best: float = -math.inf

@recursive(state=Best, policy=after_chunks(1))
def handler(event, state, run):
    while state.i < 3:
        state.i += 1
        yield
    raise ValueError("give up")
"""


def test_the_simulate_cli_json_output_is_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "best_chain.py").write_text(SCRIPT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "best_chain", raising=False)
    assert main(["simulate", "best_chain:handler", "--json", "--virtual"]) == 1
    out, err = capsys.readouterr()
    summary = strict_loads(out.strip().splitlines()[-1])
    assert summary["status"] == "FAILED" and summary["last_state"]["best"] == "-Infinity"
    assert '"best":"-Infinity"' in err  # the progress lines show the state as it is handed on


UNSERIALISABLE = """
from typing import Any
from pydantic import BaseModel
from recurse_lambda import after_chunks, recursive

class Holder(BaseModel):
    i: int = 0
    handle: Any = None

@recursive(state=Holder, policy=after_chunks(1))
def handler(event, state, run):
    while state.i < 3:
        state.i += 1
        state.handle = object()
        yield
    return state.i
"""


def test_the_simulate_cli_reports_an_unserialisable_state_instead_of_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "holder_chain.py").write_text(UNSERIALISABLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "holder_chain", raising=False)
    assert main(["simulate", "holder_chain:handler", "--json", "--virtual"]) == 1
    out, err = capsys.readouterr()
    summary = strict_loads(out.strip().splitlines()[-1])
    assert summary["status"] == "FAILED" and "'handle'" in summary["error"]
    assert summary["invocations"] == 1 and summary["retries"] == 0
    assert "<object object at" in err  # the progress line shows the uncommitted state as best it can
