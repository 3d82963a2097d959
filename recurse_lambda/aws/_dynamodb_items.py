"""The DynamoDB ledger's item layout: chain records to and from items, and the S3 offload of large fields.

The item, keyed by ``chain_id`` (S)::

    status S · hop N · owner S (absent when unowned) · lease_until N · attempts N · started_at N · updated_at N
    progress, event, result (JSON text), error (text): S inline, or M {s3_bucket, s3_key, bytes} when offloaded
    handed_off_by S · function S · expires_at N (the TTL attribute; epoch seconds, set when the chain ends)
    joined SS (a sharded job: the padded indexes of its finished shards; absent until the first joins)
    resends N · resent_hop N (resends of hop ``resent_hop`` by on-failure records; absent until the first)

An offloaded field is written to S3 *before* the item, under a fresh key (``prefix/chain/hop/field-uuid.json``):
a write whose condition then fails leaves an orphan for the bucket's lifecycle rule, never a changed object
under a committed pointer. Since objects are never rewritten, a container keeps the ones it wrote or read in a
small cache: a hop's own write, and the chain's event, are not fetched again.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from ..core.ledger import ChainRecord, ChainStatus
from ..errors import LedgerError

Item = dict[str, Any]

_CACHE_ENTRIES = 8
_CACHE_CHARS = 16 * 1024 * 1024


def n(value: float) -> dict[str, str]:
    """A Number attribute value (ints stay ints: the TTL attribute wants whole epoch seconds)."""
    if isinstance(value, int):
        return {"N": str(value)}
    if not math.isfinite(value):
        raise ValueError(f"a ledger timestamp must be finite, not {value!r}")
    return {"N": repr(float(value))}


def s(value: str) -> dict[str, str]:
    """A String attribute value."""
    return {"S": value}


def error_code(exc: Exception) -> str | None:
    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None


class ItemCodec:
    """Builds attribute values for a chain's large fields and reads items back into :class:`ChainRecord` s."""

    def __init__(
        self,
        table: str,
        s3_client: Callable[[], Any],
        s3_offload: tuple[str, str] | None,
        offload_threshold: int,
    ) -> None:
        self.table = table
        self.s3_offload = s3_offload
        self.offload_threshold = offload_threshold
        self._s3 = s3_client
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._cached_chars = 0
        self._lock = threading.Lock()

    def record(self, item: Item) -> ChainRecord:
        try:
            chain_id = item["chain_id"]["S"]
            result = self.text(chain_id, item, "result")
            expires = item.get("expires_at")
            return ChainRecord(
                chain_id=chain_id,
                status=ChainStatus(item["status"]["S"]),
                hop=int(item["hop"]["N"]),
                owner=item["owner"]["S"] if "owner" in item else None,
                lease_until=float(item["lease_until"]["N"]),
                progress=json.loads(self.text(chain_id, item, "progress") or "null"),
                attempts=int(item["attempts"]["N"]),
                event=json.loads(self.text(chain_id, item, "event") or "null"),
                started_at=float(item["started_at"]["N"]),
                updated_at=float(item["updated_at"]["N"]),
                handed_off_by=item["handed_off_by"]["S"] if "handed_off_by" in item else None,
                result=json.loads(result) if result is not None else None,
                error=self.text(chain_id, item, "error"),
                function=item["function"]["S"] if "function" in item else None,
                expires_at=float(expires["N"]) if expires is not None else None,
                joined=tuple(sorted(item["joined"]["SS"])) if "joined" in item else (),
                resends=int(item["resends"]["N"]) if "resends" in item else 0,
                resent_hop=int(item["resent_hop"]["N"]) if "resent_hop" in item else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"the item of chain {item.get('chain_id')} in {self.table!r} is not a chain record "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def pack(self, chain_id: str, hop: int, texts: Mapping[str, str], offload_all: bool = False) -> Item:
        """Attribute values for ``texts``: inline, or written to S3 first and pointed to.

        A field is offloaded when it is larger than the threshold, or when ``offload_all`` (the item would
        exceed DynamoDB's 400 KB otherwise); never without ``s3_offload``.
        """
        packed: Item = {}
        for name, text in texts.items():
            size = len(text.encode())
            if self.s3_offload is None or (size <= self.offload_threshold and not offload_all):
                packed[name] = s(text)
                continue
            bucket, prefix = self.s3_offload
            key = f"{prefix}{quote(chain_id, safe='')}/{hop}/{name}-{uuid.uuid4().hex}.json"
            try:
                self._s3().put_object(
                    Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json"
                )
            except (ClientError, BotoCoreError) as exc:
                raise LedgerError(
                    f"could not offload the {name} of chain {chain_id} to s3://{bucket}/{key}: {exc}",
                    error_code(exc),
                ) from exc
            self._remember((bucket, key), text)
            packed[name] = {"M": {"s3_bucket": s(bucket), "s3_key": s(key), "bytes": n(size)}}
        return packed

    def text(self, chain_id: str, item: Item, name: str) -> str | None:
        """The text of field ``name``: inline, from this container's cache, or fetched from S3."""
        value = item.get(name)
        if value is None:
            return None
        if "S" in value:
            return str(value["S"])
        pointer = value["M"]
        ref = (pointer["s3_bucket"]["S"], pointer["s3_key"]["S"])
        with self._lock:
            text = self._cache.get(ref)
        if text is not None:
            return text
        try:
            body: bytes = self._s3().get_object(Bucket=ref[0], Key=ref[1])["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            gone = " is gone (expired by a lifecycle rule?)" if code in ("NoSuchKey", "404") else ""
            raise LedgerError(
                f"the offloaded {name} of chain {chain_id} at s3://{ref[0]}/{ref[1]}{gone}: {exc}", code
            ) from exc
        text = body.decode()
        self._remember(ref, text)
        return text

    def _remember(self, ref: tuple[str, str], text: str) -> None:
        if len(text) > _CACHE_CHARS:
            return
        with self._lock:
            if ref not in self._cache:
                self._cached_chars += len(text)
            self._cache[ref] = text
            self._cache.move_to_end(ref)
            while len(self._cache) > _CACHE_ENTRIES or self._cached_chars > _CACHE_CHARS:
                _, dropped = self._cache.popitem(last=False)
                self._cached_chars -= len(dropped)
