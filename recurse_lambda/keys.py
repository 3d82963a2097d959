"""Business keys for ``@recursive(chain_id=...)``: the same job submitted twice starts one chain (DESIGN §4).

A key function takes the chain's first event and returns its chain id. With a ledger, a second start under the
same id joins the existing chain instead of forking a new one, until the ledger's retention after the chain's
end expires. A key function that raises makes the first event rejected (it would raise on every retry too),
so the errors here say what the event lacks.

- :func:`s3_object`: bucket + key + ETag of one S3 object, from ``{"bucket", "key"}`` (a HEAD learns the
  ETag) or from an S3 event notification. A new upload of the object (a new ETag) is a new job.
- :func:`from_fields`: a digest of named event fields (dotted paths reach into nested objects).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

from .core.codec import canonical
from .errors import ConfigurationError
from .shards.plan import SHARD_ID_PREFIX

__all__ = ["from_fields", "s3_object"]

KeyFunction = Callable[[Any], str]
ClientOrGetter = Any  # a boto3 S3 client, or a zero-argument callable returning one
EtagLookup = Callable[[str, str], str]  # (bucket, key) -> the object's ETag (quoted or not)

_DIGEST_CHARS = 32  # 128 bits of SHA-256: collisions are out of reach, ids stay short


def _digest(prefix: str, parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]}"


def _describe(event: Any) -> str:
    if isinstance(event, Mapping):
        keys = ", ".join(sorted(map(str, event))[:10]) or "none"
        return f"an object with keys: {keys}"
    return f"a {type(event).__name__}"


# ---------------------------------------------------------------------------------------------- S3 objects


def _etag(value: Any) -> str:
    # HEAD answers '"abc"', an event notification says 'abc': the same object must give the same id.
    return str(value).strip().strip('"')


def _s3_records(event: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    records = event["Records"]
    if not isinstance(records, Sequence) or isinstance(records, str | bytes) or not records:
        raise ConfigurationError("s3_object: the event's 'Records' is empty or not a list")
    objects = []
    for i, record in enumerate(records):
        s3 = record.get("s3") if isinstance(record, Mapping) else None
        if not isinstance(s3, Mapping):
            source = record.get("eventSource", "?") if isinstance(record, Mapping) else "?"
            raise ConfigurationError(
                f"s3_object: Records[{i}] is not an S3 event notification (no 's3' entry; eventSource "
                f"{source!r}); an SQS- or SNS-wrapped notification must be unwrapped first"
            )
        try:
            bucket = str(s3["bucket"]["name"])
            key = unquote_plus(str(s3["object"]["key"]))  # notifications URL-encode the key
            etag = _etag(s3["object"]["eTag"])
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"s3_object: Records[{i}].s3 lacks bucket.name, object.key or object.eTag ({exc!r}); "
                "a delete notification has no ETag and cannot start a chain"
            ) from exc
        objects.append((bucket, key, etag))
    return objects


def _direct(
    event: Mapping[str, Any], client: ClientOrGetter | None, etag_of: EtagLookup | None
) -> tuple[str, str, str]:
    bucket, key = event.get("bucket"), event.get("key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise ConfigurationError(
            "s3_object: the event needs non-empty string fields 'bucket' and 'key' (or is an S3 event "
            f"notification with 'Records'); got {_describe(event)}"
        )
    etag = event.get("etag")
    if etag is None:
        if etag_of is None:  # the default lookup: a HEAD through the AWS layer (which imports botocore)
            from .aws._etag import head_etag

            etag_of = head_etag(client)
        etag = etag_of(bucket, key)
    return bucket, key, _etag(etag)


def s3_object(event: Any, *, client: ClientOrGetter | None = None, etag_of: EtagLookup | None = None) -> str:
    """``"s3-<digest>"`` of the S3 object (bucket, key, ETag) the event names.

    The event is ``{"bucket": ..., "key": ...}`` (optionally ``"etag"``; otherwise ``etag_of(bucket, key)``
    learns it, by default one HEAD request with ``client``: a boto3 S3 client or a function returning one, by
    default the process's client, created on first use) or an S3 event notification
    (``{"Records": [{"s3": ...}]}``; a notification with several records keys on all of them). The same object
    gives the same id in both forms.

    Use it as ``@recursive(chain_id=keys.s3_object, ...)``; to pass a client, wrap it:
    ``chain_id=functools.partial(keys.s3_object, client=my_client)``. It keys on the object alone: when other
    event fields change the job (a column to sum, say), key on them too, or two different jobs share one chain.
    """
    if not isinstance(event, Mapping):
        raise ConfigurationError(f"s3_object: the event must be a JSON object, not {_describe(event)}")
    objects = _s3_records(event) if "Records" in event else [_direct(event, client, etag_of)]
    return _digest("s3", [list(o) for o in objects])


# ---------------------------------------------------------------------------------------------- fields

_MISSING = object()


def _lookup(event: Any, path: str) -> Any:
    value = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def from_fields(*names: str, prefix: str = "key") -> KeyFunction:
    """A key function: ``"<prefix>-<digest>"`` of the named event fields (``"a.b"`` reaches into ``a``).

    Every field must be present and not null; the field names are part of the digest, so two key functions
    over different fields never share ids. ``@recursive(chain_id=keys.from_fields("tenant", "job_id"))``.
    """
    if not names:
        raise ConfigurationError("from_fields needs at least one field name")
    for name in names:
        if not isinstance(name, str) or not name or "" in name.split("."):
            raise ConfigurationError(f"from_fields: {name!r} is not a field name (or a dotted path)")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"from_fields: a field is named twice in {names!r}")
    if not prefix or not isinstance(prefix, str):
        raise ConfigurationError("from_fields: prefix must be a non-empty string")
    if prefix.startswith(SHARD_ID_PREFIX):
        raise ConfigurationError(f"from_fields: prefix {prefix!r} is reserved for shard chain ids")
    fields = tuple(names)

    def key(event: Any) -> str:
        if not isinstance(event, Mapping):
            raise ConfigurationError(
                f"chain key {', '.join(fields)}: the event must be a JSON object, not {_describe(event)}"
            )
        values = {}
        missing = []
        for name in fields:
            value = _lookup(event, name)
            if value is _MISSING or value is None:
                missing.append(name)
            else:
                values[name] = value
        if missing:
            raise ConfigurationError(
                f"chain key {', '.join(fields)}: the event lacks {', '.join(missing)} (missing or null); "
                f"got {_describe(event)}"
            )
        try:
            return _digest(prefix, values)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"chain key {', '.join(fields)}: field values must be JSON: {exc}"
            ) from exc

    key.__name__ = key.__qualname__ = f"from_fields({', '.join(map(repr, fields))})"
    return key


def default(event: Any) -> str:
    """The chain id used when a ledger is configured and ``chain_id=`` is not.

    An S3 event notification (its records carry bucket, key and ETag) is keyed on the objects, as
    :func:`s3_object` does, so the same object version submitted twice starts one chain; anything else is keyed
    on a digest of the whole event, so a duplicate delivery joins the chain it duplicates. Neither sends a
    request.
    """
    if isinstance(event, Mapping) and isinstance(event.get("Records"), list) and event["Records"]:
        try:
            return s3_object(event)
        except ConfigurationError:
            pass  # not (only) S3 records: key on the event itself
    return "ev-" + hashlib.sha256(canonical(event)).hexdigest()[:32]
