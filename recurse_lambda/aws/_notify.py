"""Failure notifiers on AWS: an SQS queue, an SNS topic or an EventBridge bus.

Which to pick:

- **SQS** when one consumer (a person draining a dead-letter-style queue, a job that resumes chains) should
  see each failure once and keep it until handled. FIFO queues (``.fifo``) are grouped by chain id and
  deduplicated by chain id and hop.
- **SNS** to fan out: e-mail, chat, several queues. ``Subject`` is set for e-mail subscribers; the message
  attributes (``notice_type``, ``chain_id``, ``hop``) let subscriptions filter.
- **EventBridge** to route by rule (to a Step Functions workflow, another account, an API destination): the
  notice is the event's ``detail``, the function's ARN its ``resources``.

Every notifier sends the notice's JSON (:meth:`ChainFailureNotice.to_json`) and leaves the state out unless
``include_state=True``. botocore errors become :class:`NotifyError`; the runner logs it and carries on (see
:func:`recurse_lambda.core.notify.send_notice`), so a notifier never masks the chain's failure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core.notify import NOTICE_TYPE, ChainFailureNotice
from ..errors import ConfigurationError, NotifyError
from . import clients

__all__ = ["EventBridgeNotifier", "SnsNotifier", "SqsNotifier"]

ClientGetter = Callable[[], Any]

# SQS and SNS messages and EventBridge entries are limited to 256 KiB (attributes and envelope included);
# keep a margin for those. A larger state is left out of the notice (it is in the ledger).
MAX_NOTICE_BYTES = 240 * 1024

_FIFO_ID = re.compile(r"[\x21-\x7e]{1,128}")  # MessageGroupId: 1-128 printable ASCII characters
_SUBJECT_UNSAFE = re.compile(r"[^\x20-\x7e]")  # SNS Subject: printable ASCII, no line breaks, ≤ 100 chars


def _describe(exc: BotoCoreError | ClientError) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = error.get("Code") or "Unknown"
        message = error.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def _group_id(chain_id: str) -> str:
    return chain_id if _FIFO_ID.fullmatch(chain_id) else hashlib.sha256(chain_id.encode()).hexdigest()


def _dedup_id(notice: ChainFailureNotice) -> str:
    # A chain fails at most once per hop (resume moves it to a new hop), so this names one failure.
    return hashlib.sha256(f"{notice.chain_id}\0{notice.hop}".encode()).hexdigest()


def _attributes(notice: ChainFailureNotice) -> dict[str, dict[str, str]]:
    """Message attributes, in the shape SQS and SNS share, for filtering without parsing the body."""
    attrs = {
        "notice_type": {"DataType": "String", "StringValue": NOTICE_TYPE},
        "chain_id": {"DataType": "String", "StringValue": notice.chain_id},
    }
    if notice.hop is not None:
        attrs["hop"] = {"DataType": "Number", "StringValue": str(notice.hop)}
    return attrs


class _Notifier:
    service = ""

    def __init__(self, client: ClientGetter | None, include_state: bool) -> None:
        self._get_client = client if client is not None else clients.getter(self.service)
        self.include_state = include_state

    def _body(self, notice: ChainFailureNotice) -> str:
        return notice.to_json(include_state=self.include_state, max_bytes=MAX_NOTICE_BYTES)


class SqsNotifier(_Notifier):
    """Sends each failure notice as one SQS message (FIFO queues: grouped by chain, deduplicated per hop)."""

    service = "sqs"

    def __init__(
        self, queue_url: str, client: ClientGetter | None = None, *, include_state: bool = False
    ) -> None:
        super().__init__(client, include_state)
        self.queue_url = queue_url

    def notify(self, notice: ChainFailureNotice) -> None:
        request: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MessageBody": self._body(notice),
            "MessageAttributes": _attributes(notice),
        }
        if self.queue_url.endswith(".fifo"):
            request["MessageGroupId"] = _group_id(notice.chain_id)
            request["MessageDeduplicationId"] = _dedup_id(notice)
        try:
            self._get_client().send_message(**request)
        except (ClientError, BotoCoreError) as exc:
            raise NotifyError(
                f"could not send the failure notice of chain {notice.chain_id} to SQS queue "
                f"{self.queue_url}: {_describe(exc)}"
            ) from exc

    def __repr__(self) -> str:
        return f"SqsNotifier({self.queue_url!r}, include_state={self.include_state})"


class SnsNotifier(_Notifier):
    """Publishes each failure notice to an SNS topic, with a Subject for e-mail subscribers."""

    service = "sns"

    def __init__(
        self, topic_arn: str, client: ClientGetter | None = None, *, include_state: bool = False
    ) -> None:
        super().__init__(client, include_state)
        self.topic_arn = topic_arn

    @staticmethod
    def subject(notice: ChainFailureNotice) -> str:
        hop = "" if notice.hop is None else f" at hop {notice.hop}"
        text = _SUBJECT_UNSAFE.sub("?", f"recurse-lambda: chain {notice.chain_id} failed{hop}")
        return text if len(text) <= 100 else text[:97] + "..."

    def notify(self, notice: ChainFailureNotice) -> None:
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": self._body(notice),
            "Subject": self.subject(notice),
            "MessageAttributes": _attributes(notice),
        }
        if self.topic_arn.endswith(".fifo"):
            request["MessageGroupId"] = _group_id(notice.chain_id)
            request["MessageDeduplicationId"] = _dedup_id(notice)
        try:
            self._get_client().publish(**request)
        except (ClientError, BotoCoreError) as exc:
            raise NotifyError(
                f"could not publish the failure notice of chain {notice.chain_id} to SNS topic "
                f"{self.topic_arn}: {_describe(exc)}"
            ) from exc

    def __repr__(self) -> str:
        return f"SnsNotifier({self.topic_arn!r}, include_state={self.include_state})"


class EventBridgeNotifier(_Notifier):
    """Puts each failure notice on an EventBridge bus as the ``detail`` of one event."""

    service = "events"

    def __init__(
        self,
        bus_name: str = "default",
        source: str = "recurse-lambda",
        detail_type: str = "Chain failed",
        client: ClientGetter | None = None,
        *,
        include_state: bool = False,
    ) -> None:
        if source.startswith("aws."):
            raise ConfigurationError(f"EventBridge reserves sources starting with 'aws.', got {source!r}")
        super().__init__(client, include_state)
        self.bus_name = bus_name
        self.source = source
        self.detail_type = detail_type

    def notify(self, notice: ChainFailureNotice) -> None:
        entry: dict[str, Any] = {
            "EventBusName": self.bus_name,
            "Source": self.source,
            "DetailType": self.detail_type,
            "Detail": self._body(notice),
        }
        if notice.function is not None and notice.function.startswith("arn:"):
            entry["Resources"] = [notice.function]
        where = f"EventBridge bus {self.bus_name}"
        try:
            response = self._get_client().put_events(Entries=[entry])
        except (ClientError, BotoCoreError) as exc:
            raise NotifyError(
                f"could not put the failure notice of chain {notice.chain_id} on {where}: {_describe(exc)}"
            ) from exc
        # PutEvents answers 200 even when an entry is refused: the refusal is in the entry's result.
        if response.get("FailedEntryCount"):
            result = (response.get("Entries") or [{}])[0]
            raise NotifyError(
                f"{where} refused the failure notice of chain {notice.chain_id}: "
                f"{result.get('ErrorCode', 'Unknown')}: {result.get('ErrorMessage', '')}".rstrip(": ")
            )

    def __repr__(self) -> str:
        return (
            f"EventBridgeNotifier(bus_name={self.bus_name!r}, source={self.source!r}, "
            f"detail_type={self.detail_type!r}, include_state={self.include_state})"
        )
