"""``Run``: what the user's handler sees of the chain (identity, time left, S3 helpers, idempotency keys)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock

if TYPE_CHECKING:
    from ..s3 import S3Helpers
    from ..shards.plan import Shard
    from .world import World


class Run:
    """What the handler sees of the chain: identity, time left, S3 helpers and idempotency keys."""

    def __init__(
        self,
        *,
        chain_id: str,
        hop: int,
        attempt: int | None,
        request_id: str,
        chunk: int,
        started_at: float,
        deadline: float,
        clock: Clock,
        context: Any,
        pins: MutableMapping[str, dict[str, Any]],
        world: World,
    ) -> None:
        self.chain_id = chain_id
        self.hop = hop
        self.attempt = attempt
        self.request_id = request_id
        self.chunk = chunk  # chain-wide index of the chunk in progress; stable across retries
        self.started_at = started_at
        self.context = context
        self.pins = pins
        self._deadline = deadline
        self._clock = clock
        self._world = world
        self._s3: S3Helpers | None = None
        #: For a shard of a sharded job: its place in the job and readers over its byte ranges; else None.
        self.shard: Shard | None = None

    @property
    def remaining(self) -> float:
        """Seconds left in this invocation."""
        return self._deadline - self._clock.now()

    def idempotency_key(self, *parts: object) -> str:
        """A key for a side effect that is the same on every retry of the same work.

        With no parts: ``chain_id/c<chunk>``, where ``chunk`` counts chunks from the chain's start and restarts
        from the committed count on a retry. Pass the cursor (``state.offset``) for a key tied to the data.
        Hop numbers are deliberately not part of it: a retry may hand off at another point.
        """
        if parts:
            return "/".join([self.chain_id, *map(str, parts)])
        return f"{self.chain_id}/c{self.chunk}"

    @property
    def s3(self) -> S3Helpers:
        """S3 helpers whose reads are pinned to the ETag recorded for the chain (created on first use)."""
        if self._s3 is None:
            from ..s3 import S3Helpers

            world = self._world
            getter = world.s3_client or world.warm.client_getter("s3")
            self._s3 = S3Helpers(getter, self.pins, cache=world.warm.cache)
        return self._s3

    def __repr__(self) -> str:
        return f"Run(chain_id={self.chain_id!r}, hop={self.hop}, attempt={self.attempt}, chunk={self.chunk})"
