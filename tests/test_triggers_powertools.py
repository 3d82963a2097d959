"""Powertools interop: a BatchProcessor record handler that calls start_chain gives the same batch answer as
the handler's own dispatch, and examples/powertools_batch.py runs end to end (fake Lambda API, moto S3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recurse_lambda import ENVELOPE_KEY, WarmState
from recurse_lambda.core.clock import SystemClock
from recurse_lambda.local import FakeContext
from recurse_lambda.triggers import record_jobs, start_chain

from .test_triggers import QUEUE, Lambda, failures, kinesis, s3_record, sqs

batch = pytest.importorskip("aws_lambda_powertools.utilities.batch")


def powertools_answer(lam: Lambda, event: dict[str, Any], processor: Any) -> dict[str, Any]:
    def record_handler(record: Any, lambda_context: Any) -> None:
        for job in record_jobs(record.raw_event):
            start_chain(lam.handler, job, lambda_context, world=lam.world)

    answer: dict[str, Any] = batch.process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=lam.context()
    )
    return answer


MIXED_SQS = {
    "Records": [
        sqs("ok", {"n": 2, "job": "a"}),
        sqs("bad", "{"),
        sqs("invoke-fails", {"n": 2, "job": "b", "invoke": "fail"}),
        sqs("ledger-fails", {"n": 2, "job": "c", "ledger": "fail"}),
        sqs("s3", {"Records": [s3_record("inbox", "k+1", "e1")]}),
    ]
}


def test_a_batchprocessor_record_handler_reports_what_the_dispatch_reports(tmp_path: Any) -> None:
    ours, theirs = Lambda(tmp_path), Lambda(tmp_path)
    expected = ["bad", "invoke-fails", "ledger-fails"]
    assert failures(ours.deliver(MIXED_SQS)) == expected
    answer = powertools_answer(theirs, MIXED_SQS, batch.BatchProcessor(event_type=batch.EventType.SQS))
    assert failures(answer) == expected
    assert theirs.invoker.jobs() == ours.invoker.jobs() and len(theirs.invoker.jobs()) == 2
    assert sorted(r.chain_id for r in theirs.ledger.records()) == sorted(
        r.chain_id for r in ours.ledger.records()
    )
    # Delivered again, the started chains are joined (or their unclaimed hop 0 resent), never duplicated.
    powertools_answer(theirs, MIXED_SQS, batch.BatchProcessor(event_type=batch.EventType.SQS))
    assert len(theirs.ledger) == len(ours.ledger) == 3  # a, b (its invoke failed) and the S3 object


def test_a_fifo_processor_that_skips_a_failed_group_matches_the_dispatch(tmp_path: Any) -> None:
    fifo = QUEUE + ".fifo"
    event = {
        "Records": [
            sqs("a1", {"n": 1, "j": "a1"}, group="A", arn=fifo),
            sqs("a2", {"n": 1, "j": "a2", "invoke": "fail"}, group="A", arn=fifo),
            sqs("b1", {"n": 1, "j": "b1"}, group="B", arn=fifo),
            sqs("a3", {"n": 1, "j": "a3"}, group="A", arn=fifo),
        ]
    }
    ours, theirs = Lambda(tmp_path), Lambda(tmp_path)
    answer = powertools_answer(theirs, event, batch.SqsFifoPartialProcessor(skip_group_on_error=True))
    assert failures(answer) == failures(ours.deliver(event)) == ["a2", "a3"]
    assert [j["j"] for j in theirs.invoker.jobs()] == [j["j"] for j in ours.invoker.jobs()] == ["a1", "b1"]


def test_a_kinesis_batchprocessor_reports_sequence_numbers(tmp_path: Any) -> None:
    event = {"Records": [kinesis("1", {"n": 1}), kinesis("2", b"not json"), kinesis("3", {"n": 2})]}
    lam = Lambda(tmp_path)
    answer = powertools_answer(
        lam, event, batch.BatchProcessor(event_type=batch.EventType.KinesisDataStreams)
    )
    assert failures(answer) == ["2"]
    assert lam.invoker.jobs() == [{"n": 1}, {"n": 2}]


# -- examples/powertools_batch.py --------------------------------------------------------------------------


class FakeLambdaAPI:
    """The few Lambda API calls the library makes, answered as Lambda would; invokes are recorded."""

    def __init__(self) -> None:
        self.invokes: list[dict[str, Any]] = []
        self.throttle_keys: set[str] = set()

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        body = json.loads(Payload)
        if body[ENVELOPE_KEY]["event"].get("key") in self.throttle_keys:
            error = {"Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."}}
            raise ClientError(error, "Invoke")
        self.invokes.append({"FunctionName": FunctionName, "InvocationType": InvocationType, "Payload": body})
        return {"StatusCode": 202}

    def get_function_recursion_config(self, *, FunctionName: str) -> dict[str, Any]:
        return {"RecursiveLoop": "Allow"}


def test_the_powertools_example_starts_and_runs_its_chains(
    moto_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples import powertools_batch

    moto_s3.create_bucket(Bucket="inbox")
    moto_s3.put_object(Bucket="inbox", Key="a.txt", Body=b"one\ntwo\nthree\n")
    etag = moto_s3.put_object(Bucket="inbox", Key="b c.txt", Body=b"x\ny")["ETag"].strip('"')
    api = FakeLambdaAPI()
    api.throttle_keys.add("busy.txt")
    clients = {"lambda": api, "s3": moto_s3}
    chain = powertools_batch.chain
    # A fresh container whose clients are the fakes: the example runs in the production (AWS) world.
    monkeypatch.setattr(chain, "warm", WarmState(client_factory=clients.__getitem__))
    monkeypatch.setattr(chain, "_world", None)
    clock = SystemClock()

    def context(request_id: str) -> FakeContext:
        return FakeContext(clock=clock, deadline=clock.now() + 60, aws_request_id=request_id)

    event = {
        "Records": [
            sqs("m1", {"bucket": "inbox", "key": "a.txt"}),
            sqs("m2", {"Records": [s3_record("inbox", "b+c.txt", etag, size=3)]}),  # S3 -> SQS
            sqs("m3", {"bucket": "inbox", "key": "busy.txt"}),  # throttled: retried by SQS
            sqs("m4", "not json"),
        ]
    }
    assert powertools_batch.handler(event, context("r0")) == {
        "batchItemFailures": [{"itemIdentifier": "m3"}, {"itemIdentifier": "m4"}]
    }
    results = []
    for call in api.invokes:
        assert call["InvocationType"] == "Event" and call["FunctionName"].endswith(
            ":function:recurse-lambda-sim"
        )
        answer = powertools_batch.handler(call["Payload"], context(f"hop-{len(results)}"))
        results.append(answer["result"])
    assert results == [{"lines": 3, "bytes": 14}, {"lines": 2, "bytes": 3}]
