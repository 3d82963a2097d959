"""The deployment template (examples/template.yaml): cfn-lint passes, and the settings the chains depend on hold.

The structural checks read the template as written (cfn-lint's own YAML loader, which accepts !Ref, !Sub and
!GetAtt), not a rendering of it. Each check is a function that raises AssertionError, and each is also run
against a copy of the template with one regression introduced (a ``*`` invoke resource, RecursiveLoop dropped,
TTL dropped, a retry count that disagrees with ``max_attempts``...), so a check that stops catching its
regression fails here too. docs/deployment.md explains why every setting exists.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import decode

from recurse_lambda.chain.route import is_destination_record

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "template.yaml"

# Lambda retries a failed asynchronous invocation after about one minute, then after about two more.
RETRY_DELAYS = 180

FUNCTION_ARN = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
# A function's own ARN or its qualified ARNs; the name (which may hold ${...} substitutions) has no wildcard.
OWN_ARN = re.compile(r"^" + re.escape(FUNCTION_ARN) + r"(?:[^*?:$]|\$\{[^}*?]+\})+(:\*)?$")
DYNAMODB_ITEM_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
}

Template = dict[str, Any]


def load() -> Template:
    template, errors = decode(str(TEMPLATE))
    assert not errors, errors
    assert template is not None
    plain: Template = json.loads(json.dumps(template))  # cfn-lint's node classes, as plain dicts and strings
    return plain


@pytest.fixture(scope="module")
def template() -> Template:
    return load()


# -- reading the template -------------------------------------------------------------------------------------


def text(value: Any) -> str:
    """A property as one comparable string: ``!Sub "a-${B}"`` → ``a-${B}``, ``!Ref X`` → ``${X}``,
    ``!GetAtt X.Arn`` → ``${X.Arn}``; a plain string stays itself."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), *_ = value.items()
        if fn == "Fn::Sub":
            return str(arg if isinstance(arg, str) else arg[0])
        if fn == "Ref":
            return "${" + arg + "}"
        if fn == "Fn::GetAtt":
            return "${" + (arg if isinstance(arg, str) else ".".join(arg)) + "}"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def chain_functions(t: Template) -> dict[str, dict[str, Any]]:
    """The SAM functions (the chains), each with its properties merged over Globals.Function."""
    defaults = t.get("Globals", {}).get("Function", {})
    return {
        name: {**defaults, **res.get("Properties", {})}
        for name, res in t["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }


def resources_of(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in t["Resources"].items() if res["Type"] == kind}


def statements(t: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement in the template, with the resource that holds it."""
    for name, res in t["Resources"].items():
        props = res.get("Properties", {})
        docs: list[Any] = []
        if res["Type"] == "AWS::Serverless::Function":
            docs = [p for p in as_list(props.get("Policies", [])) if isinstance(p, dict) and "Statement" in p]
        elif res["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs = [props["PolicyDocument"]]
        for doc in docs:
            for statement in as_list(doc["Statement"]):
                yield name, statement


def function_statements(t: Template, function: str) -> list[dict[str, Any]]:
    return [s for name, s in statements(t) if name == function]


def grants(statement: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement's actions (wildcards included) cover ``action``."""
    assert "NotAction" not in statement, f"NotAction grants everything else: {statement}"
    return statement.get("Effect") == "Allow" and any(
        fnmatch.fnmatchcase(action.lower(), str(a).lower()) for a in as_list(statement.get("Action", []))
    )


def resource_texts(statement: dict[str, Any]) -> set[str]:
    assert "NotResource" not in statement, f"NotResource grants everything else: {statement}"
    return {text(r) for r in as_list(statement["Resource"])}


def env(t: Template, function: str) -> dict[str, Any]:
    variables: dict[str, Any] = chain_functions(t)[function].get("Environment", {}).get("Variables", {})
    return variables


def max_attempts_of(handler: str) -> int:
    """``max_attempts`` of the decorated handler a function runs (``line_count.handler`` in examples/)."""
    module, _, attribute = handler.rpartition(".")
    fn = getattr(importlib.import_module(f"examples.{module}"), attribute)
    attempts: int = fn.config.max_attempts
    return attempts


# -- the checks -----------------------------------------------------------------------------------------------


def check_recursive_loop(t: Template) -> None:
    """Lambda stops a self-invoking function after about 16 invocations unless RecursiveLoop is Allow."""
    functions = chain_functions(t)
    assert functions, "the template deploys no chain function"
    for name, props in functions.items():
        assert props.get("RecursiveLoop") == "Allow", f"{name}: RecursiveLoop must be Allow"


def check_self_invoke(t: Template) -> None:
    """Invoke permission only on a function's own ARN and its qualified ARNs: no ``*``, no other function."""
    for holder, statement in statements(t):
        if grants(statement, "lambda:InvokeFunction"):
            for resource in resource_texts(statement):
                assert OWN_ARN.match(resource), f"{holder}: invoke granted on {resource!r}"
    for name, props in chain_functions(t).items():
        function_name = text(props.get("FunctionName"))
        assert "FunctionName" in props and "${" + name not in function_name, (
            f"{name}: an explicit FunctionName (not derived from the function itself) keeps the self-invoke "
            "permission free of a circular dependency"
        )
        own = {FUNCTION_ARN + function_name, FUNCTION_ARN + function_name + ":*"}
        granted = set().union(
            *(resource_texts(s) for s in function_statements(t, name) if grants(s, "lambda:InvokeFunction"))
        )
        assert granted == own, (
            f"{name}: invoke must be granted on exactly {sorted(own)}, not {sorted(granted)}"
        )


def check_ledger_table(t: Template) -> None:
    """One item per chain keyed by chain_id (String), on demand, with TTL on expires_at."""
    tables = resources_of(t, "AWS::DynamoDB::Table")
    assert len(tables) == 1, f"expected one ledger table, found {sorted(tables)}"
    (name, table), *_ = tables.items()
    props = table["Properties"]
    assert props.get("BillingMode") == "PAY_PER_REQUEST"
    assert props.get("KeySchema") == [{"AttributeName": "chain_id", "KeyType": "HASH"}]
    assert {"AttributeName": "chain_id", "AttributeType": "S"} in props.get("AttributeDefinitions", [])
    ttl = props.get("TimeToLiveSpecification", {})
    assert ttl.get("Enabled") is True and ttl.get("AttributeName") == "expires_at", (
        f"{name}: TTL must be enabled on expires_at, or finished chains are never deleted"
    )
    for function in chain_functions(t):
        assert env(t, function).get("RECURSE_LAMBDA_TABLE") == {"Ref": name}, function


def check_retries(t: Template) -> None:
    """Lambda's retries agree with max_attempts, every attempt fits in the event age, failures reach a queue."""
    queues = resources_of(t, "AWS::SQS::Queue")
    for name, props in chain_functions(t).items():
        attempts = max_attempts_of(props["Handler"])
        config = props.get("EventInvokeConfig", {})
        retries = config.get("MaximumRetryAttempts")
        assert retries == attempts - 1, (
            f"{name}: MaximumRetryAttempts is {retries}, but the handler's max_attempts is {attempts}: "
            "they must satisfy MaximumRetryAttempts = max_attempts - 1"
        )
        age = config.get("MaximumEventAgeInSeconds", 0)
        needed = attempts * props["Timeout"] + RETRY_DELAYS
        assert age >= needed, (
            f"{name}: MaximumEventAgeInSeconds {age} < {needed}: the last attempt never runs"
        )
        on_failure = config.get("DestinationConfig", {}).get("OnFailure", {})
        destination = text(on_failure.get("Destination"))
        assert on_failure.get("Type") == "SQS" and destination.endswith(".Arn}"), (
            f"{name}: the on-failure destination must be an SQS queue of this template"
        )
        assert destination[2:-5] in queues, f"{name}: {destination} is not a queue of this template"
        assert "AutoPublishAlias" not in props, (
            f"{name}: with AutoPublishAlias, SAM puts the event invoke config on the alias, but the hops after "
            "the first invoke the version: give every published version its own EventInvokeConfig"
        )


_OUTPUT = {
    "s3:PutObject": {"${OutputBucket.Arn}/*"},
    "s3:GetObject": {"${OutputBucket.Arn}/*"},
    "s3:ListBucket": {"${OutputBucket.Arn}"},
    "s3:DeleteObject": {"${OutputBucket.Arn}/_recurse_lambda/writer/*"},
}
OUTPUT_WRITERS: dict[str, dict[str, set[str]]] = {
    "ProjectJsonlFunction": _OUTPUT,
    "ManifestFunction": _OUTPUT,
}


def check_s3_access(t: Template) -> None:
    """S3 read on the input bucket, read and write on the spill prefix, listing of those two buckets, no more."""
    input_bucket = "arn:${AWS::Partition}:s3:::${InputBucketName}"
    for name in chain_functions(t):
        spill_bucket = text(env(t, name)["RECURSE_LAMBDA_SPILL_BUCKET"])[2:-1]
        spill_prefix = text(env(t, name)["RECURSE_LAMBDA_SPILL_PREFIX"])
        spill_objects = "${" + spill_bucket + ".Arn}/" + spill_prefix + "*"
        allowed = {
            "s3:GetObject": {input_bucket + "/*", spill_objects},
            "s3:GetObjectVersion": {input_bucket + "/*"},
            "s3:PutObject": {spill_objects},
            "s3:ListBucket": {input_bucket, "${" + spill_bucket + ".Arn}"},
        }
        outputs = OUTPUT_WRITERS.get(name, {})  # the writers' output bucket (tests/test_writer_template.py)
        for action, resources in outputs.items():
            allowed[action] = allowed.get(action, set()) | resources
        for statement in function_statements(t, name):
            for action in (
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:ListBucket",
                "s3:PutBucketPolicy",
            ):
                if grants(statement, action):
                    extra = resource_texts(statement) - allowed.get(action, set())
                    assert not extra, f"{name}: {action} granted on {sorted(extra)}"
        granted_puts = set().union(
            *(resource_texts(s) for s in function_statements(t, name) if grants(s, "s3:PutObject"))
        )
        expected_puts = {spill_objects} | outputs.get("s3:PutObject", set())
        assert granted_puts == expected_puts, f"{name}: the spill prefix must be writable: {granted_puts}"


def check_dynamodb_access(t: Template) -> None:
    """Item-level actions, on the ledger table only."""
    (table, *_) = resources_of(t, "AWS::DynamoDB::Table")
    for name in chain_functions(t):
        used = [
            s
            for s in function_statements(t, name)
            if any(str(a).lower().startswith(("dynamodb:", "*")) for a in as_list(s.get("Action", [])))
        ]
        assert used, f"{name}: no access to the ledger table"
        for statement in used:
            actions = set(as_list(statement["Action"]))
            assert actions <= DYNAMODB_ITEM_ACTIONS, f"{name}: {sorted(actions - DYNAMODB_ITEM_ACTIONS)}"
            assert resource_texts(statement) == {"${" + table + ".Arn}"}, f"{name}: {statement['Resource']}"


def check_runtime_settings(t: Template) -> None:
    """arm64, and the environment the library reads; the signing key comes from Secrets Manager."""
    for name, props in chain_functions(t).items():
        assert props.get("Architectures") == ["arm64"], name
        variables = env(t, name)
        for variable in (
            "RECURSE_LAMBDA_TABLE",
            "RECURSE_LAMBDA_SPILL_BUCKET",
            "RECURSE_LAMBDA_SPILL_PREFIX",
            "RECURSE_LAMBDA_SIGNING_KEY",
        ):
            assert variable in variables, f"{name}: {variable} is not set"
        key = text(variables["RECURSE_LAMBDA_SIGNING_KEY"])
        assert key.startswith("{{resolve:secretsmanager:"), f"{name}: the signing key is {key!r}"


def check_spill_lifecycle(t: Template) -> None:
    """The bucket the functions spill to expires exactly the prefix they spill under."""
    for name in chain_functions(t):
        bucket = text(env(t, name)["RECURSE_LAMBDA_SPILL_BUCKET"])[2:-1]
        prefix = env(t, name)["RECURSE_LAMBDA_SPILL_PREFIX"]
        rules = t["Resources"][bucket]["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        expiring = [
            r
            for r in rules
            if r.get("Status") == "Enabled"
            and r.get("ExpirationInDays")
            and (r.get("Prefix") == prefix or r.get("Filter", {}).get("Prefix") == prefix)
        ]
        assert expiring, f"{bucket}: no enabled lifecycle rule expires {text(prefix)!r}"


def check_outputs(t: Template) -> None:
    values = {text(o["Value"]) for o in t.get("Outputs", {}).values()}
    (table, *_) = resources_of(t, "AWS::DynamoDB::Table")
    wanted = {"${" + f + ".Arn}" for f in chain_functions(t)} | {"${" + table + "}"}
    for props in chain_functions(t).values():
        queue = text(props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"])[2:-5]
        wanted.add("${" + queue + "}")  # Ref of a queue is its URL
    assert wanted <= values, f"missing outputs: {sorted(wanted - values)}"


CHECKS: list[Callable[[Template], None]] = [
    check_recursive_loop,
    check_self_invoke,
    check_ledger_table,
    check_retries,
    check_s3_access,
    check_dynamodb_access,
    check_runtime_settings,
    check_spill_lifecycle,
    check_outputs,
]


# -- the tests ------------------------------------------------------------------------------------------------


def test_cfn_lint_passes() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert not matches, "\n".join(str(m) for m in matches)


def test_the_template_deploys_the_three_examples(template: Template) -> None:
    handlers = {props["Handler"] for props in chain_functions(template).values()}
    assert handlers == {
        "line_count.handler",
        "csv_aggregate.handler",
        "enrich.handler",
        "project_jsonl.handler",
        "manifest.handler",
    }
    for handler in handlers:
        assert (TEMPLATE.parent / f"{handler.split('.')[0]}.py").exists()
        assert max_attempts_of(handler) >= 1


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_the_template_passes(template: Template, check: Callable[[Template], None]) -> None:
    check(template)


def _invoke_statement(t: Template) -> dict[str, Any]:
    return next(s for s in function_statements(t, "LineCountFunction") if s.get("Sid") == "InvokeItself")


def _props(t: Template, name: str = "LineCountFunction") -> dict[str, Any]:
    props: dict[str, Any] = t["Resources"][name]["Properties"]
    return props


def _table(t: Template) -> dict[str, Any]:
    return _props(t, next(iter(resources_of(t, "AWS::DynamoDB::Table"))))


def _set_all_tables(t: Template, key: str, value: Any) -> None:
    _table(t)[key] = value


REGRESSIONS: dict[str, tuple[Callable[[Template], None], Callable[[Template], None]]] = {
    "invoke on *": (lambda t: _invoke_statement(t)["Resource"].append("*"), check_self_invoke),
    "invoke on every function": (
        lambda t: _invoke_statement(t).update(Resource=[{"Fn::Sub": FUNCTION_ARN + "*"}]),
        check_self_invoke,
    ),
    "invoke on another function": (
        lambda t: _invoke_statement(t).update(
            Resource=[{"Fn::Sub": FUNCTION_ARN + "${AWS::StackName}-enrich"}]
        ),
        check_self_invoke,
    ),
    "lambda:* on *": (
        lambda t: _props(t)["Policies"].append(
            {"Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]}
        ),
        check_self_invoke,
    ),
    "no FunctionName": (lambda t: _props(t).pop("FunctionName"), check_self_invoke),
    "RecursiveLoop dropped": (lambda t: _props(t).pop("RecursiveLoop"), check_recursive_loop),
    "RecursiveLoop Terminate": (lambda t: _props(t).update(RecursiveLoop="Terminate"), check_recursive_loop),
    "TTL dropped": (lambda t: _table(t).pop("TimeToLiveSpecification"), check_ledger_table),
    "TTL disabled": (
        lambda t: _table(t)["TimeToLiveSpecification"].update(Enabled=False),
        check_ledger_table,
    ),
    "TTL on another attribute": (
        lambda t: _table(t)["TimeToLiveSpecification"].update(AttributeName="ttl"),
        check_ledger_table,
    ),
    "provisioned ledger": (lambda t: _set_all_tables(t, "BillingMode", "PROVISIONED"), check_ledger_table),
    "MaximumRetryAttempts 1": (
        lambda t: _props(t)["EventInvokeConfig"].update(MaximumRetryAttempts=1),
        check_retries,
    ),
    "MaximumRetryAttempts 0": (
        lambda t: _props(t)["EventInvokeConfig"].update(MaximumRetryAttempts=0),
        check_retries,
    ),
    "MaximumRetryAttempts dropped": (
        lambda t: _props(t)["EventInvokeConfig"].pop("MaximumRetryAttempts"),
        check_retries,
    ),
    "event age too short": (
        lambda t: _props(t)["EventInvokeConfig"].update(MaximumEventAgeInSeconds=900),
        check_retries,
    ),
    "no on-failure destination": (
        lambda t: _props(t)["EventInvokeConfig"].pop("DestinationConfig"),
        check_retries,
    ),
    "AutoPublishAlias": (lambda t: _props(t).update(AutoPublishAlias="live"), check_retries),
    "S3 read on *": (
        lambda t: _props(t)["Policies"].append(
            {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
        check_s3_access,
    ),
    "spill write on the whole bucket": (
        lambda t: next(
            s for s in function_statements(t, "LineCountFunction") if s.get("Sid") == "SpillEnvelopes"
        ).update(Resource={"Fn::Sub": "${SpillBucket.Arn}/*"}),
        check_s3_access,
    ),
    "dynamodb:* on *": (
        lambda t: _props(t)["Policies"].append(
            {"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]}
        ),
        check_dynamodb_access,
    ),
    "x86_64": (lambda t: _props(t).update(Architectures=["x86_64"]), check_runtime_settings),
    "signing key as a plain parameter": (
        lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(
            RECURSE_LAMBDA_SIGNING_KEY={"Ref": "Key"}
        ),
        check_runtime_settings,
    ),
    "no lifecycle rule": (
        lambda t: _props(t, "SpillBucket").pop("LifecycleConfiguration"),
        check_spill_lifecycle,
    ),
    "lifecycle on another prefix": (
        lambda t: _props(t, "SpillBucket")["LifecycleConfiguration"]["Rules"][0].update(Prefix="tmp/"),
        check_spill_lifecycle,
    ),
    "no table output": (lambda t: t["Outputs"].pop("LedgerTableName"), check_outputs),
}


@pytest.mark.parametrize("regression", sorted(REGRESSIONS))
def test_each_check_catches_its_regression(template: Template, regression: str) -> None:
    mutate, check = REGRESSIONS[regression]
    broken = copy.deepcopy(template)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)


# -- the on-failure forwarder's inline code -------------------------------------------------------------------


class FakeLambda:
    """Records invoke calls; answers with a function error for the ARNs in ``failing``."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if kwargs["FunctionName"] in self.failing:
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": io.BytesIO(b'{"errorMessage": "x"}'),
            }
        return {"StatusCode": 200, "Payload": io.BytesIO(b'{"outcome": "failed"}')}


def on_failure_record(function_arn: str) -> dict[str, Any]:
    """An asynchronous invocation's on-failure record, as Lambda sends it to a destination."""
    return {
        "version": "1.0",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "functionArn": function_arn,
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": {"bucket": "logs-bucket", "key": "2026/01/01.log"},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
    }


def test_the_forwarder_hands_each_record_back_to_its_function(template: Template) -> None:
    (forwarder, *_) = (
        name
        for name, res in resources_of(template, "AWS::Lambda::Function").items()
        if "ZipFile" in res["Properties"]["Code"]
    )
    namespace: dict[str, Any] = {}
    exec(compile(_props(template, forwarder)["Code"]["ZipFile"], "forwarder", "exec"), namespace)
    ok = "arn:aws:lambda:eu-west-1:123456789012:function:stack-line-count:$LATEST"
    broken = "arn:aws:lambda:eu-west-1:123456789012:function:stack-enrich:7"
    namespace["LAMBDA"] = fake = FakeLambda(failing={broken})
    event = {
        "Records": [
            {"messageId": "m1", "body": json.dumps(on_failure_record(ok))},
            {"messageId": "m2", "body": json.dumps(on_failure_record(broken))},
            {"messageId": "m3", "body": "not an on-failure record"},
        ]
    }
    answer = namespace["handler"](event, None)
    # m1 is done; m2 (the function failed) and m3 (unreadable) stay in the queue, then go to the DLQ.
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]}
    assert [c["FunctionName"] for c in fake.calls] == [ok, broken]
    assert all(c["InvocationType"] == "RequestResponse" for c in fake.calls)
    forwarded = json.loads(fake.calls[0]["Payload"])
    assert forwarded == on_failure_record(ok) and is_destination_record(
        forwarded
    )  # the runner records FAILED
    mapping = next(iter(resources_of(template, "AWS::Lambda::EventSourceMapping").values()))["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
