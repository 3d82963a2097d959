"""The AWS adapters: Lambda self-invoke (botocore Stubber) and the S3 spill store (moto); the production path."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from recurse_lambda import (
    ENVELOPE_KEY,
    EnvelopeError,
    HandOffError,
    InvokeThrottled,
    SystemClock,
    WarmState,
    recursive,
)
from recurse_lambda.aws import LambdaInvoker, S3SpillStore
from recurse_lambda.local import FakeContext

ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"


def lambda_client():
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_invoke_is_asynchronous_and_checks_the_202():
    client = lambda_client()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202, "Payload": io.BytesIO(b"")},
            {"FunctionName": f"{ARN}:3", "InvocationType": "Event", "Payload": b"{}"},
        )
        LambdaInvoker(lambda: client).invoke_async(f"{ARN}:3", b"{}")
        stub.add_response("invoke", {"StatusCode": 200, "Payload": io.BytesIO(b"")})
        with pytest.raises(HandOffError, match="expected 202"):
            LambdaInvoker(lambda: client).invoke_async(ARN, b"{}")


def test_throttles_carry_retry_after_and_other_errors_become_hand_off_errors():
    client = lambda_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke",
            service_error_code="TooManyRequestsException",
            http_status_code=429,
            modeled_fields={"retryAfterSeconds": "2", "Type": "User", "message": "Rate Exceeded."},
        )
        with pytest.raises(InvokeThrottled) as info:
            LambdaInvoker(lambda: client).invoke_async(ARN, b"{}")
        assert info.value.retry_after == 2.0
        stub.add_client_error("invoke", service_error_code="ResourceNotFoundException", http_status_code=404)
        with pytest.raises(HandOffError, match="ResourceNotFoundException"):
            LambdaInvoker(lambda: client).invoke_async(ARN, b"{}")


def test_the_client_is_created_on_first_use_only():
    made: list[str] = []
    LambdaInvoker(lambda: made.append("lambda"))  # nothing happens at construction
    assert made == []


@mock_aws
def test_spill_store_round_trip_on_s3():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="spill")
    store = S3SpillStore(lambda: s3, "spill", "envs/")
    ref = store.put("c/hop-000001.json", b'{"a": 1}')
    assert ref == {"bucket": "spill", "key": "envs/c/hop-000001.json"}
    assert store.get(ref) == b'{"a": 1}'
    with pytest.raises(EnvelopeError, match="is gone"):  # expired: the chain cannot continue from it
        store.get({"bucket": "spill", "key": "envs/expired.json"})
    with pytest.raises(HandOffError, match="s3://missing/"):
        S3SpillStore(lambda: s3, "missing").put("k", b"x")


def test_the_production_path_invokes_its_own_version_with_a_signed_envelope(monkeypatch):
    monkeypatch.setenv("RECURSE_LAMBDA_SIGNING_KEY", "k3y")
    client = lambda_client()
    sent: list[dict] = []

    def capture(params, **_):
        sent.append(params)

    client.meta.events.register("provide-client-params.lambda.Invoke", capture)

    @recursive
    def handler(event, state, run):
        while True:
            yield

    handler.warm = WarmState(client_factory=lambda service: client)
    clock = SystemClock()
    ctx = FakeContext(clock=clock, deadline=clock.now() + 0.3, aws_request_id="r1", function_version="9")
    with Stubber(client) as stub:
        stub.add_response("invoke", {"StatusCode": 202, "Payload": io.BytesIO(b"")})
        out = handler({"job": 1}, ctx)
    assert out["outcome"] == "handed_off"
    assert sent[0]["FunctionName"].endswith("function:recurse-lambda-sim:9")
    assert sent[0]["InvocationType"] == "Event"
    body = json.loads(sent[0]["Payload"])[ENVELOPE_KEY]
    assert body["hop"] == 1 and body["event"] == {"job": 1} and len(body["sig"]) == 64


def test_the_ledger_comes_from_the_environment_the_template_sets():
    from recurse_lambda.aws import DynamoDBLedger, ledger_from_env

    assert ledger_from_env({}) is None  # no table: stateless mode
    ledger = ledger_from_env(
        {
            "RECURSE_LAMBDA_TABLE": "chains",
            "RECURSE_LAMBDA_SPILL_BUCKET": "spill",
            "RECURSE_LAMBDA_SPILL_PREFIX": "p/",
        }
    )
    assert isinstance(ledger, DynamoDBLedger) and ledger.table == "chains"
    assert ledger.s3_offload == ("spill", "p/ledger/")  # large state under the spill prefix
    assert ledger_from_env({"RECURSE_LAMBDA_TABLE": "chains"}).table == "chains"
