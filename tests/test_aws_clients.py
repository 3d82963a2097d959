"""The one client cache (aws/clients.py), the AWS world's wiring (aws/world.py) and client priming at init."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from moto import mock_aws

from recurse_lambda import InMemoryLedger, WarmState, recursive
from recurse_lambda.aws import DynamoDBLedger, RecursionGuard, S3SpillStore, clients
from recurse_lambda.aws.world import build_world, prime
from recurse_lambda.config import ChainConfig
from recurse_lambda.s3._prefetch import CEILING, concurrency_limit
from recurse_lambda.shards.plan import SourceRef

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Dummy credentials, no AWS files, no endpoint or retry settings, and a fresh process-wide cache."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in os.environ:
        if name.startswith(("AWS_ENDPOINT_URL", "AWS_RETRY", "AWS_MAX_ATTEMPTS", "AWS_LAMBDA_RUNTIME")):
            monkeypatch.delenv(name)
    for name in ("AWS_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE", "RECURSE_LAMBDA_SPILL_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clients, "shared", clients.ClientCache())
    return monkeypatch


# ---------------------------------------------------------------------------------------------- the cache


def test_every_client_gets_the_configuration_and_s3_a_pool_for_the_range_fetcher(env):
    s3, ddb = clients.client("s3"), clients.client("dynamodb")
    for c in (s3, ddb):
        config = c.meta.config
        assert config.retries == {"mode": "standard", "total_max_attempts": 3} and clients.MAX_ATTEMPTS == 3
        assert (config.connect_timeout, config.read_timeout) == (
            clients.CONNECT_TIMEOUT,
            clients.READ_TIMEOUT,
        )
        assert c.meta.region_name == "eu-west-1"
    assert s3.meta.config.max_pool_connections == clients.S3_POOL == 22
    assert ddb.meta.config.max_pool_connections == 10  # botocore's default
    # The adaptive RangeFetcher reads the pool from the client: 16 GETs in flight, one connection spare.
    source = type("Source", (), {"client": s3})()
    assert concurrency_limit(source, 1024) == CEILING == 10


def test_retry_settings_from_the_environment_are_not_hidden(env):
    env.setenv("AWS_RETRY_MODE", "adaptive")
    env.setenv("AWS_MAX_ATTEMPTS", "7")
    assert clients.client("lambda").meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}


def test_one_client_per_service_and_endpoint_reused_across_threads(env):
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(clients.client("s3"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 1 and clients.shared.created() == ["s3"]
    assert clients.client("lambda") is not got[0] and clients.shared.created() == ["s3", "lambda"]


def test_the_endpoint_and_region_come_from_the_environment_as_boto3_reads_them(env):
    default = clients.client("s3")
    env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9002")
    env.setenv("AWS_REGION", "ap-south-1")  # what Lambda sets; it wins over AWS_DEFAULT_REGION
    s3, ddb, lam = clients.client("s3"), clients.client("dynamodb"), clients.client("lambda")
    assert s3 is not default and s3.meta.endpoint_url == "http://127.0.0.1:9001"
    assert ddb.meta.endpoint_url == "http://127.0.0.1:9002"
    assert lam.meta.endpoint_url == "https://lambda.ap-south-1.amazonaws.com"
    assert s3.meta.region_name == "ap-south-1"
    env.delenv("AWS_ENDPOINT_URL_S3")
    env.delenv("AWS_REGION")
    assert clients.client("s3") is default  # back to the first endpoint: its client again


def test_explicit_endpoints_and_region_win(env):
    env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    cache = clients.ClientCache(region="us-west-2", endpoints={"s3": "http://127.0.0.1:9003"})
    assert (
        cache("s3").meta.endpoint_url == "http://127.0.0.1:9003"
        and cache("s3").meta.region_name == "us-west-2"
    )
    assert cache.getter("s3")() is cache("s3") and cache.created() == ["s3"]
    cache.clear()
    assert cache.created() == []


# ---------------------------------------------------------------------------------------------- the world


def test_build_world_wires_spill_listing_and_one_recursion_guard_per_container(env):
    env.setenv("RECURSE_LAMBDA_SPILL_BUCKET", "spill")
    env.setenv("RECURSE_LAMBDA_SPILL_PREFIX", "p/")
    warm = WarmState()
    world = build_world(ChainConfig(), warm)
    assert clients.shared.created() == []  # nothing is made until used
    assert isinstance(world.spill, S3SpillStore) and (world.spill.bucket, world.spill.prefix) == (
        "spill",
        "p/",
    )
    context = type("Ctx", (), {"invoked_function_arn": "arn:aws:lambda:eu-west-1:1:function:f:3"})()
    assert world.recursion_guard is not None
    guard = world.recursion_guard(context)
    assert isinstance(guard, RecursionGuard) and guard.function.endswith("function:f")
    assert world.recursion_guard(context) is guard and warm.recursion_guard is guard
    assert build_world(ChainConfig(check_recursion=False), warm).recursion_guard is None
    env.delenv("RECURSE_LAMBDA_SPILL_BUCKET")
    assert build_world(ChainConfig(spill_bucket="b"), warm).spill.prefix == "p/"  # type: ignore[union-attr]
    assert build_world(ChainConfig(), warm).spill is None
    with mock_aws():
        s3 = clients.client("s3")
        s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for key in ("in/b", "in/a", "out/c"):
            s3.put_object(Bucket="data", Key=key, Body=b"xy")
        assert world.lister is not None
        listed = world.lister(SourceRef("data", prefix="in/"))
        assert [(o.key, o.size) for o in listed] == [("in/a", 2), ("in/b", 2)]


def test_the_handler_builds_its_aws_world_once(env):
    @recursive
    def handler(event, state, run):
        return None

    world = handler.aws_world()
    assert handler.aws_world() is world and world.warm is handler.warm and world.lister is not None


# ---------------------------------------------------------------------------------------------- priming


def test_priming_happens_only_inside_lambda(env):
    ledger = DynamoDBLedger("chains")

    @recursive(ledger=ledger)
    def outside(event, state, run):
        return None

    assert clients.shared.created() == []
    env.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")

    @recursive(ledger=ledger)
    def inside(event, state, run):
        return None

    assert sorted(clients.shared.created()) == ["dynamodb", "lambda", "s3"]
    # The clients primed are those the first hop gets: through WarmState and the ledger's default getter.
    assert inside.warm.client("lambda") is clients.client("lambda")
    assert inside.aws_world().s3_client() is clients.client("s3")  # type: ignore[misc]
    assert prime(ChainConfig(ledger=InMemoryLedger())) == ["lambda", "s3"]


def test_a_failed_priming_only_warns(env, caplog):
    env.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
    env.delenv("AWS_DEFAULT_REGION")  # Lambda's client cannot be made without a region

    @recursive
    def handler(event, state, run):
        return None

    assert "could not create its clients at init" in caplog.text


PROBE = """
import sys
import recurse_lambda
from recurse_lambda import recursive

@recursive
def handler(event, state, run):
    return None

from recurse_lambda.aws import clients
print(json.dumps({"boto3": "boto3" in sys.modules, "created": sorted(clients.shared.created())}))
"""


def _probe(**env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "eu-west-1"})
    code = "import json\n" + PROBE
    # The probe decides whether boto3 was imported before it imports aws.clients itself.
    code = code.replace(
        "from recurse_lambda.aws import clients\n",
        "had = 'boto3' in sys.modules\nfrom recurse_lambda.aws import clients\n",
    ).replace('"boto3": "boto3" in sys.modules', '"boto3": had')
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_outside_lambda_importing_a_handler_imports_no_boto3_and_inside_it_primes():
    assert _probe() == {"boto3": False, "created": []}
    assert _probe(AWS_LAMBDA_RUNTIME_API="127.0.0.1:9") == {"boto3": True, "created": ["lambda", "s3"]}


class _Credentials(BaseHTTPRequestHandler):
    """A container credentials endpoint (what Lambda serves under SnapStart): short-lived keys."""

    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.served.append(self.path)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
        body = json.dumps(
            {
                "AccessKeyId": f"k{len(self.served)}",
                "SecretAccessKey": "s",
                "Token": "t",
                "Expiration": expires,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def credentials_endpoint() -> Iterator[str]:
    _Credentials.served = []
    server = HTTPServer(("127.0.0.1", 0), _Credentials)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/creds"
    finally:
        server.shutdown()
        server.server_close()


def test_what_priming_leaves_survives_a_snapstart_restore(env, credentials_endpoint):
    # SnapStart snapshots the init phase and restores it later, maybe many times. Under SnapStart Lambda gives
    # container credentials (a URI and a token), not keys in the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.delenv(name)
    env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_endpoint)
    env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "token")
    env.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
    import boto3

    env.setattr(boto3, "DEFAULT_SESSION", None)

    @recursive(ledger=DynamoDBLedger("chains"))
    def handler(event, state, run):
        return None

    made = [clients.client(s) for s in ("lambda", "s3", "dynamodb")]
    for c in made:
        # No connection is opened by making a client: nothing in the snapshot to go stale.
        assert len(c._endpoint.http_session._manager.pools) == 0
        # Credentials refresh themselves: after a restore they have expired (here: expire within the
        # refresh window) and the next request fetches new ones from the container endpoint.
        credentials = c._request_signer._credentials
        assert credentials.method == "container-role" and hasattr(credentials, "refresh_needed")
    before = len(_Credentials.served)
    assert made[0]._request_signer._credentials.get_frozen_credentials().access_key != "k1"
    assert len(_Credentials.served) > before


# ---------------------------------------------------------------------------------------------- the CLI


def test_status_imports_no_simulator():
    code = textwrap.dedent(
        """
        import sys
        from recurse_lambda.cli import main
        status = main(["status", "c1", "--table", "t", "--region", "eu-west-1",
                       "--endpoint-url", "http://127.0.0.1:9"])
        print(status, sorted(m for m in sys.modules if m.startswith("recurse_lambda.local")))
        """
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_MAX_ATTEMPTS": "1"})
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "1 []", out.stderr
