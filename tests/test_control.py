"""Chain control over the in-memory ledger, and the business-key functions of ``recurse_lambda.keys``.

Resume is checked end to end: the envelope :class:`ChainControl` sends is fed to a real ``@recursive`` handler,
which must accept it (signature included) and finish the chain from its last committed state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Generator
from typing import Any

import pytest

from recurse_lambda import (
    ENVELOPE_KEY,
    BucketNotFoundError,
    ChainStatus,
    ConfigurationError,
    EnvelopeCodec,
    HandOffError,
    InMemoryLedger,
    LedgerConflict,
    ObjectNotFoundError,
    Run,
    WarmState,
    World,
    after_chunks,
    keys,
    recursive,
)
from recurse_lambda.aws import LambdaInvoker, S3SpillStore
from recurse_lambda.control import ChainControl, code_version_of
from recurse_lambda.errors import ChainStateError, UnknownChainError
from recurse_lambda.local import FakeContext, MemorySpillStore, VirtualClock
from tests.conftest import Counter, expected

KEY_ENV = {"RECURSE_LAMBDA_SIGNING_KEY": "s3cret"}
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:recurse-lambda-sim"


class Broken(Exception):
    """A bug in the handler: permanent, so the chain fails at once."""


class RecordingInvoker:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.fail = fail

    def invoke_async(self, function: str, payload: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append((function, payload))


class Harness:
    """Delivers events to a ``@recursive`` handler by hand, one invocation at a time, in virtual time."""

    def __init__(
        self, tmp_path: Any, clock: VirtualClock, *, environ: dict[str, str], **options: Any
    ) -> None:
        self.clock = clock
        self.spill = options.pop("spill", None)
        self.ledger = options.setdefault("ledger", InMemoryLedger())
        self.broken = True  # the handler fails at event["break_at"] until the bug is "fixed"
        self.seen: list[int] = []  # state.i at the start of every chunk that ran
        options.setdefault("policy", after_chunks(10))
        options.setdefault("checkpoint_every_seconds", None)

        @recursive(state=Counter, permanent_errors=(Broken,), **options)
        def handler(event: dict[str, Any], state: Counter, run: Run) -> Generator[None, None, dict[str, int]]:
            while state.i < event["n"]:
                if self.broken and state.i == event.get("break_at"):
                    raise Broken(f"bug at {state.i}")
                self.seen.append(state.i)
                clock.advance(0.1)
                state.total += state.i * state.i
                state.i += 1
                yield
            return {"i": state.i, "total": state.total}

        self.handler = handler
        self.invoker = RecordingInvoker()
        self.world = World(
            clock=clock,
            invoker=self.invoker,
            warm=WarmState(tmp_dir=str(tmp_path)),
            ledger=self.ledger,
            environ=environ,
            spill=MemorySpillStore() if self.spill is None else self.spill,
        )
        self.count = 0

    def deliver(self, event: Any) -> dict[str, Any]:
        self.count += 1
        ctx = FakeContext(
            clock=self.clock, deadline=self.clock.now() + 10, aws_request_id=f"req-{self.count}"
        )
        return self.handler.handle(event, ctx, self.world)

    def next_envelope(self) -> Any:
        function, payload = self.invoker.calls.pop(0)
        assert function == FUNCTION
        return json.loads(payload)

    def drain(self) -> dict[str, Any]:
        """Deliver every queued hand-off until none is left; the last response."""
        out: dict[str, Any] = {}
        while self.invoker.calls:
            out = self.deliver(self.next_envelope())
        return out


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def failed_chain(h: Harness, n: int = 45, break_at: int = 25) -> tuple[str, Any]:
    """Run a chain into a permanent failure at ``break_at``; its id and the envelope of the failed hop."""
    first = h.deliver({"n": n, "break_at": break_at})
    assert first["outcome"] == "handed_off"
    last_envelope = None
    while h.invoker.calls:
        last_envelope = h.next_envelope()
        out = h.deliver(last_envelope)
    assert out["status"] == "FAILED" and "bug at 25" in out["error"]
    return first["chain_id"], last_envelope


# ------------------------------------------------------------------------------------------------ resume


def test_resume_continues_a_failed_chain_from_its_last_commit_with_a_signed_envelope(tmp_path, clock):
    h = Harness(tmp_path, clock, environ=KEY_ENV)
    chain_id, _ = failed_chain(h)
    record = h.ledger.get(chain_id)
    assert record is not None and record.hop == 2 and record.progress["state"]["i"] == 20

    h.broken = False
    control = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ=KEY_ENV)
    resumed = control.resume(chain_id)
    assert (resumed.status, resumed.hop, resumed.attempts) == (ChainStatus.RUNNING, 3, 0)
    assert len(h.invoker.calls) == 1
    function, payload = h.invoker.calls[0]
    assert function == FUNCTION
    body = json.loads(payload)[ENVELOPE_KEY]
    assert body["hop"] == 3 and "sig" in body
    assert body["progress"]["state"] == {"i": 20, "total": sum(i * i for i in range(20))}

    h.seen.clear()
    out = h.drain()
    assert out["status"] == "SUCCEEDED" and out["result"] == expected(45)
    assert h.seen[0] == 20 and h.seen == list(range(20, 45))  # from the commit; every chunk exactly once
    final = h.ledger.get(chain_id)
    assert final is not None and final.status is ChainStatus.SUCCEEDED and final.result == expected(45)


def test_a_straggler_of_the_old_hop_is_stale_after_resume(tmp_path, clock):
    h = Harness(tmp_path, clock, environ=KEY_ENV)
    chain_id, straggler = failed_chain(h)
    h.broken = False
    ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ=KEY_ENV).resume(chain_id)
    h.seen.clear()
    late = h.deliver(straggler)  # Lambda's retry of hop 2, say
    assert late["outcome"] == "stale" and late["hop"] == 2
    assert h.seen == []
    record = h.ledger.get(chain_id)
    assert record is not None and record.hop == 3 and record.owner is None
    assert h.drain()["result"] == expected(45)


def test_the_function_rejects_a_resume_signed_with_another_key_or_unsigned(tmp_path, clock):
    h = Harness(tmp_path, clock, environ=KEY_ENV)
    chain_id, _ = failed_chain(h)
    h.broken = False
    for environ in ({"RECURSE_LAMBDA_SIGNING_KEY": "wrong"}, {}):
        control = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ=environ)
        assert control.signs is bool(environ)
        record = control.resume(chain_id, stall_after=0)
        out = h.deliver(h.next_envelope())
        assert out["outcome"] == "rejected" and ("signature" in out["error"] or "not signed" in out["error"])
        now = h.ledger.get(chain_id)
        assert now is not None and now.hop == record.hop and now.owner is None  # nothing ran
    assert h.seen[-1] == 24


def test_resume_of_a_running_chain_whose_lease_expired(tmp_path, clock):
    ledger = InMemoryLedger()
    progress = {"state": {"i": 7, "total": 91}, "chunks": 7, "pins": {}}
    ledger.start("c", progress=progress, event={"n": 12}, now=clock.time(), function=FUNCTION)
    ledger.claim("c", hop=0, owner="dead", now=clock.time(), lease_until=clock.time() + 30)
    h = Harness(tmp_path, clock, environ={}, ledger=ledger)
    control = ChainControl(ledger, invoker=h.invoker, clock=clock, environ={})
    with pytest.raises(ChainStateError, match=r"held by request dead until .*lease") as caught:
        control.resume("c")
    assert caught.value.status is ChainStatus.RUNNING and isinstance(caught.value, LedgerConflict)
    assert h.invoker.calls == []
    clock.advance(31)
    assert control.resume("c").hop == 1
    out = h.drain()
    assert out["status"] == "SUCCEEDED" and out["result"] == expected(12)
    assert h.seen == list(range(7, 12))


def test_a_recent_hand_off_is_not_stalled_until_stall_after(tmp_path, clock):
    h = Harness(tmp_path, clock, environ={})
    h.deliver({"n": 30})  # hop 0 hands off; the hop-1 invoke is queued, not delivered
    lost = h.invoker.calls.pop()  # ... and lost
    control = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={})
    chain_id = h.ledger.records()[0].chain_id
    with pytest.raises(ChainStateError, match=r"handed off 0 s ago .*stalled after 900 s"):
        control.resume(chain_id)
    clock.advance(899)
    with pytest.raises(ChainStateError):
        control.resume(chain_id)
    clock.advance(1)
    assert control.resume(chain_id).hop == 2
    assert h.deliver(json.loads(lost[1]))["outcome"] == "stale"
    assert h.drain()["result"] == expected(30)


@pytest.mark.parametrize("end", ["finish", "cancel"])
def test_resume_refuses_a_chain_that_ended_and_names_its_status(tmp_path, clock, end):
    h = Harness(tmp_path, clock, environ={}, policy=after_chunks(100))
    h.broken = False
    out = h.deliver({"n": 5})
    control = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={})
    if end == "cancel":
        h.ledger.start("x", progress={}, event={}, now=clock.time(), function=FUNCTION)
        control.cancel("x")
        chain_id, status = "x", ChainStatus.CANCELLED
    else:
        chain_id, status = out["chain_id"], ChainStatus.SUCCEEDED
    with pytest.raises(ChainStateError, match=f"it is {status.value}; only a FAILED chain") as caught:
        control.resume(chain_id)
    assert caught.value.status is status
    assert h.invoker.calls == []


def test_unknown_chains_are_named_in_the_error(clock):
    control = ChainControl(InMemoryLedger(), invoker=RecordingInvoker(), clock=clock, environ={})
    for action in (control.status, control.cancel, control.resume):
        with pytest.raises(UnknownChainError, match="no chain 'nope' in the ledger") as caught:
            action("nope")
        assert caught.value.chain_id == "nope"


def test_resume_without_a_recorded_function_fails_before_touching_the_ledger(clock):
    ledger = InMemoryLedger()
    ledger.start("old", progress={"state": {}}, event={}, now=clock.time())  # no function recorded
    ledger.fail("old", hop=0, owner=None, error="x", now=clock.time())
    invoker = RecordingInvoker()
    control = ChainControl(ledger, invoker=invoker, clock=clock, environ={})
    with pytest.raises(ConfigurationError, match="does not record which function"):
        control.resume("old")
    record = ledger.get("old")
    assert record is not None and record.status is ChainStatus.FAILED and record.hop == 0
    assert invoker.calls == []


def test_a_failed_send_says_how_to_retry_and_stall_after_zero_does(tmp_path, clock):
    h = Harness(tmp_path, clock, environ={})
    chain_id, _ = failed_chain(h)
    h.broken = False
    broken = ChainControl(
        h.ledger, invoker=RecordingInvoker(fail=HandOffError("boom")), clock=clock, environ={}
    )
    with pytest.raises(HandOffError, match=r"moved to hop 3 .* could not be sent .*boom.*stall_after=0"):
        broken.resume(chain_id)
    control = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={})
    with pytest.raises(ChainStateError):
        control.resume(chain_id)  # hop 3 looks freshly handed off
    assert control.resume(chain_id, stall_after=0).hop == 4
    assert h.drain()["result"] == expected(45)


def test_an_oversized_resume_needs_a_spill_store_and_spills_with_one(tmp_path, clock):
    spill = MemorySpillStore()
    h = Harness(tmp_path, clock, environ={}, spill=spill, max_payload_bytes=2000)
    chain_id, _ = failed_chain(h)
    h.broken = False
    # The handler's event is small; make the record too large by hand, as a huge event would.
    big = h.ledger.get(chain_id)
    assert big is not None
    h.ledger._records[chain_id] = dataclasses.replace(big, event={**big.event, "pad": "x" * 5000})
    small = ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={}, max_payload_bytes=2000)
    with pytest.raises(ConfigurationError, match="no spill bucket"):
        small.resume(chain_id)
    record = h.ledger.get(chain_id)
    assert record is not None and record.status is ChainStatus.FAILED  # untouched
    control = ChainControl(
        h.ledger, invoker=h.invoker, clock=clock, environ={}, spill=spill, max_payload_bytes=2000
    )
    control.resume(chain_id)
    assert "body_ref" in json.loads(h.invoker.calls[0][1])[ENVELOPE_KEY]
    assert h.drain()["result"] == expected(45)


class FakeLambda:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def invoke(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {"StatusCode": 202}


def test_the_default_invoker_uses_lambda_through_a_client_made_on_first_use(clock):
    ledger = InMemoryLedger()
    ledger.start("c", progress={"state": {}}, event={"a": 1}, now=clock.time(), function=FUNCTION + ":7")
    ledger.fail("c", hop=0, owner=None, error="x", now=clock.time())
    made: list[str] = []
    fake = FakeLambda()

    def factory(service: str) -> Any:
        made.append(service)
        return fake

    env = {**KEY_ENV, "RECURSE_LAMBDA_SPILL_BUCKET": "spill-here"}
    control = ChainControl(ledger, clock=clock, environ=env, client_factory=factory)
    assert isinstance(control.invoker, LambdaInvoker)
    assert isinstance(control.spill, S3SpillStore) and control.spill.bucket == "spill-here"
    assert made == [] and control.signs  # nothing created yet
    control.resume("c")
    control.status("c")
    assert made == ["lambda"]
    (request,) = fake.requests
    assert request["FunctionName"] == FUNCTION + ":7" and request["InvocationType"] == "Event"
    env_obj = EnvelopeCodec(signing_key=b"s3cret").decode(json.loads(request["Payload"]))
    assert (env_obj.hop, env_obj.code_version, env_obj.event) == (1, "7", {"a": 1})


@pytest.mark.parametrize(
    ("arn", "version"),
    [(FUNCTION, "$LATEST"), (FUNCTION + ":12", "12"), (FUNCTION + ":prod", "$LATEST"), ("name", "$LATEST")],
)
def test_code_version_of(arn, version):
    assert code_version_of(arn) == version


# ------------------------------------------------------------------------------------------------ status, list, cancel


def test_status_list_and_cancel(tmp_path, clock):
    ledger = InMemoryLedger()
    control = ChainControl(ledger, invoker=RecordingInvoker(), clock=clock, environ={})
    for i, name in enumerate(["a", "b", "c", "d"]):
        ledger.start(name, progress={"state": {"i": i}}, event={}, now=clock.time() + i, function=FUNCTION)
    ledger.fail("b", hop=0, owner=None, error="boom", now=clock.time() + 10)
    assert control.status("b").error == "boom"
    assert [r.chain_id for r in control.list()] == ["b", "d", "c", "a"]
    assert [r.chain_id for r in control.list(limit=2)] == ["b", "d"]
    assert [r.chain_id for r in control.list(status="failed")] == ["b"]
    assert [r.chain_id for r in control.list(ChainStatus.RUNNING)] == ["d", "c", "a"]
    with pytest.raises(ConfigurationError, match="unknown chain status 'broken': expected one of RUNNING"):
        control.list(status="broken")
    for bad in (0, -1, True):
        with pytest.raises(ConfigurationError, match="limit must be a positive integer"):
            control.list(limit=bad)

    clock.advance(20)
    cancelled = control.cancel("c")
    assert cancelled.status is ChainStatus.CANCELLED and cancelled.updated_at == clock.time()
    for chain_id, status in (("c", "CANCELLED"), ("b", "FAILED")):
        with pytest.raises(
            ChainStateError, match=f"cannot cancel chain {chain_id}: it is {status}; only a RUNNING"
        ):
            control.cancel(chain_id)


def test_a_cancelled_chain_stops_at_its_next_hop(tmp_path, clock):
    h = Harness(tmp_path, clock, environ={})
    h.broken = False
    first = h.deliver({"n": 45})
    ChainControl(h.ledger, invoker=h.invoker, clock=clock, environ={}).cancel(first["chain_id"])
    h.seen.clear()
    out = h.drain()
    assert out["outcome"] == "stale" and out["status"] == "CANCELLED"
    assert h.seen == []


def test_resume_rejects_a_negative_stall_after(clock):
    control = ChainControl(InMemoryLedger(), invoker=RecordingInvoker(), clock=clock, environ={})
    with pytest.raises(ConfigurationError, match="stall_after"):
        control.resume("x", stall_after=-1)


# ------------------------------------------------------------------------------------------------ keys: from_fields


def test_from_fields_is_stable_and_depends_on_names_and_values():
    key = keys.from_fields("tenant", "job.id")
    a = key({"tenant": "t1", "job": {"id": 7, "other": 1}, "noise": 1})
    assert a == key({"noise": 2, "job": {"other": 9, "id": 7}, "tenant": "t1"})
    assert a.startswith("key-") and len(a) == len("key-") + 32
    assert key({"tenant": "t1", "job": {"id": 8}}) != a
    assert keys.from_fields("tenant", "job.id", prefix="job")({"tenant": "t1", "job": {"id": 7}}).startswith(
        "job-"
    )
    # The same values under other field names are another key.
    assert keys.from_fields("a")({"a": "x"}) != keys.from_fields("b")({"b": "x"})
    assert "tenant" in key.__name__


def test_from_fields_names_what_the_event_lacks():
    key = keys.from_fields("tenant", "job.id")
    with pytest.raises(
        ConfigurationError, match=r"lacks job\.id \(missing or null\); got an object with keys: job, tenant"
    ):
        key({"tenant": "t", "job": {}})
    with pytest.raises(ConfigurationError, match=r"lacks tenant, job\.id"):
        key({"tenant": None, "job": "not an object"})
    with pytest.raises(ConfigurationError, match="must be a JSON object, not a list"):
        key([1])
    for bad in ((), ("a", "a"), ("",), ("a..b",)):
        with pytest.raises(ConfigurationError):
            keys.from_fields(*bad)


# ------------------------------------------------------------------------------------------------ keys: s3_object


def notification(bucket: str, key: str, etag: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 3}
    if etag is not None:
        obj["eTag"] = etag
    return {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": bucket}, "object": obj}}]}


def test_s3_object_heads_the_object_and_matches_its_event_notification(moto_s3):
    moto_s3.create_bucket(Bucket="inbox")
    key = "dir/a bé+c.txt"
    etag = moto_s3.put_object(Bucket="inbox", Key=key, Body=b"one")["ETag"]
    direct = keys.s3_object({"bucket": "inbox", "key": key}, client=moto_s3)
    assert direct.startswith("s3-") and len(direct) == 35
    assert keys.s3_object({"bucket": "inbox", "key": key}, client=lambda: moto_s3) == direct  # a getter
    # S3 notifications URL-encode the key (space as +) and give the ETag without quotes.
    encoded = "dir/a+b%C3%A9%2Bc.txt"
    assert keys.s3_object(notification("inbox", encoded, etag.strip('"'))) == direct
    assert keys.s3_object({"bucket": "inbox", "key": key, "etag": etag}) == direct  # no HEAD needed
    # A new upload is a new job; another key is another job.
    moto_s3.put_object(Bucket="inbox", Key=key, Body=b"two")
    assert keys.s3_object({"bucket": "inbox", "key": key}, client=moto_s3) != direct
    moto_s3.put_object(Bucket="inbox", Key="other", Body=b"one")
    assert keys.s3_object({"bucket": "inbox", "key": "other"}, client=moto_s3) != direct


def test_s3_object_creates_its_default_client_on_first_use(moto_s3, monkeypatch):
    from recurse_lambda.aws import clients

    monkeypatch.setattr(clients, "shared", clients.ClientCache())
    moto_s3.create_bucket(Bucket="inbox")
    moto_s3.put_object(Bucket="inbox", Key="k", Body=b"x")
    first = keys.s3_object({"bucket": "inbox", "key": "k"})
    client = clients.client("s3")
    assert clients.shared.created() == ["s3"]
    assert keys.s3_object({"bucket": "inbox", "key": "k"}) == first and clients.client("s3") is client


def test_s3_object_takes_an_injected_etag_lookup_and_sends_nothing():
    asked: list[tuple[str, str]] = []

    def etag_of(bucket: str, key: str) -> str:
        asked.append((bucket, key))
        return '"abc"'

    by_lookup = keys.s3_object({"bucket": "b", "key": "k"}, etag_of=etag_of)
    assert asked == [("b", "k")] and by_lookup == keys.s3_object({"bucket": "b", "key": "k", "etag": "abc"})


def test_s3_object_maps_a_missing_object_or_bucket(moto_s3):
    moto_s3.create_bucket(Bucket="inbox")
    with pytest.raises(ObjectNotFoundError, match="s3://inbox/nope"):
        keys.s3_object({"bucket": "inbox", "key": "nope"}, client=moto_s3)
    with pytest.raises(BucketNotFoundError, match="bucket 'gone' does not exist"):
        keys.s3_object({"bucket": "gone", "key": "k"}, client=moto_s3)


def test_s3_object_keys_every_record_of_a_notification():
    one = notification("b", "k1", "e1")
    two = notification("b", "k2", "e2")
    both = {"Records": one["Records"] + two["Records"]}
    assert len({keys.s3_object(one), keys.s3_object(two), keys.s3_object(both)}) == 3


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"bucket": "b"},
            "needs non-empty string fields 'bucket' and 'key'.*got an object with keys: bucket",
        ),
        ({"bucket": "b", "key": ""}, "needs non-empty string fields"),
        ("s3://b/k", "must be a JSON object, not a str"),
        ({"Records": []}, "'Records' is empty"),
        (
            {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]},
            "not an S3 event notification.*aws:sqs.*unwrapped",
        ),
        (notification("b", "k", None), "lacks bucket.name, object.key or object.eTag.*delete notification"),
    ],
)
def test_s3_object_says_what_the_event_lacks(event, message):
    class NoHead:
        def head_object(self, **kwargs: Any) -> Any:
            raise AssertionError("no HEAD for an event that is not usable")

    with pytest.raises(ConfigurationError, match=message):
        keys.s3_object(event, client=NoHead())


# ------------------------------------------------------------------------------------------------ idempotent start


def test_the_same_job_submitted_twice_starts_one_chain_until_the_retention_expires(tmp_path, clock):
    ledger = InMemoryLedger(retention=3600)
    h = Harness(tmp_path, clock, environ={}, ledger=ledger, chain_id=keys.from_fields("job"))
    h.broken = False
    first = h.deliver({"job": "j1", "n": 25, "submitted": 1})
    again = h.deliver({"job": "j1", "n": 25, "submitted": 2})  # a second submission, while it runs
    assert again["chain_id"] == first["chain_id"] and again["status"] == "RUNNING"
    assert again["outcome"] == "stale" and len(ledger) == 1  # hop 0 has already handed off
    h.drain()
    done = h.deliver({"job": "j1", "n": 25, "submitted": 3})
    assert done["status"] == "SUCCEEDED" and done["result"] == expected(25) and done["outcome"] == "stale"
    assert len(ledger) == 1
    h.seen.clear()
    clock.advance(3601)
    anew = h.deliver({"job": "j1", "n": 25, "submitted": 4})
    assert anew["chain_id"] == first["chain_id"] and anew["outcome"] == "handed_off"
    assert h.seen[0] == 0  # a new chain, from the start
    assert h.drain()["result"] == expected(25)


def test_s3_object_as_the_chain_id_of_a_handler(tmp_path, clock, moto_s3):
    moto_s3.create_bucket(Bucket="inbox")
    etag = moto_s3.put_object(Bucket="inbox", Key="k", Body=b"x")["ETag"]
    chain_id = functools.partial(keys.s3_object, client=moto_s3)
    h = Harness(tmp_path, clock, environ={}, chain_id=chain_id)
    h.broken = False
    first = h.deliver({"bucket": "inbox", "key": "k", "n": 5})
    via_notification = h.deliver({**notification("inbox", "k", etag.strip('"')), "n": 5})
    assert via_notification["chain_id"] == first["chain_id"]
    assert len(h.ledger) == 1
    missing = h.deliver({"bucket": "inbox", "key": "absent", "n": 5})
    assert missing["outcome"] == "rejected" and "no such key" in missing["error"]


def test_the_default_chain_id_keys_an_s3_notification_on_its_object_and_anything_else_on_the_event():
    from recurse_lambda import keys

    note = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "s3": {"bucket": {"name": "b1"}, "object": {"key": "a+b.txt", "eTag": "e1"}},
            }
        ]
    }
    renotified = {**note, "Records": [{**note["Records"][0], "eventTime": "later"}]}  # same object version
    assert keys.default(note) == keys.default(renotified) == keys.s3_object(note)
    assert keys.default({"bucket": "b1", "key": "a b.txt"}).startswith("ev-")  # no surprise HEAD
    assert keys.default({"x": 1}) == keys.default({"x": 1}) != keys.default({"x": 2})
    assert keys.default({"Records": [{"body": "sqs"}]}).startswith("ev-")  # records, but not S3 ones
