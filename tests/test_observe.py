"""Structured hop and terminal records, their logging, and the EMF metrics document."""

from __future__ import annotations

import json
import logging
import re

import pytest

from recurse_lambda import InvocationStats, Outcome
from recurse_lambda.chain.observe import (
    cursor_summary,
    emf_metrics,
    hop_log_record,
    hop_utilization,
    log_json,
    terminal_log_record,
)

FN = "arn:aws:lambda:us-east-1:123456789012:function:lines:7"
SECRET = "s3cr3t-api-token"
SIGNING_KEY = "signing-key-never-logged"
PROGRESS = {
    "state": {"offset": 4096, "lines": 120, "token": SECRET, "seen": [1, 2], "done": False},
    "chunks": 9,
}
HOP_FIELDS = {
    "kind",
    "chain_id",
    "hop",
    "request_id",
    "attempt",
    "function",
    "outcome",
    "chunks",
    "chunk_time",
    "checkpoints",
    "handoff_time",
    "duration",
    "library_time",
    "utilization",
    "cursor",
}


def stats(outcome: Outcome = Outcome.HANDED_OFF, **fields: object) -> InvocationStats:
    s = InvocationStats("req-1", started=100.0)
    s.ended = 110.0
    s.chain_id, s.hop, s.attempt = "chain-1", 3, 2
    s.chunks, s.chunk_time, s.checkpoints, s.handoff_time = 9, 8.5, 1, 0.125
    s.outcome = outcome
    for name, value in fields.items():
        setattr(s, name, value)
    return s


def hop_record(outcome: Outcome = Outcome.HANDED_OFF, **kw: object) -> dict[str, object]:
    return hop_log_record(stats(outcome), function=FN, cursor_summary=cursor_summary(PROGRESS), **kw)


def test_the_hop_record_has_the_figures_and_no_state():
    record = hop_record(at=1_700_000_000.0)
    assert set(record) == HOP_FIELDS | {"time"}
    assert record["kind"] == "hop"
    assert (record["chain_id"], record["hop"], record["request_id"], record["attempt"]) == (
        "chain-1",
        3,
        "req-1",
        2,
    )
    assert record["outcome"] == "handed_off"
    assert (record["chunks"], record["chunk_time"], record["checkpoints"]) == (9, 8.5, 1)
    assert record["handoff_time"] == 0.125
    assert record["duration"] == 10.0
    assert record["library_time"] == 1.375  # 10 s - 8.5 s of chunks - 0.125 s of hand-off
    assert record["utilization"] == 0.85  # chunk time over duration, as in the simulator's report
    assert record["function"] == FN
    assert record["cursor"] == {
        "chunks": 9,
        "state_bytes": record["cursor"]["state_bytes"],
        "fields": {"lines": 120, "offset": 4096},
    }
    text = json.dumps(record)
    assert SECRET not in text and "token" not in text


def test_utilization_given_by_the_caller_wins_and_an_unfinished_hop_has_none():
    assert hop_record(utilization=0.5)["utilization"] == 0.5
    s = stats()
    s.ended = None
    assert hop_utilization(s) == 0.0
    assert hop_log_record(s, function=None, cursor_summary=None)["duration"] is None


def test_the_state_is_logged_only_when_passed():
    assert "state" not in hop_record()
    assert hop_record(state=PROGRESS["state"])["state"]["token"] == SECRET


def test_cursor_summary_keeps_numbers_only_and_caps_them():
    summary = cursor_summary({"state": {f"n{i:02}": i for i in range(20)} | {"name": "x"}, "chunks": 1})
    assert summary is not None
    assert list(summary["fields"]) == [f"n{i:02}" for i in range(8)]
    assert summary["state_bytes"] > 0
    assert cursor_summary(None) is None


def test_terminal_records():
    failed = terminal_log_record(
        chain_id="chain-1",
        hop=7,
        status="FAILED",
        error="x" * 10_000,
        request_id="req-9",
        function=FN,
        attempt=3,
        started_at=1000.0,
        at=1600.25,
    )
    assert failed["kind"] == "terminal" and failed["status"] == "FAILED"
    assert len(failed["error"]) == 4096
    assert failed["chain_duration"] == 600.25
    assert failed["time"] == 1600.25
    assert "state" not in failed
    ok = terminal_log_record(chain_id="c", hop=1, status="SUCCEEDED")
    assert ok["error"] is None and ok["chain_duration"] is None
    with pytest.raises(ValueError, match="RUNNING"):
        terminal_log_record(chain_id="c", hop=1, status="RUNNING")


def test_log_json_emits_one_json_message_and_attaches_the_dict(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("recurse_lambda.test_observe")
    record = hop_record() | {"note": "100% done"}
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_json(logger, logging.INFO, record)
    [entry] = caplog.records
    assert json.loads(entry.getMessage()) == json.loads(json.dumps(record))
    assert entry.recurse_lambda == record
    assert entry.funcName == "test_log_json_emits_one_json_message_and_attaches_the_dict"  # the caller's line


def test_log_json_does_nothing_below_the_level(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("recurse_lambda.test_observe_quiet")

    class Explodes:
        def __str__(self) -> str:
            raise AssertionError("serialised although the level is disabled")

    with caplog.at_level(logging.WARNING, logger=logger.name):
        log_json(logger, logging.DEBUG, {"x": Explodes()})
    assert caplog.records == []


def test_records_never_carry_the_signing_key(monkeypatch: pytest.MonkeyPatch):
    # The records are built from InvocationStats alone; a key in the environment cannot reach them.
    monkeypatch.setenv("RECURSE_LAMBDA_SIGNING_KEY", SIGNING_KEY)
    for record in (hop_record(), terminal_log_record(chain_id="c", hop=1, status="CANCELLED")):
        assert SIGNING_KEY not in json.dumps(record)
        assert SIGNING_KEY not in json.dumps(emf_metrics(record, timestamp=0))


# ---------------------------------------------------------------------------------------------- EMF

UNITS = re.compile(r"Seconds|Microseconds|Milliseconds|Bytes|Count|Percent|None")


def assert_valid_emf(doc: dict[str, object]) -> dict[str, object]:
    """The EMF specification's rules (root "_aws", integer Timestamp, directives, targets on the root)."""
    doc = json.loads(json.dumps(doc))  # JSON-serialisable, and checked as CloudWatch would read it
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int)
    [directive] = meta["CloudWatchMetrics"]
    assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
    assert 1 <= len(directive["Namespace"]) <= 255
    for dimension_set in directive["Dimensions"]:
        assert len(dimension_set) <= 9
        for name in dimension_set:
            assert isinstance(doc[name], str)
    assert 0 < len(directive["Metrics"]) <= 100
    for metric in directive["Metrics"]:
        assert UNITS.fullmatch(metric["Unit"])
        value = doc[metric["Name"]]
        assert isinstance(value, int | float) and not isinstance(value, bool)
    return doc


def metrics_of(doc: dict[str, object]) -> dict[str, object]:
    [directive] = doc["_aws"]["CloudWatchMetrics"]
    return {m["Name"]: (doc[m["Name"]], m["Unit"]) for m in directive["Metrics"]}


def test_emf_for_a_hand_off():
    doc = assert_valid_emf(emf_metrics(hop_record(at=1_700_000_000.25)))
    assert doc["_aws"]["Timestamp"] == 1_700_000_000_250
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RecurseLambda"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]
    assert doc["FunctionName"] == "lines"  # the name, not the version-qualified ARN
    assert metrics_of(doc) == {
        "Hops": (1, "Count"),
        "Chunks": (9, "Count"),
        "DuplicatesDropped": (0, "Count"),
        "Retries": (0, "Count"),
        "Utilization": (85.0, "Percent"),
        "HandOffLatency": (125.0, "Milliseconds"),
    }
    assert doc["chain_id"] == "chain-1" and "cursor" not in doc


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome.DUPLICATE, {"Hops": 0, "DuplicatesDropped": 1, "Retries": 0}),
        (Outcome.STALE, {"Hops": 0, "DuplicatesDropped": 1, "Retries": 0}),
        (Outcome.RETRYING, {"Hops": 1, "DuplicatesDropped": 0, "Retries": 1}),
        (Outcome.SUCCEEDED, {"Hops": 1, "DuplicatesDropped": 0, "Retries": 0}),
    ],
)
def test_emf_counts_by_outcome(outcome: Outcome, expected: dict[str, int]):
    got = metrics_of(assert_valid_emf(emf_metrics(hop_record(outcome), timestamp=0)))
    assert {name: got[name][0] for name in expected} == expected
    assert "HandOffLatency" not in got  # only a hand-off has one
    assert ("Utilization" in got) == (expected["Hops"] == 1)  # a dropped duplicate does no work to measure


def test_emf_for_terminal_records_and_custom_dimensions():
    record = terminal_log_record(chain_id="c", hop=2, status="FAILED", error="boom", function="plain-name")
    doc = assert_valid_emf(emf_metrics(record, "Jobs", ("FunctionName", "Outcome"), timestamp=1.5))
    assert doc["_aws"]["Timestamp"] == 1500
    assert (doc["FunctionName"], doc["Outcome"]) == ("plain-name", "FAILED")
    got = metrics_of(doc)
    assert got["ChainsFailed"] == (1, "Count") and got["ChainsSucceeded"] == (0, "Count")
    assert "error" not in doc


def test_emf_refuses_bad_input():
    with pytest.raises(ValueError, match="at most 9"):
        emf_metrics(hop_record(), dimensions=[f"d{i}" for i in range(10)], timestamp=0)
    with pytest.raises(ValueError, match="no value"):
        emf_metrics(hop_record(), dimensions=("Tenant",), timestamp=0)
    with pytest.raises(ValueError, match="kind"):
        emf_metrics({"chain_id": "c"}, timestamp=0)


def test_emf_without_dimensions_is_still_valid():
    doc = assert_valid_emf(emf_metrics(hop_record(), dimensions=(), timestamp=0))
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
