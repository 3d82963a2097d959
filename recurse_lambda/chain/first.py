"""How a chain begins: the envelope of its hop 0, built from the first event (or from a trigger's job)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import ChainConfig
from ..core.codec import Envelope
from ..core.progress import Progress
from ..core.state_codec import dump_state
from ..errors import ConfigurationError, EnvelopeError
from ..keys import default as default_chain_id
from ..shards.plan import SHARD_KEY, check_user_chain_id


def refuse_internal_markers(event: Any) -> None:
    """A first event (not an envelope) may not carry the library's internal markers.

    A shard is only ever started by an envelope (signed when a signing key is set) whose event carries
    ``SHARD_KEY``; a plain event carrying it is forged, and would otherwise run as a shard of someone's job.
    """
    if isinstance(event, Mapping) and SHARD_KEY in event:
        raise EnvelopeError(
            f"a first event carries the internal marker {SHARD_KEY!r}: shards are started by the library's "
            "own envelopes, never by a plain event; rejected"
        )


def initial_progress(
    config: ChainConfig, event: Any, pins: Mapping[str, Mapping[str, Any]] | None = None
) -> Progress:
    """A new chain's progress: ``initial_state(event)`` (or ``state()``), no chunks yet, ``pins``."""
    state = config.initial_state(event) if config.initial_state else config.state()
    if not isinstance(state, config.state):
        raise ConfigurationError(
            f"initial_state returned {type(state).__name__}, not {config.state.__name__}"
        )
    return Progress(
        state=dump_state(state), chunks=0, pins=dict(pins or {})
    )  # dump_state checks it round-trips


def first_envelope(
    config: ChainConfig, event: Any, *, request_id: str, stateful: bool, now: float, code_version: str
) -> Envelope:
    """Hop 0 of the chain that ``event`` starts (the first event is refused when it carries internal markers).

    With a ledger, a duplicate delivery of the first event has a new request id: the chain is keyed on the event
    (or, for an S3 notification, on the objects' bucket, key and ETag), so the duplicate joins the chain.
    Without one, the chain is named by the request that started it.
    """
    refuse_internal_markers(event)  # a forged shard start: shards start from envelopes
    if config.chain_id is not None:
        chain_id = config.chain_id(event)
    elif stateful:
        chain_id = default_chain_id(event)
    else:
        chain_id = request_id
    check_user_chain_id(str(chain_id))  # shard chain ids are reserved: a key must not name a shard
    progress = initial_progress(config, event)
    return Envelope(str(chain_id), 0, progress.to_json(), event, now, code_version)
