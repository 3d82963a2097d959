"""The DynamoDB chain ledger: one item per chain, every transition one conditional write (DESIGN §4).

The conditions are those of the table in :mod:`recurse_lambda.core.transitions`, written as ``ConditionExpression`` s.
A transition asks for ``ReturnValues="ALL_NEW"`` (the new record comes back with the write) and
``ReturnValuesOnConditionCheckFailure="ALL_OLD"`` (a refused write says why without a second read).

The item layout and the S3 offload of large fields are in :mod:`._dynamodb_items`.

Requests per hop on the normal path: ``claim`` + ``hand_off`` (2), plus ``start`` on hop 0 and ``finish`` instead
of ``hand_off`` on the last; plus one per in-hop checkpoint. Offloaded state adds an S3 PUT per write of it; an
S3 GET is needed only by a container that has not seen that object (written or read objects are kept in a small
cache: their keys are unique and never rewritten).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core.ledger import ChainRecord, ChainStatus
from ..errors import LedgerConflict, LedgerError, LostLeaseError
from . import clients
from ._dynamodb_items import Item, ItemCodec
from ._dynamodb_items import n as _n
from ._dynamodb_items import s as _s

__all__ = ["DynamoDBLedger", "LedgerError"]

_RUNNING_AT_HOP = "#status = :running AND #hop = :hop"
_OWNED = f"{_RUNNING_AT_HOP} AND #owner = :owner"
_FREE_OR_EXPIRED = "attribute_not_exists(#owner) OR #lease_until <= :now"
_CLAIMABLE = f"{_RUNNING_AT_HOP} AND ({_FREE_OR_EXPIRED} OR #owner = :owner)"
_TOKENS = re.compile(r"[#:]\w+")
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
_TABLE_WAIT = {"Delay": 1, "MaxAttempts": 300}  # create_table: poll every second, for five minutes at most


class DynamoDBLedger:
    """The production :class:`~recurse_lambda.Ledger`: chain records in a DynamoDB table.

    ``client`` and ``s3_client`` are zero-argument getters (default: boto3 clients created on first use, none
    at construction). ``retention``: seconds a chain's item (and its id) is kept after the chain ends; it is
    written to ``expires_at``, the table's TTL attribute, rounded up to whole seconds. ``s3_offload=(bucket,
    prefix)`` stores a field larger than ``offload_threshold`` bytes (progress, event, result, error) as an S3
    object with a pointer in the item; without it such state must fit DynamoDB's 400 KB item. Give the prefix a
    lifecycle rule longer than the chains' ``max_duration`` plus ``retention``.
    """

    def __init__(
        self,
        table: str,
        *,
        client: Callable[[], Any] | None = None,
        s3_client: Callable[[], Any] | None = None,
        retention: float = 7 * 24 * 3600.0,
        s3_offload: tuple[str, str] | None = None,
        offload_threshold: int = 300_000,
    ) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self.table = table
        self.retention = retention
        self.s3_offload = s3_offload
        self._client_getter = client or clients.getter("dynamodb")
        self._codec = ItemCodec(table, s3_client or clients.getter("s3"), s3_offload, offload_threshold)

    def __repr__(self) -> str:
        return f"DynamoDBLedger({self.table!r})"

    @property
    def name(self) -> str | None:
        """Where the ledger lives, for notices: its table's name."""
        return self.table

    def prime(self) -> None:
        """Create the DynamoDB client now (in Lambda's init phase) rather than at the first request."""
        self._client_getter()

    @staticmethod
    def create_table(client: Any, name: str) -> None:
        """Create a ledger table (on-demand capacity, TTL on ``expires_at``) and wait until it is active.

        The wait polls every second (boto3's default waiter polls every 20 s, while a new on-demand table is
        usually active within seconds), for at most five minutes.
        """
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "chain_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "chain_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig=_TABLE_WAIT)
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

    # ------------------------------------------------------------------ reads

    def get(self, chain_id: str) -> ChainRecord | None:
        response = self._call("GetItem", f"get of chain {chain_id}", Key={"chain_id": _s(chain_id)})
        item = response.get("Item")
        return self._codec.record(item) if item else None

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        """Chains, most recently updated first. A Scan of the whole table: for operations, not a hot path."""
        params: dict[str, Any] = {"ConsistentRead": True}
        if status is not None:
            params.update(
                FilterExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":status": _s(str(status))},
            )
        items: list[Item] = []
        while True:
            page = self._call("Scan", "list of chains", **params)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        items.sort(key=_updated_at, reverse=True)
        # Records are built (and offloaded fields fetched) only for the chains returned.
        return [self._codec.record(item) for item in items[: max(limit, 0)]]

    # ------------------------------------------------------------------ transitions

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        texts = {
            "progress": json.dumps(progress, allow_nan=False),
            "event": json.dumps(event, allow_nan=False),
        }
        item: Item = {
            "chain_id": _s(chain_id),
            "status": _s(ChainStatus.RUNNING.value),
            "hop": _n(0),
            "lease_until": _n(0.0),
            "attempts": _n(0),
            "started_at": _n(now),
            "updated_at": _n(now),
        }
        if function is not None:
            item["function"] = _s(function)
        what = f"start of chain {chain_id}"
        offload_all, attempts = False, 0
        while True:
            attempts += 1
            item.update(self._codec.pack(chain_id, 0, texts, offload_all))
            try:
                self._call(
                    "PutItem",
                    what,
                    Item=item,
                    ConditionExpression="attribute_not_exists(#chain_id) OR #expires_at <= :now",
                    ExpressionAttributeNames={"#chain_id": "chain_id", "#expires_at": "expires_at"},
                    ExpressionAttributeValues={":now": _n(now)},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    _refused=True,
                )
            except _Refused as refused:
                current = self._current(chain_id, refused.item)
                if current is not None:
                    return current, False
                if attempts >= 3:  # pragma: no cover - TTL deleting the same item again and again
                    raise LedgerError(
                        f"{what}: the existing item kept vanishing while being read"
                    ) from refused.error
                continue  # deleted (by TTL) between the write and the read: try again
            except _TooLarge as too_large:
                if offload_all or self.s3_offload is None:
                    raise self._too_large(what) from too_large.error
                offload_all = True
                continue
            # PutItem cannot return the new item; it is exactly what was written.
            return self._codec.record(item), True

    def claim(self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float) -> ChainRecord:
        return self._update(
            chain_id,
            f"claim of hop {hop}",
            condition=_CLAIMABLE,
            values={":hop": _n(hop), ":owner": _s(owner), ":now": _n(now), ":lease": _n(lease_until)},
            update="SET #owner = :owner, #lease_until = :lease, #updated_at = :now, "
            "#attempts = if_not_exists(#attempts, :zero) + :one",
        )

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord:
        return self._update(
            chain_id,
            f"checkpoint of hop {hop}",
            condition=_OWNED,
            values={":hop": _n(hop), ":owner": _s(owner), ":now": _n(now), ":lease": _n(lease_until)},
            update="SET #lease_until = :lease, #updated_at = :now",
            texts={"progress": json.dumps(progress, allow_nan=False)},
            hop=hop,
            fenced=True,
        )

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord:
        return self._update(
            chain_id,
            f"hand-off from hop {hop}",
            condition=_OWNED,
            values={":hop": _n(hop), ":owner": _s(owner), ":now": _n(now), ":next": _n(hop + 1)},
            update="SET #hop = :next, #handed_off_by = :owner, #updated_at = :now, #attempts = :zero, "
            "#lease_until = :zero REMOVE #owner",
            texts={"progress": json.dumps(progress, allow_nan=False)},
            hop=hop + 1,
            fenced=True,
        )

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord:
        return self._update(
            chain_id,
            f"finish of hop {hop}",
            condition=_OWNED,
            values={":hop": _n(hop), ":owner": _s(owner), ":now": _n(now), **self._ending(now, "SUCCEEDED")},
            update="SET #status = :ended, #updated_at = :now, #expires_at = :expires REMOVE #owner",
            texts={
                "progress": json.dumps(progress, allow_nan=False),
                "result": json.dumps(result, allow_nan=False),
            },
            hop=hop,
            fenced=True,
        )

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord:
        values = {":hop": _n(hop), ":now": _n(now), **self._ending(now, "FAILED")}
        if owner is not None:
            values[":owner"] = _s(owner)
        return self._update(
            chain_id,
            f"fail at hop {hop}",
            condition=_CLAIMABLE if owner is not None else f"{_RUNNING_AT_HOP} AND ({_FREE_OR_EXPIRED})",
            values=values,
            update="SET #status = :ended, #updated_at = :now, #expires_at = :expires REMOVE #owner",
            texts={"error": error},
            hop=hop,
        )

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord:
        return self._update(
            chain_id,
            "cancel",
            condition="#status = :running",
            values={":now": _n(now), **self._ending(now, "CANCELLED")},
            update="SET #status = :ended, #updated_at = :now, #expires_at = :expires REMOVE #owner",
        )

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        return self._update(
            chain_id,
            "resume",
            condition="#status = :failed OR (#status = :running AND ("
            "(attribute_not_exists(#owner) AND #updated_at <= :stalled) "
            "OR (attribute_exists(#owner) AND #lease_until <= :now)))",
            values={":failed": _s("FAILED"), ":now": _n(now), ":stalled": _n(now - stall_after)},
            update="SET #status = :running, #hop = #hop + :one, #lease_until = :zero, #attempts = :zero, "
            "#updated_at = :now REMOVE #owner, #handed_off_by, #error, #expires_at",
        )

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        # ADD to a string set is idempotent: a shard delivered twice is counted once.
        return self._update(
            chain_id,
            f"join of {part}",
            condition="#status = :running",
            values={":part": {"SS": [part]}, ":now": _n(now)},
            update="SET #updated_at = :now ADD #joined :part",
        )

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        counted = "#resent_hop = :hop AND #resends = :resends"
        if resends == 0:
            counted = "(attribute_not_exists(#resent_hop) OR #resent_hop <> :hop)"
        return self._update(
            chain_id,
            f"resend of hop {hop}",
            condition=f"{_RUNNING_AT_HOP} AND #updated_at <= :quiet AND #lease_until <= :quiet AND {counted}",
            values={
                ":hop": _n(hop),
                ":resends": _n(resends),
                ":next_resends": _n(resends + 1),
                ":quiet": _n(quiet_since),
                ":now": _n(now),
            },
            update="SET #resends = :next_resends, #resent_hop = :hop, #updated_at = :now",
        )

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        if status not in (ChainStatus.FAILED, ChainStatus.CANCELLED):
            raise ValueError(f"abort ends a chain as FAILED or CANCELLED, not {status}")
        # contains() on a missing set is false: a job that nothing has joined yet can be aborted.
        return self._update(
            chain_id,
            f"abort by {part}",
            condition="#status = :running AND NOT contains(#joined, :part)",
            values={":part": _s(part), ":now": _n(now), **self._ending(now, status.value)},
            update="SET #status = :ended, #updated_at = :now, #expires_at = :expires REMOVE #owner",
            texts={"error": error},
        )

    # ------------------------------------------------------------------ the write path

    def _ending(self, now: float, status: str) -> dict[str, dict[str, str]]:
        return {":ended": _s(status), ":expires": _n(math.ceil(now + self.retention))}

    def _update(
        self,
        chain_id: str,
        what: str,
        *,
        condition: str,
        values: dict[str, dict[str, Any]],
        update: str,
        texts: Mapping[str, str] | None = None,
        hop: int = 0,
        fenced: bool = False,
    ) -> ChainRecord:
        what = f"{what} (chain {chain_id})"
        base = {":running": _s("RUNNING"), ":zero": _n(0), ":one": _n(1), **values}
        for offload_all in (False, True):
            expression, all_values = update, dict(base)
            if texts:
                packed = self._codec.pack(chain_id, hop, texts, offload_all)
                sets = ", ".join(f"#{name} = :{name}" for name in packed)
                expression = update.replace("SET ", f"SET {sets}, ", 1)
                all_values.update({f":{name}": value for name, value in packed.items()})
            used = set(_TOKENS.findall(f"{expression} {condition}"))
            try:
                response = self._call(
                    "UpdateItem",
                    what,
                    Key={"chain_id": _s(chain_id)},
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={t: t[1:] for t in used if t[0] == "#"},
                    ExpressionAttributeValues={t: v for t, v in all_values.items() if t in used},
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    _refused=True,
                )
            except _Refused as refused:
                cls = LostLeaseError if fenced else LedgerConflict
                raise cls(f"{what} refused", self._current(chain_id, refused.item)) from refused.error
            except _TooLarge as too_large:
                if offload_all or self.s3_offload is None or not texts:
                    raise self._too_large(what) from too_large.error
                continue  # nothing was written: write again with every field of this transition offloaded
            return self._codec.record(response["Attributes"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _current(self, chain_id: str, item: Item | None) -> ChainRecord | None:
        # DynamoDB returns the refused item (ALL_OLD); a store that does not gets one strongly consistent read.
        return self._codec.record(item) if item else self.get(chain_id)

    def _too_large(self, what: str) -> LedgerError:
        hint = "" if self.s3_offload else "; configure s3_offload=(bucket, prefix) to keep large state in S3"
        return LedgerError(f"{what}: the chain's item would exceed DynamoDB's 400 KB item limit{hint}")

    def _call(self, operation: str, what: str, *, _refused: bool = False, **params: Any) -> dict[str, Any]:
        method = {"GetItem": "get_item", "PutItem": "put_item", "UpdateItem": "update_item", "Scan": "scan"}
        params["TableName"] = self.table
        if operation == "GetItem":
            params["ConsistentRead"] = True  # reads that decide correctness must see the last write
        try:
            response: dict[str, Any] = getattr(self._client_getter(), method[operation])(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", exc))
            if _refused and code == "ConditionalCheckFailedException":
                raise _Refused(exc, exc.response.get("Item")) from exc
            if code == "ValidationException" and "maximum allowed size" in message:
                raise _TooLarge(exc) from exc
            if code == "ResourceNotFoundException":
                text = f"the ledger table {self.table!r} does not exist (see DynamoDBLedger.create_table)"
            elif code in _THROTTLED:
                text = f"DynamoDB throttled {operation} ({code}) past botocore's retries"
            elif code in ("AccessDeniedException", "UnrecognizedClientException"):
                text = f"not allowed to call dynamodb:{operation} on table {self.table!r} ({code}: {message})"
            else:
                text = f"DynamoDB {operation} failed: {code or 'error'}: {message}"
            raise LedgerError(f"{what}: {text}", code or None) from exc
        except BotoCoreError as exc:
            raise LedgerError(f"{what}: DynamoDB {operation} failed: {exc}") from exc
        return response


class _Refused(Exception):
    """A ConditionalCheckFailedException, with the item it returned (ALL_OLD), if any."""

    def __init__(self, error: ClientError, item: Item | None) -> None:
        self.error = error
        self.item = item


class _TooLarge(Exception):
    """The write would make the item larger than DynamoDB's 400 KB; nothing was written."""

    def __init__(self, error: ClientError) -> None:
        self.error = error


def _updated_at(item: Item) -> float:
    try:
        return float(item["updated_at"]["N"])
    except (KeyError, TypeError, ValueError):
        return 0.0  # not a chain record: sorted last, and reported as such if it is returned
