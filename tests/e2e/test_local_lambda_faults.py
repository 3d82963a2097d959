"""The local Lambda's random faults: ``kills`` (SIGKILL at a random moment before the deadline) and ``throttles``
(429 to an invoke), as ``recurse-lambda emulate --faults kill=P,throttle=P`` uses them."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from recurse_lambda.local.embedded_s3 import isolated_session

SLEEPER = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0)}
"""


def test_a_killed_delivery_is_an_exit_error_before_its_deadline_and_the_worker_comes_back(
    local_lambda, tmp_path
):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    fn = local_lambda("sleeper.handler", tmp_path, timeout=3.0, workers=1, kills=1.0, seed=1)
    result = fn.invoke_sync(json.dumps({"sleep": 10}).encode())
    assert result.error_type == "Runtime.ExitError" and b"injected" in result.body
    assert result.duration < 3.0  # killed before the deadline, not timed out
    fn.kills = 0.0
    assert fn.invoke_sync(b'{"sleep": 0}').ok  # a fresh process took the killed one's place
    assert fn.worker_restarts == 1


def test_throttles_answer_429(local_lambda, tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    fn = local_lambda("sleeper.handler", tmp_path, timeout=3.0, workers=1, throttles=1.0)
    client = isolated_session("testing", "testing").client(
        "lambda", endpoint_url=fn.endpoint_url, config=Config(retries={"max_attempts": 1})
    )
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName=fn.name, InvocationType="Event", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert fn.throttled >= 1 and fn.accepted == 0
