"""Event-source events, recognised and turned into jobs: one job is the first event of one chain.

Pure parsing: no request is sent, and nothing from boto3 is needed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote_plus

from ..core.codec import is_envelope
from ..errors import TriggerError

# What an S3 source gives the handler, in this order; a job with exactly these fields is keyed on the object.
S3_JOB_FIELDS = ("bucket", "key", "etag", "version_id", "size")
_MAX_NESTING = 3  # SNS in SQS in ... : deep enough for real fan-outs, and no unbounded recursion

# The S3 events that start a chain: patterns (fnmatch, case-sensitive) matched against an S3 notification
# record's ``eventName`` ("ObjectCreated:Put") or an EventBridge event's ``detail-type`` ("Object Created").
# Deletions, lifecycle transitions, restores, tagging and replication events are not new objects to work on,
# though many of them carry an ETag.
DEFAULT_S3_EVENTS = ("ObjectCreated:*", "Object Created")


class Source(StrEnum):
    """Where a trigger event comes from (the records' ``eventSource``, or ``aws.s3`` through EventBridge)."""

    S3 = "aws:s3"
    EVENTBRIDGE_S3 = "aws.s3"
    SNS = "aws:sns"  # spelt EventSource, with a capital E, in SNS's records
    SQS = "aws:sqs"
    KINESIS = "aws:kinesis"
    DYNAMODB = "aws:dynamodb"

    @property
    def batch(self) -> bool:
        """An event source mapping: it reads the answer's ``batchItemFailures`` and retries only those."""
        return self in (Source.SQS, Source.KINESIS, Source.DYNAMODB)


_RECORD_SOURCES = {s.value: s for s in (Source.S3, Source.SNS, Source.SQS, Source.KINESIS, Source.DYNAMODB)}


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One record of a trigger event: its batch identifier, its FIFO message group, and the raw record."""

    index: int
    source: Source
    raw: Mapping[str, Any]
    identifier: str | None = None  # SQS messageId, Kinesis/DynamoDB sequence number, SNS MessageId; or None
    group: str | None = None  # the MessageGroupId of a FIFO queue's message

    def jobs(self, s3_events: Iterable[str] = DEFAULT_S3_EVENTS) -> list[Any]:
        """The jobs this record describes (none for an S3 event not in ``s3_events`` or S3's test event);
        raises TriggerError."""
        return record_jobs(self.raw, s3_events=s3_events)


def is_eventbridge_s3(event: Any) -> bool:
    return (
        isinstance(event, Mapping)
        and event.get("source") == "aws.s3"
        and "detail-type" in event
        and isinstance(event.get("detail"), Mapping)
    )


def trigger_records(event: Any) -> tuple[Source, list[TriggerRecord]] | None:
    """The source and records of a trigger event; ``None`` for anything else (a direct invoke).

    A trigger event is an EventBridge event from ``aws.s3``, or an object whose only key is ``Records``: that is
    what S3, SNS, SQS, Kinesis and DynamoDB streams send, and an event with other keys is the caller's own.
    Raises :class:`TriggerError` for an empty or malformed batch (records of an unknown or of several
    sources), before any record is started.
    """
    if is_eventbridge_s3(event):
        return Source.EVENTBRIDGE_S3, [TriggerRecord(0, Source.EVENTBRIDGE_S3, event)]
    if not isinstance(event, Mapping) or set(event) != {"Records"}:
        return None
    records = event["Records"]
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        raise TriggerError(f"malformed trigger event: 'Records' is a {type(records).__name__}, not a list")
    if not records:
        raise TriggerError("empty trigger event: 'Records' is an empty list, so there is nothing to start")
    sources = []
    for i, record in enumerate(records):
        name = _event_source(record)
        if name not in _RECORD_SOURCES:
            raise TriggerError(
                f"malformed trigger event: Records[{i}] has eventSource {name!r}; known sources are "
                f"{', '.join(sorted(_RECORD_SOURCES))}"
            )
        sources.append(_RECORD_SOURCES[str(name)])
    if len(set(sources)) > 1:
        raise TriggerError(
            f"malformed trigger event: its records come from several sources ({', '.join(sorted(set(sources)))})"
        )
    source = sources[0]
    fifo = source is Source.SQS and _is_fifo(records)
    return source, [_record(i, source, r, fifo) for i, r in enumerate(records)]


def _event_source(record: Any) -> Any:
    if not isinstance(record, Mapping):
        return None
    return record["eventSource"] if "eventSource" in record else record.get("EventSource")  # SNS: EventSource


def _is_fifo(records: Sequence[Mapping[str, Any]]) -> bool:
    # The queue's ARN says it; MessageGroupId alone does not (fair standard queues carry one too), so it counts
    # only when the records carry no ARN at all (a hand-made event).
    arns = [r.get("eventSourceARN") for r in records]
    if any(isinstance(a, str) and a for a in arns):
        return any(isinstance(a, str) and a.endswith(".fifo") for a in arns)
    return any(
        isinstance(r.get("attributes"), Mapping) and "MessageGroupId" in r["attributes"] for r in records
    )


def _record(i: int, source: Source, raw: Mapping[str, Any], fifo: bool) -> TriggerRecord:
    if source is Source.S3:
        return TriggerRecord(i, source, raw)
    if source is Source.SNS:  # asynchronous, like S3: no batch answer, so no identifier is required
        ident = _get(raw, "Sns", "MessageId")
        return TriggerRecord(i, source, raw, ident if isinstance(ident, str) else None)
    if source is Source.SQS:
        ident, where = raw.get("messageId"), "messageId"
    elif source is Source.KINESIS:
        ident, where = _get(raw, "kinesis", "sequenceNumber"), "kinesis.sequenceNumber"
    else:
        ident, where = _get(raw, "dynamodb", "SequenceNumber"), "dynamodb.SequenceNumber"
    if not isinstance(ident, str) or not ident:
        raise TriggerError(
            f"malformed {source} batch: Records[{i}] has no {where}, so its failure could not be reported"
        )
    group = None
    if fifo:
        attributes = raw.get("attributes")
        group = attributes.get("MessageGroupId") if isinstance(attributes, Mapping) else None
        group = (
            str(group) if group is not None else ""
        )  # a FIFO message without a group: one group of its own
    return TriggerRecord(i, source, raw, ident, group)


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


# ------------------------------------------------------------------------------------------------ jobs


def check_s3_events(s3_events: Iterable[str]) -> tuple[str, ...]:
    """``s3_events`` as a tuple of patterns; raises TypeError for a bare string or a non-string pattern."""
    if isinstance(s3_events, str | bytes):
        raise TypeError(f"s3_events must be a tuple of patterns, not the string {s3_events!r}")
    patterns = tuple(s3_events)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"s3_events must hold strings (event names or patterns), not {patterns!r}")
    return patterns


def record_jobs(record: Mapping[str, Any], *, s3_events: Iterable[str] = DEFAULT_S3_EVENTS) -> list[Any]:
    """The jobs one record describes: an S3, EventBridge or SNS record, or an SQS, Kinesis or DynamoDB stream
    record.

    - S3 notification record, or EventBridge ``aws.s3`` event: ``{"bucket", "key", "etag", "version_id",
      "size"}`` (the key URL-decoded) when its ``eventName`` (or ``detail-type``) matches a pattern of
      ``s3_events`` (by default ``ObjectCreated:*`` and ``Object Created``: new objects only); nothing
      otherwise (a deletion, a restore, a lifecycle transition...).
    - SNS: the notification's ``Message``, JSON-decoded when it is JSON (else the text itself).
    - SQS: the JSON body; Kinesis: the base64 JSON data. A message (SNS, SQS or Kinesis) that is itself an S3
      notification, an EventBridge S3 event or an SNS notification (SNS to SQS without raw delivery) is
      unwrapped into its objects' jobs; S3's ``s3:TestEvent`` gives none.
    - DynamoDB stream: ``NewImage`` as plain JSON (numbers as int or float, sets as sorted lists, binary as
      the stream's base64 text); nothing for a record without one (a REMOVE).

    Raises :class:`TriggerError` when the record cannot be read.
    """
    events = check_s3_events(s3_events)
    if is_eventbridge_s3(record):
        return _eventbridge_jobs(record, events)
    source = _event_source(record)
    if source == Source.S3:
        return _s3_jobs(record, events)
    if source == Source.SNS:
        sns = record.get("Sns")
        if not isinstance(sns, Mapping) or not isinstance(sns.get("Message"), str):
            raise TriggerError("the SNS record has no Sns.Message text")
        return _message_jobs(_sns_message(sns["Message"]), 1, events)
    if source == Source.SQS:
        body = record.get("body")
        if not isinstance(body, str):
            raise TriggerError("the SQS message has no text body")
        return _message_jobs(_json(body, "the SQS message body"), 0, events)
    if source == Source.KINESIS:
        data = _get(record, "kinesis", "data")
        try:
            text = base64.b64decode(str(data), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise TriggerError(f"the Kinesis record's data is not base64 UTF-8 text: {exc}") from exc
        return _message_jobs(_json(text, "the Kinesis record's data"), 0, events)
    if source == Source.DYNAMODB:
        image = _get(record, "dynamodb", "NewImage")
        return [] if image is None else [_dynamodb_item(image)]
    raise TriggerError(f"not a record of a known event source (eventSource {source!r})")


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise TriggerError(f"{what} is not JSON: {exc}") from exc


def _sns_message(text: str) -> Any:
    """An SNS notification's Message: JSON-decoded when it is JSON, else the text itself is the job."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _message_jobs(doc: Any, depth: int, events: tuple[str, ...]) -> list[Any]:
    """The jobs of an SNS message, SQS body or Kinesis data: the document itself, or what it wraps."""
    if depth > _MAX_NESTING:
        raise TriggerError(f"the message nests more than {_MAX_NESTING} notifications")
    if isinstance(doc, Mapping):
        if doc.get("Type") == "Notification" and "TopicArn" in doc and isinstance(doc.get("Message"), str):
            return _message_jobs(_sns_message(doc["Message"]), depth + 1, events)
        if doc.get("Event") == "s3:TestEvent":
            return []  # S3 sends it once when the notification is configured
        if is_eventbridge_s3(doc):
            return _eventbridge_jobs(doc, events)
        if set(doc) == {"Records"} and isinstance(doc["Records"], list) and doc["Records"]:
            records = doc["Records"]
            if all(isinstance(r, Mapping) and r.get("eventSource") == Source.S3 for r in records):
                return [job for r in records for job in _s3_jobs(r, events)]
            raise TriggerError("the message is itself a batch of records that are not S3 notifications")
        if is_envelope(doc):
            raise TriggerError("the message is a continuation envelope, which only the chain itself may send")
    return [doc]


def _s3_job(bucket: Any, key: Any, etag: Any, version_id: Any, size: Any) -> dict[str, Any]:
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise TriggerError("the S3 record lacks its bucket name or object key")
    return {
        "bucket": bucket,
        "key": unquote_plus(key),  # notifications URL-encode the key, with '+' for a space
        "etag": None if etag is None else str(etag).strip('"'),  # None: a chosen event without one
        "version_id": None if version_id is None else str(version_id),
        "size": size if isinstance(size, int) else None,
    }


def _wanted(kind: Any, events: tuple[str, ...], what: str) -> bool:
    if not isinstance(kind, str) or not kind:
        raise TriggerError(f"the S3 event has no {what}, so whether it starts a chain cannot be told")
    return any(fnmatchcase(kind, pattern) for pattern in events)


def _s3_jobs(record: Mapping[str, Any], events: tuple[str, ...]) -> list[Any]:
    if not _wanted(record.get("eventName"), events, "eventName"):
        return []  # by default, anything but a new object: a deletion, a restore, a lifecycle transition...
    s3 = record.get("s3")
    obj = _get(s3, "object")
    if not isinstance(obj, Mapping):
        raise TriggerError("the S3 record has no s3.object")
    return [
        _s3_job(
            _get(s3, "bucket", "name"), obj.get("key"), obj.get("eTag"), obj.get("versionId"), obj.get("size")
        )
    ]


def _eventbridge_jobs(event: Mapping[str, Any], events: tuple[str, ...]) -> list[Any]:
    if not _wanted(event.get("detail-type"), events, "detail-type"):
        return []  # by default, anything but Object Created: Object Deleted, Object Restore Completed...
    detail = event["detail"]
    obj = detail.get("object")
    if not isinstance(obj, Mapping):
        raise TriggerError("the EventBridge S3 event has no detail.object")
    bucket = _get(detail, "bucket", "name")
    return [_s3_job(bucket, obj.get("key"), obj.get("etag"), obj.get("version-id"), obj.get("size"))]


def _dynamodb_item(image: Any) -> dict[str, Any]:
    if not isinstance(image, Mapping):
        raise TriggerError("the DynamoDB stream record's NewImage is not a map")
    return {str(k): _attribute(v) for k, v in image.items()}


def _attribute(value: Any) -> Any:
    """One attribute of a stream image (DynamoDB JSON) as plain JSON: the chain's event must survive JSON."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise TriggerError(f"the DynamoDB stream record holds a malformed attribute value: {value!r}")
    ((kind, v),) = value.items()
    try:
        if kind in ("S", "B", "SS", "BS"):  # binary stays as the stream gives it: base64 text
            return sorted(map(str, v)) if kind in ("SS", "BS") else str(v)
        if kind in ("N", "NS"):
            return sorted(map(_number, v)) if kind == "NS" else _number(v)
        if kind in ("BOOL", "NULL"):
            return None if kind == "NULL" else bool(v)
        if kind == "M":
            return {str(k): _attribute(x) for k, x in v.items()}
        if kind == "L":
            return [_attribute(x) for x in v]
    except (AttributeError, TypeError, ArithmeticError) as exc:
        raise TriggerError(f"the DynamoDB stream record holds a malformed {kind} value: {v!r}") from exc
    raise TriggerError(f"the DynamoDB stream record holds an attribute of unknown type {kind!r}")


def _number(text: Any) -> int | float:
    number = Decimal(str(text))  # DynamoDB numbers are exact decimals: keep integers as integers
    return int(number) if number == number.to_integral_value() else float(number)
