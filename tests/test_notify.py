"""Failure notices: the notice's JSON, and the SQS, SNS and EventBridge notifiers on moto."""

from __future__ import annotations

import json
import logging
import shlex
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from recurse_lambda import ConfigurationError, RecurseLambdaError
from recurse_lambda.aws._notify import EventBridgeNotifier, SnsNotifier, SqsNotifier
from recurse_lambda.core.notify import ChainFailureNotice, FailureNotifier, send_notice
from recurse_lambda.errors import NotifyError

REGION = "us-east-1"
FN = "arn:aws:lambda:us-east-1:123456789012:function:lines:7"
SECRET = "hunter2-in-the-state"


def notice(**overrides: Any) -> ChainFailureNotice:
    fields: dict[str, Any] = {
        "chain_id": "s3-bucket-key-etag",
        "hop": 4,
        "error": "ObjectChangedError: s3://b/k changed",
        "function": FN,
        "last_state": {"offset": 1024, "token": SECRET},
        "attempts": 3,
        "failed_at": 1_700_000_000.5,
        "table": "chains",
    }
    fields.update(overrides)
    return ChainFailureNotice(**fields)


# ---------------------------------------------------------------------------------------------- the notice


def test_the_notice_carries_what_resume_needs_and_no_state_by_default():
    body = json.loads(notice().to_json())
    assert body["type"] == "recurse-lambda.chain-failed"
    assert body["chain_id"] == "s3-bucket-key-etag"
    assert body["hop"] == 4
    assert body["error"] == "ObjectChangedError: s3://b/k changed"
    assert body["function"] == FN
    assert body["attempts"] == 3
    assert body["failed_at"] == 1_700_000_000.5
    assert body["table"] == "chains"
    assert shlex.split(body["resume"]) == [
        "recurse-lambda",
        "resume",
        "s3-bucket-key-etag",
        "--table",
        "chains",
    ]
    assert body["state_included"] is False
    assert "last_state" not in body
    assert SECRET not in notice().to_json()


def test_the_state_is_included_only_when_asked_and_dropped_when_too_large():
    body = json.loads(notice().to_json(include_state=True))
    assert body["last_state"] == {"offset": 1024, "token": SECRET}
    assert body["state_included"] is True
    big = notice(last_state={"blob": "x" * 10_000})
    kept = json.loads(big.to_json(include_state=True, max_bytes=20_000))
    assert kept["last_state"] == {"blob": "x" * 10_000}
    dropped = json.loads(big.to_json(include_state=True, max_bytes=5_000))
    assert "last_state" not in dropped
    assert dropped["state_included"] is False
    assert dropped["state_omitted"] == "too large"
    assert dropped["chain_id"] == "s3-bucket-key-etag"


def test_resume_command_quotes_odd_chain_ids_and_omits_an_unknown_table():
    n = notice(chain_id="a b;rm -rf", table=None)
    assert shlex.split(n.resume_command()) == ["recurse-lambda", "resume", "a b;rm -rf"]
    assert json.loads(n.to_json())["table"] is None
    # stateless mode: nothing to resume
    assert json.loads(notice(resumable=False).to_json())["resume"] is None


def test_a_long_error_is_cut_and_the_json_is_ascii():
    n = notice(error="é" * 10_000, last_state={"s": "\udcff"})  # a lone surrogate must not break encoding
    text = n.to_json(include_state=True)
    assert text.isascii()
    body = json.loads(text)
    assert len(body["error"]) == 4096 and body["error"].endswith("…")


def test_send_notice_logs_and_swallows_a_broken_notifier(caplog: pytest.LogCaptureFixture):
    class Broken:
        def notify(self, notice: ChainFailureNotice) -> None:
            raise NotifyError("queue unreachable")

    sent: list[ChainFailureNotice] = []

    class Good:
        def notify(self, notice: ChainFailureNotice) -> None:
            sent.append(notice)

    assert isinstance(Broken(), FailureNotifier)
    with caplog.at_level(logging.ERROR, logger="recurse_lambda"):
        assert send_notice(Broken(), notice()) is False
    assert "queue unreachable" in caplog.text and "s3-bucket-key-etag" in caplog.text
    assert send_notice(None, notice()) is False
    assert send_notice(Good(), notice()) is True
    assert sent == [notice()]
    assert issubclass(NotifyError, RecurseLambdaError)


# ---------------------------------------------------------------------------------------------- on moto


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="failures")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        yield {
            "sqs": sqs,
            "sns": boto3.client("sns", region_name=REGION),
            "events": boto3.client("events", region_name=REGION),
            "queue_url": url,
            "queue_arn": arn,
        }


def receive(aws: dict[str, Any], url: str | None = None) -> list[dict[str, Any]]:
    out = aws["sqs"].receive_message(
        QueueUrl=url or aws["queue_url"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    return list(out.get("Messages", []))


def test_sqs_notifier_sends_the_notice_json_with_attributes(aws: dict[str, Any]):
    SqsNotifier(aws["queue_url"], lambda: aws["sqs"]).notify(notice())
    [message] = receive(aws)
    assert json.loads(message["Body"]) == notice().to_dict()
    attrs = message["MessageAttributes"]
    assert attrs["chain_id"]["StringValue"] == "s3-bucket-key-etag"
    assert attrs["hop"] == {"DataType": "Number", "StringValue": "4"}
    assert attrs["notice_type"]["StringValue"] == "recurse-lambda.chain-failed"
    assert SECRET not in message["Body"]


def test_sqs_notifier_includes_the_state_when_built_to(aws: dict[str, Any]):
    SqsNotifier(aws["queue_url"], lambda: aws["sqs"], include_state=True).notify(notice())
    [message] = receive(aws)
    assert json.loads(message["Body"])["last_state"] == {"offset": 1024, "token": SECRET}


def test_sqs_notifier_creates_its_client_lazily(aws: dict[str, Any]):
    notifier = SqsNotifier(aws["queue_url"])  # no getter: a boto3 client on first use (inside moto here)
    notifier.notify(notice())
    notifier.notify(notice(hop=5))
    assert [json.loads(m["Body"])["hop"] for m in receive(aws)] == [4, 5]


def test_sqs_fifo_queues_group_by_chain_and_deduplicate_per_hop(aws: dict[str, Any]):
    url = aws["sqs"].create_queue(QueueName="failures.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    notifier = SqsNotifier(url, lambda: aws["sqs"])
    notifier.notify(notice())
    notifier.notify(notice())  # the same failure notified twice (a retried invocation): delivered once
    notifier.notify(notice(hop=9))
    messages = receive(aws, url)
    assert [json.loads(m["Body"])["hop"] for m in messages] == [4, 9]


def test_sqs_errors_become_notify_errors(aws: dict[str, Any]):
    notifier = SqsNotifier(aws["queue_url"] + "-missing", lambda: aws["sqs"])
    with pytest.raises(NotifyError, match="NonExistentQueue") as info:
        notifier.notify(notice())
    assert info.value.__cause__ is not None
    assert "s3-bucket-key-etag" in str(info.value)


def test_sns_notifier_publishes_the_notice_with_subject_and_attributes(aws: dict[str, Any]):
    topic = aws["sns"].create_topic(Name="failures")["TopicArn"]
    aws["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=aws["queue_arn"])
    SnsNotifier(topic, lambda: aws["sns"]).notify(notice())
    [message] = receive(aws)
    envelope = json.loads(message["Body"])  # SNS's own JSON around the message
    assert json.loads(envelope["Message"]) == notice().to_dict()
    assert envelope["Subject"] == "recurse-lambda: chain s3-bucket-key-etag failed at hop 4"
    assert envelope["MessageAttributes"]["chain_id"]["Value"] == "s3-bucket-key-etag"


def test_sns_subject_is_printable_ascii_and_short():
    subject = SnsNotifier.subject(notice(chain_id="ü\n" + "x" * 200))
    assert len(subject) <= 100
    assert subject.isascii() and subject.isprintable()


def test_sns_errors_become_notify_errors(aws: dict[str, Any]):
    notifier = SnsNotifier("arn:aws:sns:us-east-1:123456789012:missing", lambda: aws["sns"])
    with pytest.raises(NotifyError, match="NotFound"):
        notifier.notify(notice())


def test_eventbridge_notifier_puts_the_notice_as_detail(aws: dict[str, Any]):
    events = aws["events"]
    events.put_rule(Name="failed-chains", EventPattern=json.dumps({"source": ["recurse-lambda"]}))
    events.put_targets(Rule="failed-chains", Targets=[{"Id": "q", "Arn": aws["queue_arn"]}])
    EventBridgeNotifier(client=lambda: events).notify(notice())
    [message] = receive(aws)
    event = json.loads(message["Body"])
    assert event["source"] == "recurse-lambda"
    assert event["detail-type"] == "Chain failed"
    assert event["resources"] == [FN]
    assert event["detail"] == notice().to_dict()


def test_eventbridge_errors_and_refused_entries_become_notify_errors(aws: dict[str, Any]):
    with pytest.raises(NotifyError, match="ResourceNotFoundException"):
        EventBridgeNotifier("no-such-bus", client=lambda: aws["events"]).notify(notice())
    # PutEvents answers 200 with a failed entry when it refuses one: that is an error too.
    client = boto3.client("events", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {
                "FailedEntryCount": 1,
                "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try later"}],
            },
        )
        with pytest.raises(NotifyError, match="InternalFailure: try later"):
            EventBridgeNotifier(client=lambda: client).notify(notice())


def test_eventbridge_refuses_an_aws_source():
    with pytest.raises(ConfigurationError, match="reserves sources"):
        EventBridgeNotifier(source="aws.lambda", client=lambda: None)


def test_transport_errors_become_notify_errors(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as s:  # a loopback port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1),
    )
    with pytest.raises(NotifyError, match="EndpointConnectionError"):
        SqsNotifier(f"http://127.0.0.1:{port}/123456789012/q", lambda: client).notify(notice())
