"""The recursive-loop guard, on a real botocore Lambda client answered by a Stubber (moto lacks the API)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from recurse_lambda import ConfigurationError
from recurse_lambda.aws._recursion import RecursionGuard
from recurse_lambda.errors import RecursionNotAllowed

ARN = "arn:aws:lambda:us-east-1:123456789012:function:lines"


@pytest.fixture
def client() -> Iterator[tuple[object, Stubber]]:
    c = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


def guard(client: object, warnings: list[str], name: str = ARN) -> RecursionGuard:
    return RecursionGuard(name, lambda: client, warn=warnings.append)


def test_allow_is_asked_once_and_cached(client):
    c, stub = client
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Allow"}, {"FunctionName": ARN})
    warnings: list[str] = []
    g = guard(c, warnings)
    for _ in range(5):
        g.check()  # a second call would find no stubbed response and raise
    assert g.calls == 1
    assert g.setting == "Allow"
    assert warnings == []


def test_terminate_fails_with_an_explanation(client):
    c, stub = client
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Terminate"}, {"FunctionName": ARN})
    with pytest.raises(RecursionNotAllowed) as info:
        guard(c, []).check()
    message = str(info.value)
    assert "16" in message
    assert "put-function-recursion-config --function-name lines --recursive-loop Allow" in message
    assert "RecursiveLoop: Allow" in message
    assert "max_hops" in message
    assert isinstance(info.value, ConfigurationError)  # permanent: the runner fails the chain, no retries


def test_terminate_is_asked_again_so_a_fix_takes_effect_in_a_warm_container(client):
    c, stub = client
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Terminate"})
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Allow"})
    g = guard(c, [])
    with pytest.raises(RecursionNotAllowed):
        g.check()
    g.check()  # the operator ran PutFunctionRecursionConfig in between
    g.check()
    assert g.calls == 2


def test_a_qualified_arn_is_asked_about_the_function(client):
    c, stub = client
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Allow"}, {"FunctionName": ARN})
    guard(c, [], name=ARN + ":42").check()  # the Stubber checks the parameters


def test_access_denied_warns_once_and_skips_for_good(client):
    c, stub = client
    stub.add_client_error(
        "get_function_recursion_config",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: lambda:GetFunctionRecursionConfig",
        http_status_code=403,
    )
    warnings: list[str] = []
    g = guard(c, warnings)
    for _ in range(3):
        g.check()
    assert g.calls == 1
    assert g.setting == "skipped"
    [warning] = warnings
    assert "AccessDeniedException" in warning and "skipped" in warning
    assert "lambda:GetFunctionRecursionConfig" in warning


def test_a_transient_error_warns_once_and_asks_again_later(client):
    c, stub = client
    stub.add_client_error("get_function_recursion_config", service_error_code="TooManyRequestsException")
    stub.add_client_error("get_function_recursion_config", service_error_code="ServiceException")
    stub.add_response("get_function_recursion_config", {"RecursiveLoop": "Allow"})
    warnings: list[str] = []
    g = guard(c, warnings)
    g.check()
    g.check()
    g.check()
    g.check()  # cached Allow: no fourth request
    assert g.calls == 3
    assert g.setting == "Allow"
    assert len(warnings) == 1 and "TooManyRequestsException" in warnings[0]


def test_an_unreachable_endpoint_is_skipped_with_one_warning():
    class Unreachable:
        calls = 0

        def get_function_recursion_config(self, **kwargs: object) -> dict[str, str]:
            self.calls += 1
            raise EndpointConnectionError(endpoint_url="https://lambda.us-east-1.amazonaws.com")

    client = Unreachable()
    warnings: list[str] = []
    g = guard(client, warnings)
    g.check()
    g.check()
    assert client.calls == 2  # transient: asked again
    assert len(warnings) == 1 and "EndpointConnectionError" in warnings[0]


def test_a_botocore_without_the_api_is_skipped_with_one_warning():
    warnings: list[str] = []
    g = guard(object(), warnings)
    g.check()
    g.check()
    assert g.setting == "skipped" and g.calls == 0
    assert len(warnings) == 1 and "does not know GetFunctionRecursionConfig" in warnings[0]


def test_the_default_warning_goes_to_the_library_logger(client, caplog: pytest.LogCaptureFixture):
    c, stub = client
    stub.add_client_error("get_function_recursion_config", service_error_code="AccessDeniedException")
    with caplog.at_level("WARNING", logger="recurse_lambda"):
        RecursionGuard(ARN, lambda: c).check()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "RecursiveLoop" in caplog.records[0].getMessage()


def test_the_client_is_created_lazily():
    made: list[int] = []

    def getter() -> object:
        made.append(1)
        return object()

    g = RecursionGuard(ARN, getter, warn=lambda _: None)
    assert made == []
    g.check()
    assert made == [1]


def test_an_answer_without_a_setting_is_skipped_not_taken_for_allow():
    class Empty:
        def get_function_recursion_config(self, **kwargs: object) -> dict[str, str]:
            return {}

    warnings: list[str] = []
    g = guard(Empty(), warnings)
    g.check()
    assert g.setting == "skipped"
    assert len(warnings) == 1 and "named no RecursiveLoop" in warnings[0]
