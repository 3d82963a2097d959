"""Trigger events: one chain per job, started idempotently, and exactly the failed records reported."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recurse_lambda import (
    ENVELOPE_KEY,
    ConfigurationError,
    EnvelopeCodec,
    HandOffError,
    InMemoryLedger,
    InvokeThrottled,
    LedgerError,
    TriggerError,
    WarmState,
    World,
    keys,
)
from recurse_lambda.local import FakeContext, FaultPlan, Simulator, VirtualClock
from recurse_lambda.triggers import chain_id_of, is_trigger_event, record_jobs, start_chain

from .conftest import Counter, counting_handler, expected

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:recurse-lambda-sim"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:jobs"


# -- fakes -------------------------------------------------------------------------------------------------


class FlakyInvoker:
    """Records every invoke; fails those whose job has ``"invoke": "fail"`` (or ``"throttle"``) until healed."""

    def __init__(self, clock: VirtualClock) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.healed = False  # once set, every invoke succeeds
        self.clock = clock
        self.latency = 0.0  # virtual seconds each invoke takes

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.clock.advance(self.latency)
        body = json.loads(payload)
        job = body[ENVELOPE_KEY]["event"]
        mode = job.get("invoke") if isinstance(job, dict) and not self.healed else None
        if mode == "fail":
            raise HandOffError(f"invoke of {function} failed: ServiceException")
        if mode == "throttle":
            raise InvokeThrottled("Rate Exceeded.", 1.0)
        self.calls.append((function, body))

    def jobs(self) -> list[Any]:
        return [body[ENVELOPE_KEY]["event"] for _, body in self.calls]


class FlakyLedger(InMemoryLedger):
    """An in-memory ledger whose ``start`` fails for the jobs with ``"ledger": "fail"``."""

    def start(self, chain_id: str, *, progress: Any, event: Any, now: float, function: Any = None) -> Any:
        if isinstance(event, dict) and event.get("ledger") == "fail":
            raise LedgerError(
                "ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException"
            )
        return super().start(chain_id, progress=progress, event=event, now=now, function=function)


class Lambda:
    """A handler with a fake world: deliver events by hand, as Lambda would."""

    def __init__(self, tmp_path: Any, *, ledger: Any = "memory", **options: Any) -> None:
        self.clock = VirtualClock()
        self.ledger = FlakyLedger() if ledger == "memory" else ledger
        self.handler = counting_handler(self.clock, **options)
        self.invoker = FlakyInvoker(self.clock)
        self.world = World(
            clock=self.clock,
            invoker=self.invoker,
            warm=WarmState(tmp_dir=str(tmp_path)),
            ledger=self.ledger,
        )
        self.count = 0

    def context(self, seconds: float = 30.0) -> FakeContext:
        self.count += 1
        return FakeContext(
            clock=self.clock, deadline=self.clock.now() + seconds, aws_request_id=f"req-{self.count}"
        )

    def deliver(self, event: Any, seconds: float = 30.0) -> Any:
        return self.handler.handle(event, self.context(seconds), self.world)


def sqs(message_id: str, body: Any, *, group: str | None = None, arn: str = QUEUE) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }
    if group is not None:
        record["attributes"]["MessageGroupId"] = group
    return record


def kinesis(seq: str, data: Any) -> dict[str, Any]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return {
        "eventSource": "aws:kinesis",
        "eventID": f"shardId-000000000000:{seq}",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/jobs",
        "kinesis": {"partitionKey": "p", "sequenceNumber": seq, "data": base64.b64encode(raw).decode()},
    }


def dynamodb(seq: str, image: dict[str, Any] | None, name: str = "INSERT") -> dict[str, Any]:
    change: dict[str, Any] = {
        "Keys": {"id": {"S": seq}},
        "SequenceNumber": seq,
        "StreamViewType": "NEW_IMAGE",
    }
    if image is not None:
        change["NewImage"] = image
    return {"eventSource": "aws:dynamodb", "eventName": name, "eventID": seq, "dynamodb": change}


def s3_record(
    bucket: str, key: str, etag: str | None, *, version: str | None = None, size: int = 11
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": size, "sequencer": "0A1B"}
    if etag is not None:
        obj["eTag"] = etag
    if version is not None:
        obj["versionId"] = version
    name = "ObjectCreated:Put" if etag is not None else "ObjectRemoved:Delete"
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }


def eventbridge_s3(bucket: str, key: str, etag: str | None, kind: str = "Object Created") -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 11, "sequencer": "0A1B"}
    if etag is not None:
        obj["etag"] = etag
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": kind,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj, "reason": "PutObject"},
    }


def sns(message: Any, message_id: str = "95df01b4-ee98-5cb9-9903-4c221d41eb5e") -> dict[str, Any]:
    """A record of SNS's direct delivery to Lambda, as AWS documents it (note the capitalised keys)."""
    topic = "arn:aws:sns:us-east-1:123456789012:sns-lambda"
    return {
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{topic}:21be56ed-a058-49f5-8c98-aedd2564c486",
        "EventSource": "aws:sns",
        "Sns": {
            "SignatureVersion": "1",
            "Timestamp": "2019-01-02T12:45:07.000Z",
            "Signature": "tcc6faL2yUC6dgZdmrwh1Y4cGa/ebXEkAi6RibDsvpi+tE/1+82j...65r==",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ac565b8b1a6c5d0.pem",
            "MessageId": message_id,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "MessageAttributes": {"Test": {"Type": "String", "Value": "TestString"}},
            "Type": "Notification",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "TopicArn": topic,
            "Subject": "TestInvoke",
        },
    }


def failures(response: dict[str, Any]) -> list[str]:
    assert set(response) == {"batchItemFailures"}
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


# -- each source, with mixed success and failure -----------------------------------------------------------


def test_an_sqs_batch_reports_exactly_the_records_whose_chain_could_not_start(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    done = lam.deliver({"n": 3, "job": "old"})  # this job has run already: a redelivery must not restart it
    assert done["status"] == "SUCCEEDED"
    batch = {
        "Records": [
            sqs("ok", {"n": 5, "job": "a"}),
            sqs("not-json", "{'n': 5"),
            sqs("invoke-fails", {"n": 5, "job": "b", "invoke": "fail"}),
            sqs("throttled", {"n": 5, "job": "c", "invoke": "throttle"}),
            sqs("ledger-fails", {"n": 5, "job": "d", "ledger": "fail"}),
            sqs("duplicate", {"n": 3, "job": "old"}),
        ]
    }
    response = lam.deliver(batch)
    assert failures(response) == ["not-json", "invoke-fails", "throttled", "ledger-fails"]
    assert lam.invoker.jobs() == [{"n": 5, "job": "a"}]  # the duplicate joined its chain: no invoke
    function, envelope = lam.invoker.calls[0]
    assert function == FUNCTION and envelope[ENVELOPE_KEY]["hop"] == 0

    # Redelivered: "a", "b" and "c" exist at hop 0, never claimed (the first start may have died before its
    # invoke, or the invoke failed), so hop 0 is sent again; the duplicate still joins; the ledger still fails.
    lam.invoker.calls.clear()
    lam.invoker.healed = True
    assert failures(lam.deliver(batch)) == ["not-json", "ledger-fails"]
    assert [job["job"] for job in lam.invoker.jobs()] == ["a", "b", "c"]
    for _, envelope in lam.invoker.calls:
        assert lam.deliver(envelope)["result"] == expected(5)
    lam.invoker.calls.clear()
    assert failures(lam.deliver(batch)) == ["not-json", "ledger-fails"]
    assert lam.invoker.calls == []  # every chain has ended: all join


def test_hop_zero_sent_by_the_dispatcher_runs_the_chain_and_a_resent_copy_is_dropped(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    job = {"n": 5, "job": "a"}
    assert failures(lam.deliver({"Records": [sqs("m1", job)]})) == []
    assert failures(lam.deliver({"Records": [sqs("m1", job)]})) == []  # SQS delivered it twice
    (_, first), (_, second) = lam.invoker.calls  # hop 0 was not claimed yet: resent
    assert first == second
    lam.invoker.calls.clear()
    ran = lam.deliver(first)
    assert ran["chain_id"] == chain_id_of(lam.handler, job) and ran["outcome"] == "succeeded"
    assert ran["result"] == expected(5)
    assert lam.deliver(second)["outcome"] == "stale"  # the duplicate hop 0 does no work
    assert failures(lam.deliver({"Records": [sqs("m1", job)]})) == [] and lam.invoker.calls == []


def test_a_kinesis_batch_reports_sequence_numbers(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    batch = {
        "Records": [
            kinesis("101", {"n": 4, "job": "k1"}),
            kinesis("102", b"\xff not json"),
            kinesis("103", {"n": 4, "job": "k3", "ledger": "fail"}),
            kinesis("104", {"n": 4, "job": "k4"}),
        ]
    }
    assert failures(lam.deliver(batch)) == ["102", "103"]  # exactly those: no "followers" in a stream
    assert lam.invoker.jobs() == [{"n": 4, "job": "k1"}, {"n": 4, "job": "k4"}]
    bad = dict(kinesis("105", {}), kinesis={"sequenceNumber": "105", "data": "%%%"})
    assert failures(lam.deliver({"Records": [bad]})) == ["105"]


def test_a_dynamodb_stream_batch_gives_plain_json_and_reports_sequence_numbers(tmp_path: Any) -> None:
    def initial(event: dict[str, Any]) -> Any:
        if event.get("broken"):
            raise ValueError("cannot plan this job")
        return Counter()

    lam = Lambda(tmp_path, initial_state=initial)
    image = {
        "n": {"N": "3"},
        "ratio": {"N": "0.5"},
        "name": {"S": "a b"},
        "tags": {"SS": ["y", "x"]},
        "blob": {"B": base64.b64encode(b"\x00\x01").decode()},
        "meta": {
            "M": {"ok": {"BOOL": True}, "none": {"NULL": True}, "list": {"L": [{"N": "1"}, {"S": "s"}]}}
        },
    }
    batch = {
        "Records": [
            dynamodb("1", image),
            dynamodb("2", None, "REMOVE"),  # no NewImage: nothing to start, and not a failure
            dynamodb("3", {"n": {"N": "3"}, "broken": {"BOOL": True}}),
            dynamodb("4", {"n": {"N": "2"}, "bad": {"Q": "?"}}),
        ]
    }
    assert failures(lam.deliver(batch)) == ["3", "4"]
    (job,) = lam.invoker.jobs()
    assert job == {
        "n": 3,
        "ratio": 0.5,
        "name": "a b",
        "tags": ["x", "y"],
        "blob": "AAE=",
        "meta": {"ok": True, "none": None, "list": [1, "s"]},
    }


def test_an_s3_notification_starts_one_chain_per_object_and_raises_when_one_cannot_start(
    tmp_path: Any,
) -> None:
    lam = Lambda(tmp_path)
    note = {
        "Records": [
            s3_record("inbox", "dir/a+b%C3%A9%2Bc.txt", "e1"),
            s3_record("inbox", "gone.txt", None),  # a deletion: nothing to start
            s3_record("inbox", "v.txt", "e2", version="v7"),
        ]
    }
    response = lam.deliver(note)
    assert response["outcome"] == "dispatched" and response["source"] == "aws:s3"
    jobs = lam.invoker.jobs()
    assert jobs == [
        {"bucket": "inbox", "key": "dir/a bé+c.txt", "etag": "e1", "version_id": None, "size": 11},
        {"bucket": "inbox", "key": "v.txt", "etag": "e2", "version_id": "v7", "size": 11},
    ]
    # Keyed on the object, as keys.s3_object keys the notification and a direct {"bucket", "key", "etag"}.
    assert [c["chain_id"] for c in response["chains"]] == [
        keys.s3_object({"Records": [note["Records"][0]]}),
        keys.s3_object({"bucket": "inbox", "key": "v.txt", "etag": '"e2"'}),
    ]
    assert [c["outcome"] for c in response["chains"]] == ["started", "started"]

    # A record that cannot start fails the invocation: Lambda retries the whole (idempotent) event.
    lam.invoker.calls.clear()
    no_bucket = {**s3_record("inbox", "y", "e4"), "s3": {"object": {"key": "y", "eTag": "e4"}}}
    broken = {"Records": [s3_record("inbox", "x", "e3"), no_bucket]}
    with pytest.raises(
        TriggerError, match=r"1 of 2 aws:s3 record\(s\) could not start a chain.*Records\[1\]"
    ):
        lam.deliver(broken)
    retried = lam.deliver({"Records": broken["Records"][:1]})
    assert [c["outcome"] for c in retried["chains"]] == ["resent"]


def test_eventbridge_s3_events_directly_and_inside_sqs(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    response = lam.deliver(eventbridge_s3("inbox", "a+b.txt", "e1"))
    assert response["source"] == "aws.s3" and response["chains"][0]["outcome"] == "started"
    assert lam.invoker.jobs() == [
        {"bucket": "inbox", "key": "a b.txt", "etag": "e1", "version_id": None, "size": 11}
    ]
    assert lam.deliver(eventbridge_s3("inbox", "a+b.txt", None, "Object Deleted"))["chains"] == []
    # As AWS's own examples show, Object Deleted (and restores, tagging...) may carry an etag: no chain either.
    for kind in (
        "Object Deleted",
        "Object Restore Completed",
        "Object Tags Added",
        "Object Storage Class Changed",
    ):
        assert lam.deliver(eventbridge_s3("inbox", "a+b.txt", "e1", kind))["chains"] == []
    lam.invoker.calls.clear()
    batch = {
        "Records": [
            sqs("m1", eventbridge_s3("inbox", "a+b.txt", "e1")),
            sqs("m2", eventbridge_s3("inbox", "c", "e2")),
        ]
    }
    assert failures(lam.deliver(batch)) == []
    # One chain per object: a+b.txt is the chain started above (its hop 0, never claimed here, is sent again).
    assert [job["key"] for job in lam.invoker.jobs()] == ["a b.txt", "c"] and len(lam.ledger) == 2


def test_only_chosen_s3_event_types_start_chains_whatever_etag_they_carry(tmp_path: Any) -> None:
    def named(name: str, key: str) -> dict[str, Any]:
        return {**s3_record("inbox", key, "e-" + key), "eventName": name}

    others = [
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "LifecycleTransition",
        "ObjectRestore:Completed",
        "ObjectRestore:Post",
        "Replication:OperationReplicatedAfterThreshold",
        "IntelligentTiering",
        "ObjectTagging:Put",
    ]
    created = ["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy"]
    note = {"Records": [named(n, f"k{i}") for i, n in enumerate(others + created)]}
    lam = Lambda(tmp_path)
    assert len(lam.deliver(note)["chains"]) == len(created)
    assert [job["key"] for job in lam.invoker.jobs()] == [
        f"k{i}" for i in range(len(others), len(note["Records"]))
    ]
    assert record_jobs(sqs("m", note)) == [job for r in note["Records"] for job in record_jobs(r)]

    # The user chooses: patterns on eventName (notifications) and detail-type (EventBridge).
    chosen = ("ObjectCreated:*", "ObjectRestore:Completed", "Object Restore Completed")
    lam = Lambda(tmp_path, s3_events=chosen)
    assert len(lam.deliver(note)["chains"]) == len(created) + 1
    assert lam.deliver(eventbridge_s3("inbox", "r", "e9", "Object Restore Completed"))["chains"][0][
        "outcome"
    ] == ("started")
    assert lam.deliver(eventbridge_s3("inbox", "r", "e9", "Object Created"))["chains"] == []
    restore = named("ObjectRestore:Completed", "r")
    assert record_jobs(restore) == [] and len(record_jobs(restore, s3_events=chosen)) == 1
    deletion = s3_record("inbox", "gone", None)  # a chosen event without an ETag: a job with no pin
    assert record_jobs(deletion, s3_events=["ObjectRemoved:*"]) == [
        {"bucket": "inbox", "key": "gone", "etag": None, "version_id": None, "size": 11}
    ]
    with pytest.raises(TriggerError, match="no eventName"):
        record_jobs({k: v for k, v in restore.items() if k != "eventName"})
    with pytest.raises(TypeError, match="tuple of patterns"):
        record_jobs(restore, s3_events="ObjectCreated:*")
    with pytest.raises(ConfigurationError, match="s3_events"):
        Lambda(tmp_path, s3_events="ObjectCreated:*")


def test_a_direct_sns_notification_starts_its_message_as_a_job(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    event = {"Records": [sns({"n": 4, "job": "s1"})]}
    assert is_trigger_event(event)
    response = lam.deliver(event)
    assert response["source"] == "aws:sns" and response["chains"][0]["outcome"] == "started"
    assert lam.invoker.jobs() == [{"n": 4, "job": "s1"}]
    (_, hop0) = lam.invoker.calls[0]
    assert lam.deliver(hop0)["result"] == expected(4)
    assert lam.deliver(event)["chains"][0]["outcome"] == "joined"  # SNS retried the delivery: one chain

    # An S3 notification inside SNS is unwrapped, as in SQS; S3's test event gives nothing; text is a job.
    note = {"Records": [s3_record("inbox", "a+b.txt", "e1")]}
    assert record_jobs(sns(note)) == record_jobs(note["Records"][0]) == record_jobs(sqs("m", note))
    assert record_jobs(sns({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert record_jobs(sns("Hello from SNS!")) == ["Hello from SNS!"]
    assert record_jobs(sns([1, 2])) == [[1, 2]]
    wrapped = {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "plain text"}
    assert record_jobs(sqs("m", wrapped)) == ["plain text"]  # SNS -> SQS: the same rule

    # SNS invokes asynchronously, like S3: a job that cannot start fails the invocation, and SNS retries.
    with pytest.raises(TriggerError, match=r"1 of 1 aws:sns record\(s\) could not start"):
        lam.deliver({"Records": [sns({"n": 2, "invoke": "fail"}, "m2")]})
    with pytest.raises(TriggerError, match=r"no Sns\.Message"):
        record_jobs({"EventSource": "aws:sns", "Sns": {"Type": "Notification"}})


def test_what_an_sqs_body_may_wrap() -> None:
    note = {"Records": [s3_record("inbox", "k1", "e1"), s3_record("inbox", "k2", "e2")]}
    s3_job = {"bucket": "inbox", "key": "k1", "etag": "e1", "version_id": None, "size": 11}
    assert record_jobs(sqs("m", note))[0] == s3_job and len(record_jobs(sqs("m", note))) == 2
    sns = {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": json.dumps(note)}
    assert record_jobs(sqs("m", sns)) == record_jobs(sqs("m", note))  # S3 -> SNS -> SQS without raw delivery
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "inbox"}
    assert record_jobs(sqs("m", test_event)) == []
    assert record_jobs(sqs("m", [1, 2])) == [[1, 2]]  # any JSON is a job
    with pytest.raises(TriggerError, match="continuation envelope"):
        record_jobs(sqs("m", {ENVELOPE_KEY: {"hop": 3}}))
    with pytest.raises(TriggerError, match="not S3 notifications"):
        record_jobs(sqs("m", {"Records": [sqs("inner", {})]}))
    with pytest.raises(TriggerError, match="not JSON"):
        record_jobs(sqs("m", "nope"))


# -- FIFO ----------------------------------------------------------------------------------------------------


def test_a_fifo_queue_reports_the_later_messages_of_a_failed_group(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    fifo = QUEUE + ".fifo"
    batch = {
        "Records": [
            sqs("a1", {"n": 2, "j": "a1"}, group="A", arn=fifo),
            sqs("b1", {"n": 2, "j": "b1"}, group="B", arn=fifo),
            sqs("a2", {"n": 2, "j": "a2", "invoke": "fail"}, group="A", arn=fifo),
            sqs("b2", {"n": 2, "j": "b2"}, group="B", arn=fifo),
            sqs("a3", {"n": 2, "j": "a3"}, group="A", arn=fifo),
        ]
    }
    assert failures(lam.deliver(batch)) == ["a2", "a3"]
    assert [j["j"] for j in lam.invoker.jobs()] == ["a1", "b1", "b2"]  # a3 was not started: order is kept

    # A standard queue's message groups (fair queues) do not order anything: a3 starts.
    lam = Lambda(tmp_path)
    standard = {"Records": [dict(r, eventSourceARN=QUEUE) for r in batch["Records"]]}
    assert failures(lam.deliver(standard)) == ["a2"]
    assert [j["j"] for j in lam.invoker.jobs()] == ["a1", "b1", "b2", "a3"]


# -- empty and malformed events --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"Records": []}, "empty trigger event"),
        ({"Records": "x"}, "'Records' is a str, not a list"),
        ({"Records": [{"eventSource": "aws:ses"}]}, "eventSource 'aws:ses'"),
        ({"Records": [None]}, r"Records\[0\] has eventSource None"),
        ({"Records": [sqs("m1", {}), kinesis("1", {})]}, "several sources"),
        ({"Records": [{k: v for k, v in sqs("m1", {}).items() if k != "messageId"}]}, "has no messageId"),
        ({"Records": [{**kinesis("1", {}), "kinesis": {"data": ""}}]}, "no kinesis.sequenceNumber"),
        ({"Records": [dynamodb("", {})]}, "no dynamodb.SequenceNumber"),
    ],
)
def test_an_empty_or_malformed_batch_is_a_clear_error(tmp_path: Any, event: Any, message: str) -> None:
    lam = Lambda(tmp_path)
    with pytest.raises(TriggerError, match=message):
        lam.deliver(event)
    with pytest.raises(TriggerError, match=message):
        is_trigger_event(event)
    assert lam.invoker.calls == [] and len(lam.ledger) == 0


def test_other_events_still_run_inline_as_hop_zero(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    direct = lam.deliver({"n": 3})
    assert direct["outcome"] == "succeeded" and direct["hop"] == 0
    own = lam.deliver({"n": 3, "Records": []})  # "Records" among other keys: the caller's own event
    assert own["outcome"] == "succeeded" and not is_trigger_event({"n": 3, "Records": []})
    assert lam.invoker.calls == []


def test_records_left_when_time_runs_out_are_reported_not_lost(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    lam.invoker.latency = 1.0
    batch = {"Records": [sqs(f"m{i}", {"n": 1, "i": i}) for i in range(4)]}
    # 3 s: after two 1-second starts, 1 s is left, less than twice the slowest start.
    assert failures(lam.deliver(batch, seconds=3.0)) == ["m2", "m3"]
    assert [job["i"] for job in lam.invoker.jobs()] == [0, 1] and len(lam.ledger) == 2


def test_an_abandoned_trigger_event_handed_back_by_the_forwarder_is_dispatched_again(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    note = {"Records": [s3_record("inbox", "k", "e1")]}
    record = {
        "requestContext": {"requestId": "r0", "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": note,
        "responsePayload": {"errorType": "TriggerError"},
    }
    assert lam.deliver(record)["chains"][0]["outcome"] == "started"
    assert lam.deliver(record)["chains"][0]["outcome"] == "resent"  # hop 0 still unclaimed


def test_hop_zero_envelopes_are_signed_when_a_key_is_set(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    lam.world.environ = {"RECURSE_LAMBDA_SIGNING_KEY": "s3cret"}
    lam.deliver({"Records": [sqs("m1", {"n": 2})]})
    ((_, payload),) = lam.invoker.calls
    assert EnvelopeCodec(signing_key=b"s3cret").decode(payload).event == {"n": 2}
    forged = json.loads(json.dumps(payload))
    forged[ENVELOPE_KEY]["event"] = {"n": 99}
    assert lam.deliver(forged)["outcome"] == "rejected"


# -- stateless mode ------------------------------------------------------------------------------------------


def test_stateless_mode_starts_the_job_on_every_delivery(tmp_path: Any) -> None:
    lam = Lambda(tmp_path, ledger=None)
    batch = {"Records": [sqs("m1", {"n": 2}), sqs("m2", "bad")]}
    assert failures(lam.deliver(batch)) == ["m2"]
    assert failures(lam.deliver(batch)) == ["m2"]
    assert lam.invoker.jobs() == [{"n": 2}, {"n": 2}]  # at-least-once: a redelivery starts it again
    assert lam.deliver(lam.invoker.calls[0][1])["result"] == expected(2)


# -- start_chain, the building block ----------------------------------------------------------------------


def test_start_chain_starts_joins_and_raises(tmp_path: Any) -> None:
    lam = Lambda(tmp_path)
    ctx = lam.context()
    first = start_chain(lam.handler, {"n": 2}, ctx, world=lam.world)
    assert first.created and first.outcome == "started" and first.status == "RUNNING" and first.hop == 0
    assert first.chain_id == chain_id_of(lam.handler, {"n": 2}) == keys.default({"n": 2})
    lam.deliver(lam.invoker.calls[0][1])
    joined = start_chain(lam.handler, {"n": 2}, ctx, world=lam.world)
    assert (joined.outcome, joined.status, joined.created) == ("joined", "SUCCEEDED", False)
    with pytest.raises(HandOffError):
        start_chain(lam.handler, {"n": 2, "invoke": "fail"}, ctx, world=lam.world)
    with pytest.raises(TriggerError, match="another trigger event"):
        start_chain(lam.handler, {"Records": [sqs("m", {})]}, ctx, world=lam.world)
    with pytest.raises(TypeError):
        start_chain(lambda e, c: None, {}, ctx)  # type: ignore[arg-type]


# -- the simulator ---------------------------------------------------------------------------------------------


def batch_of(n: int) -> dict[str, Any]:
    return {"Records": [sqs(f"m{i}", {"n": 12 + i, "job": i}) for i in range(n)]}


@pytest.mark.parametrize("ledger", ["memory", None])
def test_the_simulator_runs_a_whole_sqs_batch_to_completion(ledger: str | None) -> None:
    clock = VirtualClock()
    handler = counting_handler(clock)
    report = Simulator(handler, timeout=0.5, clock=clock, ledger=ledger).run(batch_of(4))
    assert report.first_response == {"batchItemFailures": []}
    assert report.rows[0].outcome == "dispatched"
    ids = [chain_id_of(handler, {"n": 12 + i, "job": i}) for i in range(4)]
    assert report.chains == dict.fromkeys(ids, "SUCCEEDED")
    assert report.hops > 1  # each chain took several hops


def test_the_same_batch_delivered_again_and_duplicated_runs_each_chain_once() -> None:
    clock = VirtualClock()
    ledger = InMemoryLedger()
    ran: list[tuple[str, int]] = []
    handler = counting_handler(clock, log=ran)
    for seed in range(2):  # the second run delivers the same batch again, to the same ledger
        faults = FaultPlan(duplicate=1.0)  # and every delivery, the batch's included, comes twice
        Simulator(handler, timeout=0.5, clock=clock, ledger=ledger, faults=faults, seed=seed).run(batch_of(3))
    assert len(ledger) == 3
    assert all(r.status == "SUCCEEDED" and r.result == expected(r.event["n"]) for r in ledger.records())
    assert len(ran) == len(set(ran)) == sum(12 + i for i in range(3))  # every chunk of every chain ran once


# -- a property: reported == failed + FIFO followers ----------------------------------------------------------

KINDS = ("ok", "bad-json", "invoke-fails", "ledger-fails", "duplicate")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from("ABC")), min_size=1, max_size=12),
    st.booleans(),
)
def test_reported_records_are_exactly_the_failed_ones_and_their_fifo_followers(
    tmp_path: Any, spec: list[tuple[str, str]], fifo: bool
) -> None:
    lam = Lambda(tmp_path)
    lam.deliver({"n": 1, "job": "done"})
    bodies: dict[str, Callable[[int], Any]] = {
        "ok": lambda i: {"n": 1, "job": i},
        "bad-json": lambda i: "{",
        "invoke-fails": lambda i: {"n": 1, "job": i, "invoke": "fail"},
        "ledger-fails": lambda i: {"n": 1, "job": i, "ledger": "fail"},
        "duplicate": lambda i: {"n": 1, "job": "done"},
    }
    arn = QUEUE + ".fifo" if fifo else QUEUE
    records = [sqs(f"m{i}", bodies[kind](i), group=g, arn=arn) for i, (kind, g) in enumerate(spec)]
    reported = failures(lam.deliver({"Records": records}))

    want, blocked = [], set()
    for i, (kind, group) in enumerate(spec):
        if fifo and group in blocked:
            want.append(f"m{i}")
        elif kind in ("bad-json", "invoke-fails", "ledger-fails"):
            want.append(f"m{i}")
            blocked.add(group)
    assert reported == want
    started = [i for i, (kind, _) in enumerate(spec) if kind == "ok" and f"m{i}" not in want]
    assert [job["job"] for job in lam.invoker.jobs()] == started


# -- examples/sqs_jobs.py --------------------------------------------------------------------------------------


def test_the_sqs_jobs_example_runs_a_batch_in_the_simulator(moto_s3: Any) -> None:
    from examples import sqs_jobs

    moto_s3.create_bucket(Bucket="app-logs")
    text = "\n".join(f"line {i} {'ERROR' if i % 7 == 0 else 'ok'}" for i in range(5000))
    moto_s3.put_object(Bucket="app-logs", Key="app.log", Body=text.encode())
    job = {"bucket": "app-logs", "key": "app.log", "pattern": "ERROR"}
    event = {
        "Records": [
            sqs("m1", job),
            sqs("m2", {"bucket": "app-logs", "key": "app.log"}),  # no pattern: chain_id= refuses it
            sqs("m3", job),  # the same job again: the same chain
        ]
    }
    report = Simulator(
        sqs_jobs.handler, clock=VirtualClock(), ledger="memory", s3_client=lambda: moto_s3
    ).run(event)
    assert failures(report.first_response) == ["m2"]
    assert list(report.chains.values()) == ["SUCCEEDED"]
    assert report.result == {"lines": 5000, "matches": len(range(0, 5000, 7))}
    assert report.count("succeeded") == 1  # the resent hop 0 was dropped by its claim


def test_an_s3_job_is_pinned_to_the_notifications_etag(moto_s3: Any) -> None:
    from examples import line_count

    moto_s3.create_bucket(Bucket="uploads")
    first = moto_s3.put_object(Bucket="uploads", Key="a b.txt", Body=b"one\ntwo\n")["ETag"]
    event = {"Records": [s3_record("uploads", "a+b.txt", first.strip('"'), size=8)]}
    ok = Simulator(line_count.handler, clock=VirtualClock(), ledger="memory", s3_client=lambda: moto_s3).run(
        event
    )
    assert list(ok.chains.values()) == ["SUCCEEDED"] and ok.result["lines"] == 2

    moto_s3.put_object(Bucket="uploads", Key="a b.txt", Body=b"one\ntwo\nthree\n")  # a newer upload...
    changed = Simulator(line_count.handler, clock=VirtualClock(), ledger="memory", s3_client=lambda: moto_s3)
    report = changed.run(event)  # ...then the old notification is delivered
    assert list(report.chains.values()) == ["FAILED"]
    assert "ObjectChangedError" in report.error and first in report.error
