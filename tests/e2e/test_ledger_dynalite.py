"""The ledger contract against dynalite, an independent implementation of DynamoDB's API (npm; LevelDB or memory),
over HTTP. Its gaps: no TTL (UpdateTimeToLive) and no ReturnValuesOnConditionCheckFailure; what depends on them
is skipped with that reason. Needs node and npm (dynalite is installed into a cache directory on first use)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from recurse_lambda.aws import DynamoDBLedger
from recurse_lambda.local.lambda_fixture import Dynalite, MotoDynamoDB, create_ledger_table, dynamodb_client
from recurse_lambda.testing.ledger_contract import LedgerContract

needs_node = pytest.mark.skipif(not Dynalite.available(), reason="dynalite needs node and npm")

LACKS = "dynalite lacks TTL (UpdateTimeToLive) and ReturnValuesOnConditionCheckFailure"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoDynamoDB]:
    server = MotoDynamoDB().start()
    yield server
    server.stop()


class TestMotoServerLedger(LedgerContract):
    """The same contract against moto in server mode (HTTP), the fallback when node is missing."""

    @pytest.fixture
    def ledger(self, moto_server):
        client = dynamodb_client(moto_server.endpoint_url)
        name = f"chains-{uuid.uuid4().hex[:8]}"
        create_ledger_table(client, name, ttl=True)
        return DynamoDBLedger(name, client=lambda: client)


@pytest.fixture(scope="module")
def dynalite() -> Iterator[Dynalite]:
    with Dynalite() as server:
        yield server


@pytest.fixture
def dynalite_client(dynalite: Dynalite) -> Any:
    return dynamodb_client(dynalite.endpoint_url)


@needs_node
class TestDynaliteLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, dynalite_client):
        name = f"chains-{uuid.uuid4().hex[:8]}"
        create_ledger_table(dynalite_client, name)
        return DynamoDBLedger(name, client=lambda: dynalite_client)


# What dynalite lacks: each test tries the feature and skips, with the reason, when dynalite refuses or ignores it
# (so it runs, and must pass, on a dynalite that gains it).


@needs_node
def test_create_table_turns_ttl_on(dynalite_client):
    from botocore.exceptions import ClientError

    name = f"chains-{uuid.uuid4().hex[:8]}"
    try:
        DynamoDBLedger.create_table(dynalite_client, name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "UnknownOperationException":
            pytest.skip(f"{LACKS}: UpdateTimeToLive is an unknown operation")
        raise
    ttl = dynalite_client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


@needs_node
def test_a_refused_claim_costs_one_request(dynalite_client):
    from recurse_lambda import LedgerConflict
    from recurse_lambda.testing.ledger_contract import P0

    name = f"chains-{uuid.uuid4().hex[:8]}"
    create_ledger_table(dynalite_client, name)
    ledger = DynamoDBLedger(name, client=lambda: dynalite_client)
    ledger.start("c", progress=P0, event={}, now=1.0)
    ledger.claim("c", hop=0, owner="r1", now=2.0, lease_until=100.0)
    calls: list[str] = []
    dynalite_client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    with pytest.raises(LedgerConflict) as info:
        ledger.claim("c", hop=0, owner="r2", now=3.0, lease_until=200.0)
    assert info.value.current is not None and info.value.current.owner == "r1"  # right either way
    if calls == ["UpdateItem", "GetItem"]:
        pytest.skip(f"{LACKS}: the refused write returned no item, so the ledger read it again")
    assert calls == ["UpdateItem"]
