"""What an invocation reports: one JSON log line per hop and per terminal transition, metrics when enabled,
a failure notice when a chain fails for good, and the recursion check at a chain's first hop."""

from __future__ import annotations

import json
import logging

from recurse_lambda import ConfigurationError, InMemoryLedger, recursive
from recurse_lambda.local import Simulator
from tests.conftest import Counter, counting_handler, expected, simulate


class RecordingNotifier:
    def __init__(self) -> None:
        self.notices: list = []

    def notify(self, notice) -> None:
        self.notices.append(notice)


def json_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]


def test_one_log_line_per_invocation_and_one_for_the_end(clock, caplog):
    caplog.set_level(logging.INFO, logger="recurse_lambda")
    report = simulate(counting_handler(clock), timeout=10, clock=clock).run({"n": 300})
    assert report.result == expected(300)
    lines = json_lines(caplog)
    hops = [x for x in lines if x.get("kind") == "hop"]
    ends = [x for x in lines if x.get("kind") == "terminal"]
    assert len(hops) == report.invocations
    assert [h["hop"] for h in hops] == [r.hop for r in report.rows]
    assert all(h["chain_id"] == report.chain_id for h in hops)
    assert len(ends) == 1 and ends[0]["status"] == "SUCCEEDED"
    assert all("state" not in h for h in hops)  # a summary of the cursor, never the state itself
    assert hops[-1]["cursor"]["fields"]["i"] == 300 and hops[0]["outcome"] == "handed_off"
    assert hops[0]["cursor"]["fields"]["i"] == hops[0]["chunks"]  # where the hop left the cursor


def test_a_chain_that_fails_for_good_sends_one_notice_with_what_resume_needs(clock):
    notifier = RecordingNotifier()
    handler = counting_handler(clock, max_hops=2, notifier=notifier)
    report = simulate(handler, timeout=10, clock=clock).run({"n": 10_000})
    assert report.status == "FAILED"
    assert len(notifier.notices) == 1
    notice = notifier.notices[0]
    assert notice.chain_id == report.chain_id and "max_hops=2" in notice.error
    assert notice.resumable and notice.last_state == report.last_state
    assert "recurse-lambda resume" in notice.resume_command()


def test_a_broken_notifier_does_not_turn_a_recorded_failure_into_a_retry(clock):
    class Broken:
        def notify(self, notice) -> None:
            raise RuntimeError("queue unreachable")

    handler = counting_handler(clock, max_hops=2, notifier=Broken())
    report = simulate(handler, timeout=10, clock=clock).run({"n": 10_000})
    assert report.status == "FAILED" and report.retries == 0


def test_metrics_are_printed_only_when_enabled(clock):
    lines: list[str] = []
    sim = simulate(counting_handler(clock, metrics=True), timeout=10, clock=clock, metrics_sink=lines.append)
    report = sim.run({"n": 300})
    docs = [json.loads(line) for line in lines]
    assert report.result == expected(300)
    assert len(docs) == report.invocations + 1  # one per invocation, one for the end
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RecurseLambda" for d in docs)
    quiet: list[str] = []
    simulate(counting_handler(clock), timeout=10, clock=clock, metrics_sink=quiet.append).run({"n": 300})
    assert quiet == []


def test_the_recursion_guard_runs_at_the_first_hop_and_a_terminate_setting_fails_the_chain(clock):
    from recurse_lambda import WarmState, World
    from recurse_lambda.local import FakeContext

    checks: list[str] = []

    class Guard:
        def __init__(self, allow: bool) -> None:
            self.allow = allow

        def check(self) -> None:
            checks.append("checked")
            if not self.allow:
                raise ConfigurationError("RecursiveLoop is Terminate: set it to Allow")

    handler = counting_handler(clock, ledger=InMemoryLedger())

    def invoke(allow: bool, event):
        ctx = FakeContext(clock=clock, deadline=clock.now() + 10, aws_request_id=f"r-{len(checks)}")
        world = World(
            clock=clock,
            invoker=type("I", (), {"invoke_async": lambda self, f, p: None})(),
            warm=WarmState(),
            ledger=handler.config.ledger,
            recursion_guard=lambda context: Guard(allow),
        )
        return handler.handle(event, ctx, world)

    assert invoke(True, {"n": 3})["status"] == "SUCCEEDED" and checks == ["checked"]
    out = invoke(False, {"n": 4})
    assert out["status"] == "FAILED" and "RecursiveLoop" in out["error"]


def test_log_state_puts_the_state_in_the_line_only_when_asked(clock, caplog):
    caplog.set_level(logging.INFO, logger="recurse_lambda")

    @recursive(state=Counter, log_state=True)
    def handler(event, state, run):
        state.i = 7
        return state.i

    Simulator(handler, clock=clock).run({})
    ends = [x for x in json_lines(caplog) if x.get("kind") == "terminal"]
    assert ends and ends[0].get("state") == {"i": 0, "total": 0}
