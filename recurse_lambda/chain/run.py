"""``Run``: what the user's handler sees of the chain (identity, time left, S3 helpers, idempotency keys)."""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.clock import Clock
from ..errors import OutOfTime

if TYPE_CHECKING:
    from ..s3 import S3Helpers
    from ..shards.plan import Shard
    from .world import World

T = TypeVar("T")


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
        #: What an async generator handler returns (Python forbids ``return value`` in one): set it just before
        #: the generator ends. Unused by sync handlers, whose ``return`` value is the result.
        self.result: Any = None
        #: Seconds the runner keeps for its hand-off at the end of the invocation (set when the drive starts).
        self.handoff_reserve = 0.0

    @property
    def remaining(self) -> float:
        """Seconds left in this invocation."""
        return self._deadline - self._clock.now()

    async def within(self, awaitable: Awaitable[T], seconds: float | None = None) -> T:
        """Await ``awaitable``, but no longer than the invocation allows: until its deadline less the hand-off
        reserve (and at most ``seconds``). Raises :class:`OutOfTime` (a ``TimeoutError``) when that time runs
        out (the awaitable is cancelled) or has already run out (a coroutine is then closed without running).
        """
        import asyncio  # only async handlers call this: importing the package does not import asyncio

        allowed = self._deadline - self.handoff_reserve - self._clock.now()
        if seconds is not None:
            allowed = min(allowed, seconds)
        if allowed <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise OutOfTime(
                f"run.within: no time left before the hand-off reserve ({self.handoff_reserve:.3f} s); "
                "yield to hand off, and await it in the next hop"
            )
        timeout = asyncio.timeout(allowed)
        try:
            async with timeout:
                return await awaitable
        except TimeoutError as exc:
            if not timeout.expired():
                raise  # the awaitable's own timeout, not ours
            raise OutOfTime(
                f"run.within: the await did not finish in the {allowed:.3f} s left before the hand-off "
                "reserve; yield to hand off, and await it in the next hop"
            ) from exc

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
            self._s3 = S3Helpers(getter, self.pins, cache=world.warm.cache, chain_id=self.chain_id)
        return self._s3

    def __repr__(self) -> str:
        return f"Run(chain_id={self.chain_id!r}, hop={self.hop}, attempt={self.attempt}, chunk={self.chunk})"
