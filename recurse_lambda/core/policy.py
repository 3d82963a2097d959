"""Time-budget policies: at a safe point, hand off now or run one more chunk?

A policy is a small callable over one :class:`BudgetState`, which the runner updates in place at every safe
point (as tenacity's strategies read one ``RetryCallState``). It returns ``True`` to hand off. Policies combine
with ``|`` (hand off when either says so) and ``&`` (only when both do), and can be tested by building a
``BudgetState`` by hand.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

from ..errors import ChunkTooLargeError

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
    """Measured hand-off durations (ledger write + invoke), kept in the warm container.

    Before this runtime has measured a hand-off, the estimate is what the chain learned elsewhere (``learned``,
    carried in its committed progress across runtime resets and containers), or else the conservative default.
    ``at_least`` is a lower bound the runner sets from what it measured in this invocation (a ledger write).
    """

    __slots__ = ("_ring", "at_least", "default", "learned", "version")

    def __init__(self, default: float = 1.0, window: int = 16) -> None:
        self.default = default
        self._ring: deque[float] = deque(maxlen=window)
        self.learned: float | None = None
        self.at_least = 0.0
        self.version = 0  # bumped on every change, so policies can cache what they derive from it

    def add(self, seconds: float) -> None:
        self._ring.append(seconds)
        self.version += 1

    def seed(self, seconds: float) -> None:
        """Use ``seconds`` (learned by the chain in another runtime) until this runtime measures a hand-off."""
        self.learned = seconds
        self.version += 1

    def floor(self, seconds: float) -> None:
        """Never estimate below ``seconds`` (a part of the hand-off measured in this invocation)."""
        if seconds != self.at_least:
            self.at_least = seconds
            self.version += 1

    @property
    def estimate(self) -> float:
        """The recent worst hand-off, or what the chain learned, or the conservative default."""
        if self._ring:
            return max(max(self._ring), self.at_least)
        return max(self.learned if self.learned is not None else self.default, self.at_least)

    @property
    def measured(self) -> bool:
        return bool(self._ring)

    @property
    def known(self) -> float | None:
        """The recent worst measured hand-off, else what the chain learned, else None (worth carrying on)."""
        return max(self._ring) if self._ring else self.learned

    def estimate_for(self, budget: float) -> float:
        """The estimate, with the default (nothing measured or learned) capped at 5 % of ``budget`` (a 1-second
        function must not reserve a whole second before it has measured anything)."""
        if self._ring or self.learned is not None:
            return self.estimate
        return max(min(self.default, 0.05 * budget), self.at_least)


class BudgetState:
    """What a policy sees at a safe point. The runner mutates one instance in place (no allocation per yield)."""

    __slots__ = ("budget", "caution", "chunks", "elapsed", "handoff", "last_chunk", "remaining", "timings")

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
        caution: int = 0,
    ) -> None:
        self.budget = budget  # seconds the invocation had for work when it started
        self.remaining = remaining  # seconds left now
        self.elapsed = elapsed  # seconds since the invocation started
        self.chunks = chunks  # chunks finished in this invocation
        self.last_chunk = last_chunk  # duration of the chunk that just finished
        self.timings = timings if timings is not None else ChunkTimings()
        self.handoff = handoff if handoff is not None else HandOffTimings()
        # How many earlier attempts of this hop failed (timed out, crashed, or lost their hand-off's invoke):
        # a retry must not repeat the decisions that ran into the deadline.
        self.caution = caution

    def __repr__(self) -> str:
        return (
            f"BudgetState(budget={self.budget:.3f}, remaining={self.remaining:.3f}, chunks={self.chunks}, "
            f"last_chunk={self.last_chunk:.4f}, recent_max={self.timings.max:.4f}, "
            f"handoff={self.handoff.estimate:.3f}, caution={self.caution})"
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

    ``predicted = factor × max(recent chunk durations)``; ``reserve = handoff_factor × hand-off estimate + floor``.
    A retry that follows failed attempts (``state.caution`` > 0) doubles both for each of them (up to 8×).
    A chunk that completed fits in an invocation, so it never fails the chain: one that fits but is predicted not
    to fit twice gives one-chunk hops. Only a duration longer than the whole budget (which no invocation like
    this one can have measured) raises :class:`ChunkTooLargeError`.
    """

    def __init__(self, factor: float = 2.0, handoff_factor: float = 1.5, floor: float = 0.1) -> None:
        if factor < 1.0 or handoff_factor < 1.0 or floor < 0:
            raise ValueError("factor and handoff_factor must be >= 1 and floor >= 0")
        self.factor = factor
        self.handoff_factor = handoff_factor
        self.floor = floor
        # The reserve changes only when a hand-off is measured, the budget or the caution changes: derive it once
        # per change instead of at every safe point (this call is on the hot path).
        self._key: tuple[object, int, float, int] | None = None
        self._reserve = self._factor = 0.0

    def __call__(self, state: BudgetState) -> bool:
        handoff = state.handoff
        key = self._key
        if (
            key is None
            or key[0] is not handoff
            or key[1] != handoff.version
            or key[2] != state.budget
            or key[3] != state.caution
        ):
            self._derive(state)
        longest = state.timings.max
        if longest > state.budget:
            raise ChunkTooLargeError(longest, state.budget)
        return state.remaining - self._reserve < self._factor * longest

    def _derive(self, state: BudgetState) -> None:
        budget = state.budget
        inflate = float(2 ** min(max(state.caution, 0), 3))
        # The safety floor, like the unmeasured hand-off, is capped at 5 % of the budget, so a simulated
        # sub-second function keeps most of its time for work.
        self._reserve = inflate * self.handoff_factor * state.handoff.estimate_for(budget) + min(
            self.floor, 0.05 * budget
        )
        self._factor = inflate * self.factor
        self._key = (state.handoff, state.handoff.version, budget, state.caution)

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
