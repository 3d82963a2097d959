"""A chain's committed progress, typed: what a hop hands on and what the ledger keeps.

On the wire (envelopes, ledger items) it stays the JSON object it always was::

    {"state": {...}, "chunks": int, "pins": {"bucket/key": {...}}, "shards": {...}?, "learned": {...}?}

``state`` is the user's state as JSON (see :mod:`recurse_lambda.core.state_codec`), ``chunks`` counts the chain's
chunks, ``pins`` maps each object the chain reads to the ETag (and version) it was pinned to, ``shards`` is a
sharded job's plan and ``learned`` what the chain has learned about its timings (see
:mod:`recurse_lambda.chain.warm`). Keys this version does not know are kept as they are, so a newer writer's
progress survives an older reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Progress"]

_KNOWN = ("state", "chunks", "pins", "shards", "learned")


@dataclass(frozen=True, slots=True)
class Progress:
    """One committed cursor. Immutable: derive a new one with :meth:`with_` (``dataclasses.replace``)."""

    state: Any
    chunks: int = 0
    pins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    shards: Mapping[str, Any] | None = None  # a sharded job's plan (see recurse_lambda.shards.job)
    learned: Mapping[str, Any] | None = None  # timings that survive a runtime reset (see chain.warm)
    other: Mapping[str, Any] = field(default_factory=dict)  # keys a newer version wrote, carried unchanged

    @classmethod
    def from_json(cls, data: Any) -> Progress:
        """Read the wire form; ``ValueError`` when it is not a JSON object with a ``state``."""
        if not isinstance(data, Mapping) or "state" not in data:
            raise ValueError(f"a chain's progress must be a JSON object with a 'state', not {data!r:.80}")
        pins = data.get("pins") or {}
        shards = data.get("shards")
        learned = data.get("learned")
        return cls(
            state=data["state"],
            chunks=int(data.get("chunks", 0) or 0),
            pins=dict(pins) if isinstance(pins, Mapping) else {},
            shards=dict(shards) if isinstance(shards, Mapping) else None,
            learned=dict(learned) if isinstance(learned, Mapping) else None,
            other={k: v for k, v in data.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form (the keys that are set, in a stable order)."""
        out: dict[str, Any] = {
            **self.other,
            "state": self.state,
            "chunks": self.chunks,
            "pins": dict(self.pins),
        }
        if self.shards is not None:
            out["shards"] = dict(self.shards)
        if self.learned is not None:
            out["learned"] = dict(self.learned)
        return out

    def with_(self, **changes: Any) -> Progress:
        return replace(self, **changes)
