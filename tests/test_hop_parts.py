"""The runner's parts: routing an event once, the wire form that older versions wrote, and the injected lister."""

from __future__ import annotations

import json
from typing import Any

from recurse_lambda import (
    ENVELOPE_KEY,
    ChainStatus,
    InMemoryLedger,
    Shards,
    SourceRef,
    WarmState,
    World,
    recursive,
)
from recurse_lambda.chain.route import Kind, route
from recurse_lambda.core.codec import FORMAT_VERSION
from recurse_lambda.core.progress import Progress
from recurse_lambda.local import FakeContext
from recurse_lambda.shards.plan import ObjectInfo
from tests.conftest import Counter, counting_handler, expected


class Invoker:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.payloads.append(json.loads(payload))


def handle(handler: Any, event: Any, clock: Any, world: World, request_id: str = "r-new") -> dict[str, Any]:
    ctx = FakeContext(clock=clock, deadline=clock.now() + 60.0, aws_request_id=request_id)
    return handler.handle(event, ctx, world)


# ---------------------------------------------------------------------------------------------------- routing


def test_every_kind_of_event_is_routed_once_to_its_path():
    envelope = {ENVELOPE_KEY: {"v": FORMAT_VERSION}}
    s3_batch = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": 1, "eTag": "e"}},
            }
        ]
    }

    def record(payload: Any) -> dict[str, Any]:
        return {
            "requestContext": {"condition": "RetriesExhausted", "requestId": "r"},
            "requestPayload": payload,
        }

    assert route(s3_batch).kind is Kind.TRIGGER
    retried = route(record(s3_batch))
    assert retried.kind is Kind.TRIGGER_RETRY and retried.event is s3_batch  # the batch, unwrapped
    assert route(record(envelope)).kind is Kind.ABANDONED
    assert route(record({"n": 3})).kind is Kind.ABANDONED
    assert route(envelope).kind is Kind.ENVELOPE
    assert route({"n": 3}).kind is Kind.FIRST
    assert route([1, 2]).kind is Kind.FIRST


# ---------------------------------------------------------------------------------------------------- the wire

# Written by the runner before Progress was typed (its keys in the order it wrote them), plus a key that only a
# newer version would write: it must survive this version's commits.
OLD_PROGRESS: dict[str, Any] = {
    "learned": {"timeouts": 0, "budget": 10.0, "handoff": 0.05, "chunk_max": 0.1, "handoff_left": 0.4},
    "future": {"kept": [1, 2]},
    "state": {"i": 5, "total": 30},
    "chunks": 5,
    "pins": {"bucket/key": {"etag": '"abc"', "version_id": None, "size": 3}},
}


def test_progress_reads_and_writes_the_old_wire_form_unchanged():
    assert Progress.from_json(OLD_PROGRESS).to_json() == OLD_PROGRESS
    assert Progress.from_json({"state": None}).to_json() == {"state": None, "chunks": 0, "pins": {}}


def test_an_envelope_and_a_ledger_record_written_by_the_old_code_resume_the_chain(clock):
    ledger = InMemoryLedger()
    event = {"n": 8}
    ledger.start("c-old", progress=OLD_PROGRESS, event=event, now=clock.time())
    ledger.claim("c-old", hop=0, owner="r-old", now=clock.time(), lease_until=clock.time() + 60)
    ledger.hand_off("c-old", hop=0, owner="r-old", progress=OLD_PROGRESS, now=clock.time())
    body = {
        "v": FORMAT_VERSION,
        "chain_id": "c-old",
        "hop": 1,
        "started_at": clock.time(),
        "code_version": "$LATEST",
        "progress": OLD_PROGRESS,
        "event": event,
    }
    payload = json.loads(json.dumps({ENVELOPE_KEY: body}))  # as Lambda delivers it
    world = World(clock=clock, invoker=Invoker(), warm=WarmState(), ledger=ledger)
    out = handle(counting_handler(clock), payload, clock, world)
    assert (out["outcome"], out["result"]) == ("succeeded", expected(8))  # resumed at i=5, not from scratch
    record = ledger.get("c-old")
    assert record is not None and record.status is ChainStatus.SUCCEEDED
    assert record.progress["future"] == {"kept": [1, 2]}  # a newer writer's key survives
    assert record.progress["pins"] == OLD_PROGRESS["pins"]
    assert record.progress["chunks"] == 9 and record.progress["state"] == {"i": 8, "total": 140}


def test_a_hand_off_writes_the_same_wire_keys_as_before(clock):
    @recursive(state=Counter, checkpoint_every_chunks=None, checkpoint_every_seconds=None)
    def handler(event: Any, state: Counter, run: Any) -> Any:
        while True:
            clock.advance(1.0)
            state.i += 1
            yield

    invoker = Invoker()
    world = World(clock=clock, invoker=invoker, warm=WarmState(), ledger=InMemoryLedger())
    ctx = FakeContext(clock=clock, deadline=clock.now() + 10.0, aws_request_id="r-1")
    out = handler.handle({"n": 1}, ctx, world)
    assert out["outcome"] == "handed_off"
    (sent,) = invoker.payloads
    progress = sent[ENVELOPE_KEY]["progress"]
    assert set(progress) == {"state", "chunks", "pins", "learned"}
    assert progress["chunks"] == progress["state"]["i"] and progress["pins"] == {}


# ---------------------------------------------------------------------------------------------------- the lister


def sharded(**options: Any) -> Any:
    @recursive(state=Counter, shards=Shards(count=2, reduce=sum), **options)
    def handler(event: Any, state: Counter, run: Any) -> Any:
        return 1

    return handler


def test_a_sharded_job_lists_its_source_with_the_injected_lister(clock):
    seen: list[SourceRef] = []

    def lister(ref: SourceRef) -> list[ObjectInfo]:
        seen.append(ref)
        return [ObjectInfo(ref.bucket, "a", '"e1"', 10), ObjectInfo(ref.bucket, "b", '"e2"', 10)]

    invoker, ledger = Invoker(), InMemoryLedger()
    world = World(clock=clock, invoker=invoker, warm=WarmState(), ledger=ledger, lister=lister)
    out = handle(sharded(), {"bucket": "in", "prefix": "p/"}, clock, world)
    assert out["outcome"] == "split" and seen and seen[0].bucket == "in"
    assert len(invoker.payloads) == out["shards"]  # each shard's hop 0, sent after the job's hand-off


def test_a_sharded_job_in_a_world_without_a_lister_fails_with_a_configuration_error(clock):
    ledger = InMemoryLedger()
    world = World(clock=clock, invoker=Invoker(), warm=WarmState(), ledger=ledger)
    out = handle(sharded(), {"bucket": "in", "prefix": "p/"}, clock, world)
    assert out["outcome"] == "failed"
    assert "ConfigurationError" in out["error"] and "lister" in out["error"]
