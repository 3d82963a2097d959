"""What an event is, decided once per invocation.

An invocation's event is one of: a trigger batch (S3, EventBridge, SNS, SQS, Kinesis, DynamoDB streams), an
on-failure destination record wrapping a trigger batch (tried once more), an on-failure destination record for a
hop (see :func:`recurse_lambda.chain.deliveries.abandoned`), a continuation envelope, or the first event of a chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..core.codec import is_envelope
from ..triggers.parse import trigger_records


class Kind(Enum):
    TRIGGER = "trigger"  # a batch of trigger records: start one chain per job
    TRIGGER_RETRY = "trigger_retry"  # Lambda gave up on a trigger event: its records are tried once more
    ABANDONED = "abandoned"  # Lambda gave up on a hop: resend it, or fail its chain
    ENVELOPE = "envelope"  # the next hop of a chain
    FIRST = "first"  # the first event of a chain


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes. ``event`` is what that path works on (a retried trigger's batch, unwrapped)."""

    kind: Kind
    event: Any


def is_destination_record(event: Any) -> bool:
    """An on-failure destination record from Lambda (``requestContext`` + ``requestPayload``)."""
    return (
        isinstance(event, Mapping)
        and isinstance(event.get("requestContext"), Mapping)
        and "condition" in event["requestContext"]
        and "requestPayload" in event
    )


def route(event: Any) -> Route:
    """Classify ``event``; raises :class:`~recurse_lambda.TriggerError` for an empty or malformed trigger batch."""
    if trigger_records(event) is not None:
        return Route(Kind.TRIGGER, event)
    if is_destination_record(event):
        if trigger_records(event["requestPayload"]) is not None:
            return Route(Kind.TRIGGER_RETRY, event["requestPayload"])
        return Route(Kind.ABANDONED, event)
    if is_envelope(event):
        return Route(Kind.ENVELOPE, event)
    return Route(Kind.FIRST, event)
