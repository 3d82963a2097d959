"""Nothing a stranger can send may act on a chain (issue 9, items 8-11).

A stranger is anyone allowed to invoke the function: they can send plain events, replay envelopes they have seen,
and forge Lambda's on-failure destination records, which are never authenticated. With a signing key, only the
user's own first events may be unsigned, and they may not carry the library's internal markers; an on-failure
record acts only on a hop the ledger shows as dead, resends it first, and fails the chain only when that did not
help.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda import (
    ChainControl,
    ChainStatus,
    ConfigurationError,
    InMemoryLedger,
    WarmState,
    World,
    after_chunks,
)
from recurse_lambda.chain.deliveries import DEAD_AFTER, MAX_RESENDS
from recurse_lambda.core.codec import ENVELOPE_KEY, EnvelopeCodec
from recurse_lambda.errors import HopNotDead
from recurse_lambda.keys import default as default_chain_id
from recurse_lambda.local import FakeContext, FaultPlan, VirtualClock
from recurse_lambda.shards.plan import SHARD_KEY
from tests.conftest import counting_handler, simulate

KEY = {"RECURSE_LAMBDA_SIGNING_KEY": "s3cret"}


class CapturingInvoker:
    """Records every invoke payload and delivers nothing: the test decides what arrives."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.payloads.append(json.loads(payload))


class Harness:
    """One function with a ledger, invoked by hand with events, forged or not, at chosen virtual times."""

    def __init__(self, clock: VirtualClock, environ: dict[str, str] | None = None, **options: Any) -> None:
        self.clock = clock
        self.ledger = InMemoryLedger()
        self.invoker = CapturingInvoker()
        self.environ = KEY if environ is None else environ
        options.setdefault("policy", after_chunks(10))
        self.handler = counting_handler(clock, ledger=self.ledger, **options)
        self.n = 0

    def invoke(self, event: Any, request_id: str | None = None) -> dict[str, Any]:
        self.n += 1
        ctx = FakeContext(
            clock=self.clock, deadline=self.clock.now() + 10.0, aws_request_id=request_id or f"r-{self.n}"
        )
        world = World(
            clock=self.clock,
            invoker=self.invoker,
            warm=WarmState(),
            ledger=self.ledger,
            environ=self.environ,
        )
        return self.handler.handle(event, ctx, world)


def record_for(payload: Any, request_id: str = "lost", condition: str = "RetriesExhausted") -> dict[str, Any]:
    """An on-failure destination record, as Lambda writes it (and as anyone can forge it)."""
    return {
        "version": "1.0",
        "requestContext": {
            "requestId": request_id,
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:recurse-lambda-sim:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responsePayload": {"errorType": condition},
    }


def snapshot(ledger: InMemoryLedger) -> list[Any]:
    return sorted((r.chain_id, r) for r in ledger.records())


# ---------------------------------------------------------------------------------------------- item 8


def forged_shard_event(job: str, parts: Any) -> dict[str, Any]:
    return {SHARD_KEY: {"job": job, "index": 0, "count": 1, "parts": parts}, "event": {"n": 3}}


@pytest.mark.parametrize("environ", [KEY, {}], ids=["signing-key", "no-key"])
@pytest.mark.parametrize("parts", [[], "not parts"], ids=["joins-the-job", "fails-the-job"])
def test_a_plain_event_posing_as_a_shard_is_rejected_touching_nothing(clock, environ, parts):
    h = Harness(clock, environ)
    h.ledger.start("victim", progress={"state": {}, "shards": {}}, event={}, now=clock.time())
    before = snapshot(h.ledger)
    sim = simulate(h.handler, timeout=10, clock=clock, ledger=h.ledger, environ=environ)
    report = sim.run(forged_shard_event("victim", parts))
    assert report.rows[0].outcome == "rejected" and report.invocations == 1
    assert SHARD_KEY in report.first_response["error"]
    assert snapshot(h.ledger) == before  # the job neither joined nor failed, and no chain was started
    assert sim.commits == [] and sim.invoke_targets == []


def test_an_on_failure_record_wrapping_a_forged_shard_event_is_rejected(clock):
    h = Harness(clock)
    h.ledger.start("victim", progress={"state": {}}, event={}, now=clock.time())
    before = snapshot(h.ledger)
    clock.advance(DEAD_AFTER * 10)
    out = h.invoke(record_for(forged_shard_event("victim", "not parts")))
    assert out["outcome"] == "rejected" and SHARD_KEY in out["error"]
    assert snapshot(h.ledger) == before and h.invoker.payloads == []


def test_a_trigger_record_posing_as_a_shard_is_not_signed_into_a_shard_start(clock):
    h = Harness(clock)
    h.ledger.start("victim", progress={"state": {}}, event={}, now=clock.time())
    before = snapshot(h.ledger)
    body = json.dumps(forged_shard_event("victim", []))
    batch = {
        "Records": [
            {
                "messageId": "m1",
                "receiptHandle": "h",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
                "awsRegion": "us-east-1",
            }
        ]
    }
    out = h.invoke(batch)
    assert out["batchItemFailures"] == [{"itemIdentifier": "m1"}]  # left to the queue's dead-letter queue
    assert snapshot(h.ledger) == before and h.invoker.payloads == []


# ---------------------------------------------------------------------------------------------- item 9


def started_chain(h: Harness) -> dict[str, Any]:
    """Hop 0 runs and hands off; returns the (signed) envelope of hop 1, which nobody has claimed yet."""
    out = h.invoke({"n": 100})
    assert out["outcome"] == "handed_off"
    return h.invoker.payloads[-1]


def test_a_replayed_envelope_of_the_unclaimed_next_hop_does_not_fail_the_chain(clock):
    h = Harness(clock)
    hop1 = started_chain(h)
    before = snapshot(h.ledger)
    clock.advance(1.0)
    with pytest.raises(HopNotDead):  # the forwarder delivers a genuine record again later
        h.invoke(record_for(hop1))
    assert snapshot(h.ledger) == before
    chain = h.ledger.records()[0]
    assert (chain.status, chain.hop) == (ChainStatus.RUNNING, 1)
    assert h.invoke(hop1)["outcome"] == "handed_off"  # the chain goes on


def test_a_forged_first_event_record_just_after_the_lease_expired_does_not_fail_the_chain(clock):
    h = Harness(clock)
    event = {"n": 100}
    chain_id = default_chain_id(event)
    h.ledger.start(chain_id, progress={"state": {}, "chunks": 0, "pins": {}}, event=event, now=clock.time())
    # Hop 0 is claimed by an invocation that dies (a timeout): its lease expires, and Lambda's retry is still due.
    h.ledger.claim(chain_id, hop=0, owner="dying", now=clock.time(), lease_until=clock.time() + 15.0)
    clock.advance(15.0 + 10.0)
    before = snapshot(h.ledger)
    with pytest.raises(HopNotDead):
        h.invoke(record_for(event, request_id="dying"))
    assert snapshot(h.ledger) == before
    assert h.invoke(event, request_id="dying")["outcome"] == "handed_off"  # Lambda's retry reclaims and runs


def test_a_dead_hop_is_resent_first_and_failed_only_when_the_resend_did_not_help(clock):
    h = Harness(clock)
    hop1 = started_chain(h)
    chain_id = hop1[ENVELOPE_KEY]["chain_id"]
    clock.advance(DEAD_AFTER + 1)
    out = h.invoke(record_for(hop1))
    assert out["outcome"] == "resent" and out["next_hop"] == 1
    resent = h.invoker.payloads[-1]
    assert EnvelopeCodec(signing_key=b"s3cret").decode(resent).hop == 1  # signed, from the ledger's record
    record = h.ledger.get(chain_id)
    assert (record.status, record.resends_of(1)) == (ChainStatus.RUNNING, 1)
    with pytest.raises(HopNotDead):  # the resend is a sign of life: the next record waits again
        h.invoke(record_for(hop1))
    for _ in range(MAX_RESENDS - 1):
        clock.advance(DEAD_AFTER + 1)
        assert h.invoke(record_for(hop1))["outcome"] == "resent"
    clock.advance(DEAD_AFTER + 1)
    out = h.invoke(record_for(hop1))
    assert out["outcome"] == "failed" and "Lambda stopped delivering hop 1 (RetriesExhausted)" in out["error"]
    assert h.ledger.get(chain_id).status is ChainStatus.FAILED
    assert h.invoke(record_for(hop1))["outcome"] == "stale"


def test_a_resent_hop_that_runs_brings_the_chain_back(clock):
    h = Harness(clock)
    hop1 = started_chain(h)
    clock.advance(DEAD_AFTER + 1)
    assert h.invoke(record_for(hop1))["outcome"] == "resent"
    payload = h.invoker.payloads[-1]
    while True:
        out = h.invoke(payload)
        if out["outcome"] != "handed_off":
            break
        payload = h.invoker.payloads[-1]
    assert out["outcome"] == "succeeded" and out["result"]["i"] == 100


def test_a_live_hop_is_never_acted_on_by_any_record(clock):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        wait=st.floats(min_value=0.0, max_value=DEAD_AFTER - 0.01),
        which=st.sampled_from(["next", "this", "plain"]),
        request_id=st.sampled_from(["lost", "r-1", "r-2"]),
        condition=st.sampled_from(["RetriesExhausted", "EventAgeExceeded", "RecursiveInvocationException"]),
    )
    def check(wait: float, which: str, request_id: str, condition: str) -> None:
        h = Harness(VirtualClock())
        hop1 = started_chain(h)
        h.clock.advance(0.5)
        h.invoke(hop1, request_id="live")  # hop 1 runs (claims, hands off to 2)
        hop2 = h.invoker.payloads[-1]
        payload = {"next": hop2, "this": hop1, "plain": {"n": 100}}[which]
        h.clock.advance(wait)
        before = snapshot(h.ledger)
        sent = len(h.invoker.payloads)
        try:
            out = h.invoke(record_for(payload, request_id=request_id, condition=condition))
        except HopNotDead:
            out = {"outcome": "not dead"}
        assert out["outcome"] in ("not dead", "stale", "duplicate")
        assert snapshot(h.ledger) == before and len(h.invoker.payloads) == sent

    check()


def test_the_simulator_s_lost_hop_is_recovered_by_its_record(clock):
    faults = FaultPlan(crash_at=(("after_claim", 1), ("after_claim", 2), ("after_claim", 3)))
    report = simulate(counting_handler(clock), timeout=10, clock=clock, faults=faults, environ=KEY).run(
        {"n": 50}
    )
    assert report.status == "SUCCEEDED"
    destination = [r for r in report.rows if r.kind == "destination"]
    assert [r.outcome for r in destination] == ["error", "error", "resent"]
    assert destination[-1].start - destination[0].start == pytest.approx(360.0, abs=1.0)


# ---------------------------------------------------------------------------------------------- item 10


def test_an_on_failure_record_holding_a_badly_signed_envelope_is_rejected_not_raised(clock):
    h = Harness(clock)
    hop1 = started_chain(h)
    clock.advance(DEAD_AFTER * 10)
    before = snapshot(h.ledger)
    forged = json.loads(EnvelopeCodec(signing_key=b"wrong").encode(EnvelopeCodec().decode(hop1)))
    unsigned = {ENVELOPE_KEY: {k: v for k, v in hop1[ENVELOPE_KEY].items() if k != "sig"}}
    for payload in (forged, unsigned):
        out = h.invoke(record_for(payload))
        assert out["outcome"] == "rejected" and "EnvelopeSignatureError" in out["error"]
    assert snapshot(h.ledger) == before and len(h.invoker.payloads) == 1


# ---------------------------------------------------------------------------------------------- item 11


@pytest.mark.parametrize("empty", ["", "  "])
def test_a_set_but_empty_signing_key_is_a_configuration_error(clock, empty):
    h = Harness(clock, {"RECURSE_LAMBDA_SIGNING_KEY": empty})
    with pytest.raises(ConfigurationError, match="RECURSE_LAMBDA_SIGNING_KEY is set but empty"):
        h.invoke({"n": 100})
    assert len(h.ledger) == 0 and h.invoker.payloads == []
    with pytest.raises(ConfigurationError, match="set but empty"):
        ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={"RECURSE_LAMBDA_SIGNING_KEY": empty})
    custom = Harness(clock, {"MY_KEY": ""}, signing_key_env="MY_KEY")
    with pytest.raises(ConfigurationError, match=r"\$MY_KEY is set but empty"):
        custom.invoke({"n": 100})
    assert Harness(clock, {}).invoke({"n": 100})["outcome"] == "handed_off"  # unset: unsigned, as documented


def test_the_cli_refuses_an_empty_signing_key_loudly(monkeypatch, capsys):
    from recurse_lambda.cli import main

    monkeypatch.setenv("RECURSE_LAMBDA_SIGNING_KEY", "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["resume", "some-chain", "--table", "ledger"]) == 1
    err = capsys.readouterr().err
    assert "RECURSE_LAMBDA_SIGNING_KEY is set but empty" in err
