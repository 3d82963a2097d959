"""DynamoDBLedger on moto: the shared ledger contract, plus what only DynamoDB has — the item layout, S3 offload of
large state, the TTL attribute, error mapping, and the number of requests per hop."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Generator, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from pydantic import BaseModel

from recurse_lambda import (
    ChainStatus,
    InMemoryLedger,
    LedgerConflict,
    LostLeaseError,
    RecurseLambdaError,
    Run,
    SystemClock,
    WarmState,
    World,
    after_chunks,
    recursive,
)
from recurse_lambda.aws import DynamoDBLedger, LedgerError
from recurse_lambda.local import FakeContext
from recurse_lambda.testing.ledger_contract import P0, P1, LedgerContract

TABLE = "chains"
BUCKET = "ledger-offload"
DAY = 24 * 3600.0


@pytest.fixture
def aws(moto_s3: Any) -> Iterator[tuple[Any, Any]]:
    """DynamoDB and S3 clients inside moto, with a ledger table and an offload bucket."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    DynamoDBLedger.create_table(ddb, TABLE)
    moto_s3.create_bucket(Bucket=BUCKET)
    yield ddb, moto_s3


def make_ledger(aws: tuple[Any, Any], **options: Any) -> DynamoDBLedger:
    ddb, s3 = aws
    return DynamoDBLedger(TABLE, client=lambda: ddb, s3_client=lambda: s3, **options)


def raw_item(aws: tuple[Any, Any], chain_id: str = "c") -> dict[str, Any]:
    item: dict[str, Any] = aws[0].get_item(TableName=TABLE, Key={"chain_id": {"S": chain_id}})["Item"]
    return item


class TestDynamoDBLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, aws):
        return make_ledger(aws)


# ---------------------------------------------------------------------------------------------- construction


def test_construction_creates_no_client(monkeypatch):
    from recurse_lambda.aws import clients

    cache = clients.ClientCache()
    monkeypatch.setattr(clients, "shared", cache)
    ledger = DynamoDBLedger(TABLE)
    assert cache.created() == [] and repr(ledger) == "DynamoDBLedger('chains')" and ledger.name == TABLE
    with pytest.raises(ValueError):
        DynamoDBLedger(TABLE, retention=0)


def test_the_default_client_is_created_on_first_use_and_reused(aws, monkeypatch):
    from recurse_lambda.aws import clients

    monkeypatch.setattr(clients, "shared", clients.ClientCache())
    ledger = DynamoDBLedger(TABLE)  # region and credentials from the environment, inside moto
    ledger.start("c", progress=P0, event={}, now=1.0)
    client = ledger._client_getter()
    assert ledger.get("c") is not None and ledger._client_getter() is client
    assert clients.shared.created() == ["dynamodb"] and clients.client("dynamodb") is client


def test_create_table_turns_ttl_on_for_expires_at(aws):
    ddb = aws[0]
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "chain_id", "KeyType": "HASH"}]
    ttl = ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_create_table_polls_every_second_until_the_table_is_active(moto_s3, monkeypatch):
    # boto3's table_exists waiter sleeps 20 s between polls by default. moto makes a table ACTIVE at once, so
    # a botocore hook answers the first two DescribeTable calls with CREATING; the waiter's sleeps are recorded
    # (botocore's own time.sleep, not ours) instead of slept.
    import botocore.waiter

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    polls: list[str] = []

    def creating(model: Any, params: Any, **_: Any) -> Any:
        polls.append(model.name)
        if len(polls) <= 2:
            return type("Response", (), {"status_code": 200, "headers": {}})(), {
                "Table": {"TableName": TABLE, "TableStatus": "CREATING"}
            }
        return None

    ddb.meta.events.register("before-call.dynamodb.DescribeTable", creating)
    slept: list[float] = []
    monkeypatch.setattr(botocore.waiter, "time", type("Time", (), {"sleep": staticmethod(slept.append)}))
    DynamoDBLedger.create_table(ddb, TABLE)
    assert polls == ["DescribeTable"] * 3
    assert slept == [1, 1]
    assert ddb.describe_table(TableName=TABLE)["Table"]["TableStatus"] == "ACTIVE"


# ---------------------------------------------------------------------------------------------- the item


def test_the_item_holds_every_field_with_json_text_and_numbers(aws):
    ledger = make_ledger(aws)
    ledger.start("c", progress=P0, event={"e": 1}, now=100.5, function="arn:f:3")
    ledger.claim("c", hop=0, owner="r1", now=101.0, lease_until=200.25)
    item = raw_item(aws)
    assert item["status"] == {"S": "RUNNING"} and item["hop"] == {"N": "0"} and item["attempts"] == {"N": "1"}
    assert item["owner"] == {"S": "r1"} and float(item["lease_until"]["N"]) == 200.25
    assert json.loads(item["progress"]["S"]) == P0 and json.loads(item["event"]["S"]) == {"e": 1}
    assert float(item["started_at"]["N"]) == 100.5 and item["function"] == {"S": "arn:f:3"}
    assert "expires_at" not in item  # a running chain never expires
    ledger.hand_off("c", hop=0, owner="r1", progress=P1, now=102.0)
    item = raw_item(aws)
    assert "owner" not in item and item["handed_off_by"] == {"S": "r1"} and item["hop"] == {"N": "1"}
    assert json.loads(item["progress"]["S"]) == P1  # the hand-off commits the cursor itself
    assert item["attempts"] == {"N": "0"} and float(item["lease_until"]["N"]) == 0.0


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (lambda lg, now: lg.finish("c", hop=0, owner="r1", progress=P1, result=7, now=now), "SUCCEEDED"),
        (lambda lg, now: lg.fail("c", hop=0, owner="r1", error="boom", now=now), "FAILED"),
        (lambda lg, now: lg.cancel("c", now=now), "CANCELLED"),
    ],
)
def test_a_terminal_transition_sets_the_ttl_attribute_to_now_plus_retention(aws, end, status):
    ledger = make_ledger(aws, retention=2 * DAY)
    ledger.start("c", progress=P0, event={}, now=1_767_225_600.0)
    ledger.claim("c", hop=0, owner="r1", now=1_767_225_601.0, lease_until=1_767_225_700.0)
    record = end(ledger, 1_767_225_602.5)
    item = raw_item(aws)
    assert item["status"] == {"S": status}
    # TTL wants whole epoch seconds in a Number: rounded up, so the retention is never shorter than asked.
    assert item["expires_at"] == {"N": str(1_767_225_603 + 2 * 86_400)}
    assert record.expires_at == 1_767_225_603 + 2 * DAY


def test_resume_removes_the_ttl_so_a_resumed_chain_is_not_deleted_while_it_runs(aws):
    ledger = make_ledger(aws)
    ledger.start("c", progress=P0, event={}, now=100.0)
    ledger.fail("c", hop=0, owner=None, error="boom", now=101.0)
    assert "expires_at" in raw_item(aws)
    record = ledger.resume("c", now=102.0)
    item = raw_item(aws)
    assert "expires_at" not in item and "error" not in item and record.expires_at is None


def test_retention_reuses_the_chain_id_only_after_it_expires(aws):
    ledger = make_ledger(aws, retention=60.0)
    ledger.start("c", progress=P0, event={"run": 1}, now=1000.0)
    ledger.claim("c", hop=0, owner="r1", now=1001.0, lease_until=1100.0)
    ledger.finish("c", hop=0, owner="r1", progress=P1, result={"x": 1}, now=1002.0)
    again, created = ledger.start("c", progress=P0, event={"run": 2}, now=1061.0)
    assert not created and again.result == {"x": 1}  # the second submission learns the result
    fresh, created = ledger.start("c", progress=P0, event={"run": 2}, now=1062.0)
    assert created and fresh.event == {"run": 2} and fresh.result is None and fresh.expires_at is None
    assert "result" not in raw_item(aws) and "expires_at" not in raw_item(aws)


def test_a_running_chain_is_never_replaced_by_start(aws):
    ledger = make_ledger(aws, retention=1.0)
    ledger.start("c", progress=P0, event={}, now=1.0)
    _, created = ledger.start("c", progress=P1, event={}, now=1e9)
    assert not created and ledger.get("c").progress == P0


@pytest.mark.parametrize("kind", ["memory", "dynamodb"])
def test_boundaries_are_inclusive_as_in_the_in_memory_ledger(aws, kind):
    ledger = InMemoryLedger(retention=50.0) if kind == "memory" else make_ledger(aws, retention=50.0)
    ledger.start("c", progress=P0, event={}, now=100.0)
    assert ledger.resume("c", now=1000.0, stall_after=900.0).hop == 1  # idle for exactly stall_after
    ledger.claim("c", hop=1, owner="r1", now=1001.0, lease_until=1100.0)
    assert ledger.resume("c", now=1100.0).hop == 2  # the lease ends at now
    ledger.claim("c", hop=2, owner="r2", now=1101.0, lease_until=1200.0)
    assert ledger.fail("c", hop=2, owner="r3", error="x", now=1200.0).status is ChainStatus.FAILED
    _, created = ledger.start("c", progress=P0, event={}, now=1250.0)  # expires_at == now: reusable
    assert created


# ---------------------------------------------------------------------------------------------- S3 offload


def big_progress(size: int) -> dict[str, Any]:
    return {"state": {"blob": "x" * size}, "chunks": 3, "pins": {}}


def test_large_state_goes_to_s3_and_the_item_stays_small(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "ledger/"), offload_threshold=1_000)
    big = big_progress(5_000)
    ledger.start("c/1", progress=P0, event={"k": "v"}, now=1.0)
    ledger.claim("c/1", hop=0, owner="r1", now=2.0, lease_until=100.0)
    record = ledger.checkpoint("c/1", hop=0, owner="r1", progress=big, now=3.0, lease_until=100.0)
    assert record.progress == big
    item = raw_item(aws, "c/1")
    assert len(json.dumps(item)) < 1_000
    pointer = item["progress"]["M"]
    assert pointer["s3_bucket"] == {"S": BUCKET} and int(pointer["bytes"]["N"]) == len(json.dumps(big))
    key = pointer["s3_key"]["S"]
    assert key.startswith("ledger/c%2F1/0/progress-")  # chain / hop / unique name
    assert json.loads(aws[1].get_object(Bucket=BUCKET, Key=key)["Body"].read()) == big
    assert json.loads(item["event"]["S"]) == {"k": "v"}  # small fields stay inline
    # Another container (a fresh ledger, no cache) reads it back from S3.
    assert make_ledger(aws, s3_offload=(BUCKET, "ledger/")).get("c/1").progress == big


def test_every_offloaded_write_gets_a_fresh_key_so_a_refused_write_never_touches_committed_state(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=100)
    ledger.start("c", progress=big_progress(500), event=["e" * 500], now=1.0)
    ledger.claim("c", hop=0, owner="r1", now=2.0, lease_until=100.0)
    committed = raw_item(aws)["progress"]["M"]["s3_key"]["S"]
    with pytest.raises(LostLeaseError):  # same hop, not the owner: the S3 object is written, the item is not
        ledger.checkpoint(
            "c", hop=0, owner="stranger", progress=big_progress(600), now=3.0, lease_until=100.0
        )
    keys = [o["Key"] for o in aws[1].list_objects_v2(Bucket=BUCKET, Prefix="p/")["Contents"]]
    assert len(keys) == 3 and committed in keys  # progress, event, and the orphan of the refused write
    assert raw_item(aws)["progress"]["M"]["s3_key"]["S"] == committed
    fresh = make_ledger(aws, s3_offload=(BUCKET, "p/"))
    assert fresh.get("c").progress == big_progress(500) and fresh.get("c").event == ["e" * 500]


def test_a_container_does_not_fetch_what_it_wrote_or_already_read(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=100)
    ledger.start("c", progress=P0, event={"e": "v" * 500}, now=1.0)
    s3_calls = []
    aws[1].meta.events.register("before-call.s3.*", lambda model, **kw: s3_calls.append(model.name))
    ledger.claim("c", hop=0, owner="r1", now=2.0, lease_until=100.0)  # the event: written here at start
    ledger.checkpoint("c", hop=0, owner="r1", progress=big_progress(500), now=3.0, lease_until=100.0)
    ledger.hand_off("c", hop=0, owner="r1", progress=big_progress(600), now=4.0)
    assert s3_calls == ["PutObject", "PutObject"]  # each write's progress, and no read of anything
    other = make_ledger(aws, s3_offload=(BUCKET, "p/"))  # another container reads each object once
    other.claim("c", hop=1, owner="r2", now=5.0, lease_until=100.0)
    other.get("c")
    assert s3_calls[2:] == ["GetObject", "GetObject"]


def test_a_large_result_and_error_are_offloaded_too(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=100)
    for chain in ("a", "b"):
        ledger.start(chain, progress=P0, event={}, now=1.0)
        ledger.claim(chain, hop=0, owner="r", now=2.0, lease_until=100.0)
    ledger.finish("a", hop=0, owner="r", progress=P1, result={"r": "y" * 300}, now=3.0)
    ledger.fail("b", hop=0, owner="r", error="E" * 300, now=3.0)
    assert "M" in raw_item(aws, "a")["result"] and "M" in raw_item(aws, "b")["error"]
    fresh = make_ledger(aws, s3_offload=(BUCKET, "p/"))
    assert fresh.get("a").result == {"r": "y" * 300} and fresh.get("b").error == "E" * 300


def test_state_over_the_item_limit_is_offloaded_whole_even_below_the_threshold(aws):
    # Two fields that each pass the threshold but together exceed 400 KB: the write is refused for its size
    # (nothing written) and made again with this transition's fields in S3.
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=300_000)
    ledger.start("c", progress=big_progress(250_000), event={"e": "v" * 250_000}, now=1.0)
    item = raw_item(aws)
    assert "M" in item["progress"] and "M" in item["event"]
    assert ledger.get("c").event == {"e": "v" * 250_000}


def test_an_update_over_the_item_limit_is_made_again_with_its_fields_offloaded(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=300_000)
    ledger.start("c", progress=P0, event={"e": "v" * 250_000}, now=1.0)  # fits: the event stays inline
    ledger.claim("c", hop=0, owner="r", now=2.0, lease_until=100.0)
    big = big_progress(250_000)
    assert ledger.checkpoint("c", hop=0, owner="r", progress=big, now=3.0, lease_until=100.0).progress == big
    item = raw_item(aws)
    assert "S" in item["event"] and "M" in item["progress"]
    assert make_ledger(aws, s3_offload=(BUCKET, "p/")).get("c").progress == big


def test_without_offload_an_item_over_the_limit_is_a_clear_ledger_error(aws):
    ledger = make_ledger(aws)
    ledger.start("c", progress=P0, event={}, now=1.0)
    ledger.claim("c", hop=0, owner="r", now=2.0, lease_until=100.0)
    with pytest.raises(LedgerError, match="400 KB item limit; configure s3_offload") as info:
        ledger.checkpoint("c", hop=0, owner="r", progress=big_progress(450_000), now=3.0, lease_until=100.0)
    assert info.value.__cause__.response["Error"]["Code"] == "ValidationException"
    assert ledger.get("c").progress == P0


def test_an_offloaded_object_that_is_gone_is_a_ledger_error_naming_it(aws):
    ledger = make_ledger(aws, s3_offload=(BUCKET, "p/"), offload_threshold=10)
    ledger.start("c", progress=big_progress(100), event={}, now=1.0)
    key = raw_item(aws)["progress"]["M"]["s3_key"]["S"]
    aws[1].delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(LedgerError, match=f"s3://{BUCKET}/{key} is gone") as info:
        make_ledger(aws, s3_offload=(BUCKET, "p/")).get("c")
    assert info.value.code == "NoSuchKey"


def test_an_offload_put_that_fails_writes_nothing_to_the_table(aws):
    ledger = make_ledger(aws, s3_offload=("no-such-bucket", "p/"), offload_threshold=10)
    with pytest.raises(LedgerError, match="could not offload the progress") as info:
        ledger.start("c", progress=big_progress(100), event={}, now=1.0)
    assert info.value.code == "NoSuchBucket" and ledger.get("c") is None


# ---------------------------------------------------------------------------------------------- errors


def test_a_refused_condition_carries_the_current_record_without_a_second_read(aws):
    ledger = make_ledger(aws)
    ledger.start("c", progress=P0, event={}, now=1.0)
    ledger.claim("c", hop=0, owner="r1", now=2.0, lease_until=100.0)
    calls = count_calls(aws[0])
    with pytest.raises(LedgerConflict) as info:
        ledger.claim("c", hop=0, owner="r2", now=3.0, lease_until=100.0)
    assert info.value.current.owner == "r1"
    assert info.value.__cause__.response["Error"]["Code"] == "ConditionalCheckFailedException"
    # moto returns the old item with the refusal (ReturnValuesOnConditionCheckFailure=ALL_OLD): no GetItem.
    assert calls == ["UpdateItem"]


def test_a_store_that_does_not_return_the_old_item_falls_back_to_a_consistent_read(aws):
    ddb = aws[0]
    ledger = make_ledger(aws)
    ledger.start("c", progress=P0, event={}, now=1.0)
    ledger.claim("c", hop=0, owner="r1", now=2.0, lease_until=100.0)
    item = raw_item(aws)
    with Stubber(ddb) as stub:
        stub.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        expected = {"TableName": TABLE, "Key": {"chain_id": {"S": "c"}}, "ConsistentRead": True}
        stub.add_response("get_item", {"Item": item}, expected)
        with pytest.raises(LostLeaseError) as info:
            ledger.checkpoint("c", hop=0, owner="r2", progress=P1, now=3.0, lease_until=100.0)
        stub.assert_no_pending_responses()
    assert info.value.current.owner == "r1"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ProvisionedThroughputExceededException", "throttled UpdateItem"),
        ("AccessDeniedException", "not allowed to call dynamodb:UpdateItem"),
        ("InternalServerError", "DynamoDB UpdateItem failed: InternalServerError"),
    ],
)
def test_other_service_errors_become_ledger_errors_from_the_botocore_error(aws, code, message):
    ddb = aws[0]
    ledger = make_ledger(aws)
    with Stubber(ddb) as stub:
        stub.add_client_error("update_item", service_error_code=code, service_message="nope")
        with pytest.raises(LedgerError, match=message) as info:
            ledger.claim("c", hop=0, owner="r", now=1.0, lease_until=2.0)
    assert info.value.code == code and isinstance(info.value, RecurseLambdaError)
    assert not isinstance(info.value, LedgerConflict)
    assert info.value.__cause__ is not None


def test_a_missing_table_says_so(aws):
    ledger = DynamoDBLedger("nope", client=lambda: aws[0])
    with pytest.raises(LedgerError, match="table 'nope' does not exist") as info:
        ledger.get("c")
    assert info.value.code == "ResourceNotFoundException"


def test_a_transport_error_becomes_a_ledger_error(aws):
    no_retries = Config(retries={"total_max_attempts": 1})
    client = boto3.client("dynamodb", region_name="us-east-1", config=no_retries)

    def refuse(**kwargs: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.example")

    client.meta.events.register("before-send.dynamodb.GetItem", refuse)
    with pytest.raises(LedgerError, match="Could not connect") as info:
        DynamoDBLedger(TABLE, client=lambda: client).get("c")
    assert isinstance(info.value.__cause__, EndpointConnectionError)


def test_an_item_that_is_not_a_chain_record_is_a_ledger_error(aws):
    aws[0].put_item(TableName=TABLE, Item={"chain_id": {"S": "odd"}, "status": {"S": "WEIRD"}})
    with pytest.raises(LedgerError, match="not a chain record"):
        make_ledger(aws).get("odd")


def test_list_pages_through_the_scan(aws):
    ledger = make_ledger(aws)
    for i in range(30):
        ledger.start(f"c{i:02}", progress={"pad": "p" * 40_000}, event={}, now=float(i))
    calls = count_calls(aws[0])
    chains = ledger.list(limit=100)
    assert [r.chain_id for r in chains] == [f"c{i:02}" for i in reversed(range(30))]
    assert calls.count("Scan") > 1  # moto pages at 1 MB, as DynamoDB does
    assert ledger.list(limit=0) == []


# ---------------------------------------------------------------------------------------------- requests per hop


def count_calls(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **kwargs: calls.append(model.name), unique_id="count"
    )
    return calls


class Steps(BaseModel):
    i: int = 0


class Recorder:
    """A fake Invoker: keeps the payloads, which the test feeds to the next hop."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def invoke_async(self, function: str, payload: bytes) -> None:
        self.payloads.append(payload)


def drive(ledger: DynamoDBLedger, *, n: int, per_hop: int, every: int | None) -> list[Counter[str]]:
    """Run a chain hop by hop, directly through ``handle``; returns the DynamoDB calls each hop made."""

    @recursive(state=Steps, ledger=ledger, policy=after_chunks(per_hop), checkpoint_every_chunks=every)
    def handler(event: Any, state: Steps, run: Run) -> Generator[None, None, int]:
        while state.i < n:
            state.i += 1
            yield
        return state.i

    calls = count_calls(ledger._client_getter())
    invoker = Recorder()
    world = World(clock=SystemClock(), invoker=invoker, warm=WarmState(), ledger=ledger)
    clock, event, hops = SystemClock(), {"job": 1}, []
    for hop in range(100):
        ctx = FakeContext(clock=clock, deadline=clock.now() + 900.0, aws_request_id=f"req-{hop}")
        out = handler.handle(event, ctx, world)
        hops.append(Counter(calls))
        calls.clear()
        if out["outcome"] != "handed_off":
            assert (out["outcome"], out["status"]) == ("succeeded", "SUCCEEDED")
            return hops
        event = json.loads(invoker.payloads[-1])
    raise AssertionError("the chain did not finish")


def test_the_normal_path_makes_at_most_three_requests_per_hop(aws):
    hops = drive(make_ledger(aws), n=10, per_hop=3, every=None)
    assert len(hops) == 4  # 3 + 3 + 3 + 1 chunks
    assert hops[0] == {"PutItem": 1, "UpdateItem": 2}  # start, claim, hand_off
    assert all(h == {"UpdateItem": 2} for h in hops[1:])  # claim, then hand_off (or finish on the last)
    assert max(sum(h.values()) for h in hops) <= 3


def test_each_in_hop_checkpoint_adds_one_request(aws):
    hops = drive(make_ledger(aws), n=11, per_hop=6, every=2)
    # A checkpoint after every second chunk, but none at the hand-off point: 2 in each hop.
    assert [sum(h.values()) for h in hops] == [3 + 2, 2 + 2]
    assert all(set(h) <= {"PutItem", "UpdateItem"} for h in hops)
