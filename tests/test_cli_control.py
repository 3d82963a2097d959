"""``recurse-lambda status | list | cancel | resume`` against moto in server mode: real HTTP, a real table.

Resume invokes Lambda. moto's Lambda runs functions in Docker, which these machines do not have; with its
``lambda.use_docker`` config set to false (through the server's ``/moto-api/config`` endpoint) it accepts an
``Event`` invoke with 202 and runs nothing, so the test captures the invoke request with a botocore event
hook on boto3's default session (the CLI makes its clients from it) and feeds the payload to a real
``@recursive`` handler, which must continue the chain. The function itself is created in moto (an IAM role
and a zip), and a missing function shows the error path (404 with the default config).
"""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Generator, Iterator
from typing import Any

import boto3
import pytest

from recurse_lambda import InMemoryLedger, Run, WarmState, World, after_chunks, recursive
from recurse_lambda.cli import main
from recurse_lambda.local import FakeContext, VirtualClock
from tests.conftest import Counter, expected

pytest.importorskip("moto.server", reason="the CLI tests need moto[server]")
DynamoDBLedger = pytest.importorskip("recurse_lambda.aws").DynamoDBLedger

REGION = "us-east-1"
SIGNING_KEY = "cli-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.stop()


def moto_config(url: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(config).encode() if config is not None else None
    request = urllib.request.Request(f"{url}/moto-api/config", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    """Dummy credentials, no AWS config files, no table or signing key from the environment."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_REGION", "AWS_PROFILE", "RECURSE_LAMBDA_TABLE", "RECURSE_LAMBDA_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a fresh default session, restored afterwards
    return monkeypatch


@pytest.fixture
def table(server: str, env: pytest.MonkeyPatch) -> str:
    name = f"chains-{uuid.uuid4().hex[:8]}"
    DynamoDBLedger.create_table(client(server, "dynamodb"), name)
    return name


def client(url: str, service: str) -> Any:
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=url)


def ledger_for(url: str, table: str) -> Any:
    ddb = client(url, "dynamodb")
    return DynamoDBLedger(table, client=lambda: ddb)


@pytest.fixture
def function(server: str, env: pytest.MonkeyPatch) -> str:
    """A function in moto; its ARN."""
    name = f"fn-{uuid.uuid4().hex[:8]}"
    iam = client(server, "iam")
    role = iam.create_role(RoleName=f"role-{name}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return event\n")
    created = client(server, "lambda").create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return str(created["FunctionArn"])


@pytest.fixture
def no_docker(server: str) -> Iterator[None]:
    """moto's Lambda without Docker: Event invokes are accepted (202) and nothing runs."""
    before = moto_config(server)
    moto_config(server, {"lambda": {"use_docker": False}})
    try:
        yield
    finally:
        moto_config(server, {"lambda": before.get("lambda", {"use_docker": True})})


class Invokes:
    """Every Lambda Invoke made through boto3's default session: its parameters and the server's answer."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.urls: list[str] = []
        session = boto3._get_default_session()
        session.events.register("provide-client-params.lambda.Invoke", self._params)
        session.events.register("after-call.lambda.Invoke", self._after)

    def _params(self, params: dict[str, Any], **kwargs: Any) -> None:
        self.params.append(dict(params))

    def _after(self, http_response: Any, **kwargs: Any) -> None:
        self.statuses.append(int(http_response.status_code))
        self.urls.append(str(http_response.url))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def at(server: str, table: str, *more: str) -> list[str]:
    return ["--table", table, "--endpoint-url", server, "--region", REGION, *more]


def failed(ledger: Any, chain_id: str, function: str, *, state: Any = None, now: float | None = None) -> None:
    now = time.time() if now is None else now
    progress = {"state": state if state is not None else {"i": 3}, "chunks": 3, "pins": {}}
    ledger.start(chain_id, progress=progress, event={"n": 9}, now=now, function=function)
    ledger.fail(chain_id, hop=0, owner=None, error="ValueError: boom", now=now)


# ------------------------------------------------------------------------------------------------ resume, end to end


class Broken(Exception):
    pass


def test_resume_invokes_the_function_and_the_chain_finishes_from_its_last_commit(
    server, table, function, no_docker, capsys, env, tmp_path
):
    env.setenv("RECURSE_LAMBDA_SIGNING_KEY", SIGNING_KEY)
    clock = VirtualClock()
    ledger = ledger_for(server, table)
    broken, seen = [True], []

    @recursive(state=Counter, ledger=ledger, policy=after_chunks(10), permanent_errors=(Broken,))
    def handler(event: dict[str, Any], state: Counter, run: Run) -> Generator[None, None, dict[str, int]]:
        while state.i < event["n"]:
            if broken[0] and state.i == 15:
                raise Broken("bug at 15")
            seen.append(state.i)
            clock.advance(0.1)
            state.total += state.i * state.i
            state.i += 1
            yield
        return {"i": state.i, "total": state.total}

    sent: list[tuple[str, bytes]] = []

    class Recorder:
        def invoke_async(self, target: str, payload: bytes) -> None:
            sent.append((target, payload))

    world = World(
        clock=clock,
        invoker=Recorder(),
        warm=WarmState(tmp_dir=str(tmp_path)),
        ledger=ledger,
        environ={"RECURSE_LAMBDA_SIGNING_KEY": SIGNING_KEY},
    )
    name = function.rsplit(":", 1)[1]
    count = [0]

    def deliver(event: Any) -> dict[str, Any]:
        count[0] += 1
        ctx = FakeContext(
            clock=clock, deadline=clock.now() + 10, aws_request_id=f"r-{count[0]}", function_name=name
        )
        return handler.handle(event, ctx, world)

    out = deliver({"n": 25})
    chain_id = out["chain_id"]
    while sent:
        out = deliver(json.loads(sent.pop(0)[1]))
    assert out["status"] == "FAILED", out

    invokes = Invokes()
    code, stdout, err = cli(capsys, "resume", chain_id, *at(server, table))
    assert (code, err) == (0, "")
    assert stdout.strip() == f"resumed chain {chain_id} at hop 2: invoked {function}"
    assert invokes.statuses == [202] and invokes.urls[0].startswith(server)
    (params,) = invokes.params
    assert (params["FunctionName"], params["InvocationType"]) == (function, "Event")

    broken[0] = False
    seen.clear()
    out = deliver(json.loads(params["Payload"]))
    while sent:
        out = deliver(json.loads(sent.pop(0)[1]))
    assert out["status"] == "SUCCEEDED" and out["result"] == expected(25)
    assert seen == list(range(10, 25))  # from the hand-off at 10, the last commit before the failure

    code, stdout, _ = cli(capsys, "status", chain_id, "--json", *at(server, table))
    shown = json.loads(stdout)
    assert code == 0 and shown["status"] == "SUCCEEDED" and shown["result"] == expected(25)
    assert shown["hop"] == 3 and "state" not in shown and "event" not in shown


def test_resume_warns_when_it_cannot_sign(server, table, function, no_docker, capsys):
    failed(ledger_for(server, table), "c1", function)
    invokes = Invokes()
    code, stdout, err = cli(capsys, "resume", "c1", "--json", *at(server, table))
    assert code == 0 and "RECURSE_LAMBDA_SIGNING_KEY is not set" in err
    assert json.loads(stdout)["hop"] == 1 and json.loads(stdout)["status"] == "RUNNING"
    assert "sig" not in json.loads(invokes.params[0]["Payload"])["__recurse_lambda__"]


def test_resume_of_a_missing_function_fails_and_stall_after_zero_retries(
    server, table, function, capsys, env
):
    env.setenv("RECURSE_LAMBDA_SIGNING_KEY", SIGNING_KEY)
    ledger = ledger_for(server, table)
    failed(ledger, "c1", function + "-deleted")
    invokes = Invokes()
    code, _, err = cli(capsys, "resume", "c1", *at(server, table))
    assert code == 1 and invokes.statuses == [404]
    assert "moved to hop 1" in err and "ResourceNotFoundException" in err and "--stall-after 0" in err
    assert "stall_after" not in err  # the CLI user is told the flag, not the Python argument
    code, _, err = cli(capsys, "resume", "c1", *at(server, table))
    assert code == 1 and "handed off" in err and "stalled after 900 s" in err
    assert "pass --stall-after 0 if you know the hand-off was lost" in err and "stall_after" not in err
    record = ledger.get("c1")
    assert record.hop == 1 and record.status.value == "RUNNING"
    code, _, err = cli(capsys, "resume", "c1", "--stall-after", "0", *at(server, table))
    assert code == 1 and "moved to hop 2" in err and invokes.statuses == [404, 404]


# ------------------------------------------------------------------------------------------------ status, list, cancel


def test_status_shows_a_summary_and_the_state_only_when_asked(server, table, capsys):
    ledger = ledger_for(server, table)
    failed(ledger, "c1", "arn:aws:lambda:us-east-1:123456789012:function:f", state={"secret": "hunter2"})
    code, stdout, err = cli(capsys, "status", "c1", *at(server, table))
    assert (code, err) == (0, "")
    lines = dict(line.split(None, 1) for line in stdout.splitlines())
    assert lines["chain"] == "c1" and lines["status"] == "FAILED" and lines["hop"] == "0 (attempts 0)"
    assert lines["error"] == "ValueError: boom" and lines["chunks"] == "3"
    assert lines["updated"].endswith("s ago)") and "expires" in lines
    assert "hunter2" not in stdout
    code, stdout, _ = cli(capsys, "status", "c1", "--state", *at(server, table))
    assert code == 0 and '"secret": "hunter2"' in stdout and '"n": 9' in stdout
    code, stdout, _ = cli(capsys, "status", "c1", "--json", *at(server, table))
    assert "hunter2" not in stdout and json.loads(stdout)["error"] == "ValueError: boom"
    code, stdout, _ = cli(capsys, "status", "c1", "--json", "--state", *at(server, table))
    assert json.loads(stdout)["state"] == {"secret": "hunter2"}


def test_a_long_result_is_cut_in_human_output(server, table, capsys):
    ledger = ledger_for(server, table)
    now = time.time()
    ledger.start("c1", progress={"state": {}}, event={}, now=now)
    ledger.claim("c1", hop=0, owner="r", now=now, lease_until=now + 60)
    ledger.finish("c1", hop=0, owner="r", progress={"state": {}}, result={"text": "x" * 1000}, now=now)
    code, stdout, _ = cli(capsys, "status", "c1", *at(server, table))
    result = next(line for line in stdout.splitlines() if line.startswith("result"))
    assert code == 0 and len(result) < 220 and result.endswith("…")
    code, stdout, _ = cli(capsys, "status", "c1", "--json", *at(server, table))
    assert json.loads(stdout)["result"] == {"text": "x" * 1000}


def test_list_filters_and_limits(server, table, capsys):
    ledger = ledger_for(server, table)
    now = time.time()
    for i in range(4):
        ledger.start(f"c{i}", progress={"state": {}}, event={}, now=now + i, function="f")
    ledger.fail("c1", hop=0, owner=None, error="boom", now=now + 10)
    code, stdout, _ = cli(capsys, "list", *at(server, table))
    lines = stdout.splitlines()
    assert code == 0 and lines[0].split() == ["CHAIN", "ID", "STATUS", "HOP", "ATTEMPTS", "UPDATED", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == ["c1", "c3", "c2", "c0"]
    assert lines[1].split()[1] == "FAILED" and lines[1].endswith("boom")
    code, stdout, _ = cli(capsys, "list", "--status", "running", "--limit", "2", "--json", *at(server, table))
    assert code == 0 and [r["chain_id"] for r in json.loads(stdout)] == ["c3", "c2"]
    code, stdout, _ = cli(capsys, "list", "--status", "CANCELLED", *at(server, table))
    assert code == 0 and stdout.strip() == "no CANCELLED chains in the table"


def test_cancel_a_running_chain_then_cancel_again(server, table, capsys):
    ledger = ledger_for(server, table)
    ledger.start("c1", progress={"state": {}}, event={}, now=time.time(), function="f")
    code, stdout, err = cli(capsys, "cancel", "c1", *at(server, table))
    assert (code, err) == (0, "") and stdout.startswith("cancelled chain c1 at hop 0")
    assert ledger.get("c1").status.value == "CANCELLED"
    code, stdout, err = cli(capsys, "cancel", "c1", *at(server, table))
    assert (code, stdout) == (1, "")
    assert (
        err.strip()
        == "recurse-lambda: cannot cancel chain c1: it is CANCELLED; only a RUNNING chain can be cancelled"
    )
    code, _, err = cli(capsys, "resume", "c1", *at(server, table))
    assert code == 1 and "it is CANCELLED; only a FAILED chain" in err


def test_a_refused_resume_does_not_warn_about_signing(server, table, env, capsys):
    # No signing key: the warning is about an envelope sent unsigned, and a refused resume sends none.
    env.delenv("RECURSE_LAMBDA_SIGNING_KEY", raising=False)
    ledger = ledger_for(server, table)
    ledger.start("c1", progress={"state": {}}, event={}, now=time.time(), function="f")
    assert cli(capsys, "cancel", "c1", *at(server, table))[0] == 0
    code, stdout, err = cli(capsys, "resume", "c1", *at(server, table))
    assert (code, stdout) == (1, "")
    assert "it is CANCELLED" in err and "SIGNING_KEY" not in err and "warning" not in err


def test_the_table_may_come_from_the_environment(server, table, env, capsys):
    failed(ledger_for(server, table), "c1", "f")
    env.setenv("RECURSE_LAMBDA_TABLE", table)
    code, stdout, _ = cli(capsys, "status", "c1", "--json", "--endpoint-url", server)
    assert code == 0 and json.loads(stdout)["status"] == "FAILED"


def test_each_service_may_have_its_own_endpoint(server, table, env, capsys):
    failed(ledger_for(server, table), "c1", "f")
    nowhere = "http://127.0.0.1:9"  # nothing listens there: only the per-service flag can reach the ledger
    env.setenv("AWS_MAX_ATTEMPTS", "1")
    argv = ["status", "c1", "--json", "--table", table, "--region", REGION]
    code, stdout, _ = cli(capsys, *argv, "--endpoint-url", nowhere, "--dynamodb-endpoint-url", server)
    assert code == 0 and json.loads(stdout)["status"] == "FAILED"
    code, _, err = cli(capsys, *argv, "--endpoint-url", server, "--dynamodb-endpoint-url", nowhere)
    assert code == 1 and "127.0.0.1:9" in err
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", server)  # boto3's own variable, honoured without a flag
    code, stdout, _ = cli(capsys, *argv)
    assert code == 0 and json.loads(stdout)["status"] == "FAILED"


# ------------------------------------------------------------------------------------------------ error paths


@pytest.mark.parametrize("command", ["status", "cancel", "resume"])
def test_an_unknown_chain_exits_1_naming_it(server, table, capsys, command):
    code, stdout, err = cli(capsys, command, "nope", *at(server, table))
    assert (code, stdout) == (1, "")
    assert "no chain 'nope' in the ledger" in err


def test_a_missing_table_is_a_usage_error(server, env, capsys):
    code, _, err = cli(capsys, "status", "c1", "--endpoint-url", server)
    assert code == 2 and "no ledger table: pass --table NAME or set RECURSE_LAMBDA_TABLE" in err


def test_a_table_that_does_not_exist_exits_1(server, env, capsys):
    code, _, err = cli(capsys, "list", *at(server, "no-such-table"))
    assert code == 1 and "'no-such-table' does not exist" in err


def test_no_region_is_a_usage_error(server, table, env, capsys):
    env.delenv("AWS_DEFAULT_REGION")
    code, _, err = cli(capsys, "status", "c1", "--table", table, "--endpoint-url", server)
    assert code == 2 and "no AWS region" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--status", "DONE"], "unknown chain status 'DONE': expected one of RUNNING"),
        (["list", "--limit", "0"], "must be at least 1"),
        (["resume", "c1", "--stall-after", "-5"], "must be zero or more seconds"),
        (["status"], "the following arguments are required: CHAIN_ID"),
    ],
)
def test_bad_arguments_exit_2(server, table, capsys, argv, message):
    code, _, err = cli(capsys, *argv, *at(server, table))
    assert code == 2 and message in err


def test_the_commands_are_listed_in_help(capsys):
    code, stdout, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("status", "list", "cancel", "resume"):
        assert f"    {command}" in stdout


def test_describe_never_shows_state_without_asking():
    from recurse_lambda.cli.control import describe

    ledger = InMemoryLedger()
    ledger.start("c", progress={"state": {"k": "v-secret"}, "chunks": 2}, event={"e": "e-secret"}, now=100.0)
    record = ledger.claim("c", hop=0, owner="req-9", now=100.0, lease_until=160.0)
    text = "\n".join(describe(record, now=130.0))
    assert "secret" not in text
    assert "owner     req-9, lease until 1970-01-01 00:02:40 UTC (in 30 s)" in text
    shown = "\n".join(describe(record, state=True, now=130.0))
    assert "v-secret" in shown and "e-secret" in shown
