"""Time-budget policies: at a safe point, hand off now or run one more chunk?

A policy is a small callable over one :class:`BudgetState`, which the runner updates in place at every safe
point (as tenacity's strategies read one ``RetryCallState``). It returns ``True`` to hand off. Policies combine
with ``|`` (hand off when either says so) and ``&`` (only when both do), and can be tested by building a
``BudgetState`` by hand.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

from ._errors import ChunkTooLargeError

__all__ = [
    "BudgetPolicy",
    "BudgetState",
    "ChunkTimings",
    "HandOffTimings",
    "Policy",
    "after_chunks",
    "fixed_margin",
    "predictive",
]


class ChunkTimings:
    """Durations of recent chunks, with their maximum kept up to date in O(1) amortised time.

    Lives in the warm container, so a hop that lands on a warm container starts with what earlier hops learned.
    """

    __slots__ = ("_ring", "count", "max", "total")

    def __init__(self, window: int = 1024) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._ring: deque[float] = deque(maxlen=window)
        self.max = 0.0
        self.count = 0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        ring = self._ring
        evicted = ring[0] if len(ring) == ring.maxlen else None
        ring.append(seconds)
        self.count += 1
        self.total += seconds
        if seconds >= self.max:
            self.max = seconds
        elif evicted is not None and evicted >= self.max:
            self.max = max(ring)  # the maximum just left the window: rare, so a scan is fine

    def __len__(self) -> int:
        return len(self._ring)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0–1) of the durations in the window; 0.0 when empty."""
        if not self._ring:
            return 0.0
        ordered = sorted(self._ring)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class HandOffTimings:
    """Measured hand-off durations (ledger write + invoke), kept in the warm container."""

    __slots__ = ("_ring", "default", "version")

    def __init__(self, default: float = 1.0, window: int = 16) -> None:
        self.default = default
        self._ring: deque[float] = deque(maxlen=window)
        self.version = 0  # bumped on every measurement, so policies can cache what they derive from it

    def add(self, seconds: float) -> None:
        self._ring.append(seconds)
        self.version += 1

    @property
    def estimate(self) -> float:
        """The recent worst hand-off, or the conservative default before any was measured."""
        return max(self._ring) if self._ring else self.default

    @property
    def measured(self) -> bool:
        return bool(self._ring)

    def estimate_for(self, budget: float) -> float:
        """The estimate, with the unmeasured default capped at 5 % of ``budget`` (a 1-second function must not
        reserve a whole second before it has measured anything)."""
        return self.estimate if self._ring else min(self.default, 0.05 * budget)


class BudgetState:
    """What a policy sees at a safe point. The runner mutates one instance in place (no allocation per yield)."""

    __slots__ = ("budget", "chunks", "elapsed", "handoff", "last_chunk", "remaining", "timings")

    def __init__(
        self,
        *,
        budget: float,
        remaining: float,
        elapsed: float = 0.0,
        chunks: int = 0,
        last_chunk: float = 0.0,
        timings: ChunkTimings | None = None,
        handoff: HandOffTimings | None = None,
    ) -> None:
        self.budget = budget  # seconds the invocation had for work when it started
        self.remaining = remaining  # seconds left now
        self.elapsed = elapsed  # seconds since the invocation started
        self.chunks = chunks  # chunks finished in this invocation
        self.last_chunk = last_chunk  # duration of the chunk that just finished
        self.timings = timings if timings is not None else ChunkTimings()
        self.handoff = handoff if handoff is not None else HandOffTimings()

    def __repr__(self) -> str:
        return (
            f"BudgetState(budget={self.budget:.3f}, remaining={self.remaining:.3f}, chunks={self.chunks}, "
            f"last_chunk={self.last_chunk:.4f}, recent_max={self.timings.max:.4f}, "
            f"handoff={self.handoff.estimate:.3f})"
        )


@runtime_checkable
class BudgetPolicy(Protocol):
    """Anything callable on a :class:`BudgetState` that answers "hand off now?"."""

    def __call__(self, state: BudgetState) -> bool: ...


class Policy:
    """Base class giving policies ``|`` and ``&``."""

    def __call__(self, state: BudgetState) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __or__(self, other: BudgetPolicy) -> Policy:
        return _Any(self, other)

    def __and__(self, other: BudgetPolicy) -> Policy:
        return _All(self, other)


class _Any(Policy):
    def __init__(self, *policies: BudgetPolicy) -> None:
        self.policies = policies

    def __call__(self, state: BudgetState) -> bool:
        return any(p(state) for p in self.policies)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.policies))


class _All(Policy):
    def __init__(self, *policies: BudgetPolicy) -> None:
        self.policies = policies

    def __call__(self, state: BudgetState) -> bool:
        return all(p(state) for p in self.policies)

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.policies))


class predictive(Policy):
    """The default: hand off unless the next chunk, predicted from recent ones, fits before the reserve.

    ``predicted = factor × max(recent chunk durations)``; ``reserve = handoff_factor × measured hand-off + floor``.
    A chunk seen to take longer than a whole invocation's budget (less the reserve) raises
    :class:`ChunkTooLargeError` instead of timing out; one that fits but is predicted not to fit twice gives
    one-chunk hops.
    """

    def __init__(self, factor: float = 2.0, handoff_factor: float = 1.5, floor: float = 0.1) -> None:
        if factor < 1.0 or handoff_factor < 1.0 or floor < 0:
            raise ValueError("factor and handoff_factor must be >= 1 and floor >= 0")
        self.factor = factor
        self.handoff_factor = handoff_factor
        self.floor = floor
        # The reserve changes only when a hand-off is measured or the budget changes: derive it once per change
        # instead of at every safe point (this call is on the hot path).
        self._key: tuple[object, int, float] | None = None
        self._reserve = self._room = 0.0

    def __call__(self, state: BudgetState) -> bool:
        handoff = state.handoff
        key = self._key
        if key is None or key[0] is not handoff or key[1] != handoff.version or key[2] != state.budget:
            self._derive(state)
        longest = state.timings.max
        if longest > self._room:
            raise ChunkTooLargeError(longest, self._room)
        return state.remaining - self._reserve < self.factor * longest

    def _derive(self, state: BudgetState) -> None:
        budget = state.budget
        # The safety floor, like the unmeasured hand-off, is capped at 5 % of the budget, so a simulated
        # sub-second function keeps most of its time for work.
        reserve = self.handoff_factor * state.handoff.estimate_for(budget) + min(self.floor, 0.05 * budget)
        self._reserve = reserve
        # A chunk seen to need more than a whole invocation can give: no hop can ever run it. The reserve in
        # this test is capped at half the budget, so a hand-off that measured slow (and may be faster next
        # time) gives one-chunk hops rather than failing the chain for good.
        self._room = budget - min(reserve, budget / 2)
        self._key = (state.handoff, state.handoff.version, budget)

    def __repr__(self) -> str:
        return f"predictive(factor={self.factor}, handoff_factor={self.handoff_factor}, floor={self.floor})"


class fixed_margin(Policy):
    """The classic pattern: hand off when fewer than ``seconds`` remain."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds

    def __call__(self, state: BudgetState) -> bool:
        return state.remaining < self.seconds

    def __repr__(self) -> str:
        return f"fixed_margin({self.seconds})"


class after_chunks(Policy):
    """Hand off after ``n`` chunks in one invocation (useful in tests and to bound work per hop)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n

    def __call__(self, state: BudgetState) -> bool:
        return state.chunks >= self.n

    def __repr__(self) -> str:
        return f"after_chunks({self.n})"
