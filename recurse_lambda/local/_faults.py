"""Fault injection for the simulator: a seeded random schedule, plus crashes at named points."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

POINTS = (
    "before_claim",
    "after_claim",
    "before_checkpoint",
    "after_checkpoint",
    "before_handoff",
    "after_handoff",
    "before_invoke",
    "after_invoke",
    "before_finish",
    "after_finish",
)


class SimulatedCrash(BaseException):
    """The simulated runtime died (out of memory, a segfault, a kill). Nothing after it runs."""


class InjectedError(RuntimeError):
    """A transient function error raised at a safe point; Lambda retries the invocation."""


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities of faults, and crashes at named points.

    ``crash``, ``error`` and ``hang`` are per invocation (at a random moment in it, or at a random named point for
    crashes); ``duplicate`` is per queued event (delivered again with a new request id); ``throttle`` is per
    invoke call; ``recycle`` is per invocation (its warm container is replaced by a cold one).
    ``crash_at`` lists ``(point, n)``: crash the n-th invocation (1-based) when it reaches ``point``.
    """

    crash: float = 0.0
    error: float = 0.0
    hang: float = 0.0
    duplicate: float = 0.0
    throttle: float = 0.0
    recycle: float = 0.0
    crash_at: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {f.name}={value} is not between 0 and 1")
        for point, n in self.crash_at:
            if point not in POINTS and point != "safe_point":
                raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}, safe_point")
            if n < 1:
                raise ValueError("crash_at invocation numbers start at 1")

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Read ``"duplicate=0.3,crash=0.2,throttle=0.2,recycle=0.5"`` (``crash@after_claim=3`` for a point)."""
        probabilities: dict[str, float] = {}
        at: list[tuple[str, int]] = []
        names = {f.name for f in fields(cls)} - {"crash_at"}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part!r} is not NAME=VALUE")
            name = name.strip()
            if name.startswith("crash@"):
                at.append((name.removeprefix("crash@"), int(value)))
            elif name in names:
                probabilities[name] = float(value)
            else:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}, crash@POINT")
        return cls(**probabilities, crash_at=tuple(at))

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


class InvocationFaults:
    """The faults drawn for one invocation, consulted at named points and at safe points."""

    def __init__(self, plan: FaultPlan, rng: random.Random, number: int, start: float, timeout: float):
        self.crash_point: str | None = None
        self.crash_time: float | None = None
        self.error_time: float | None = None
        self.hang_time: float | None = None
        for point, n in plan.crash_at:
            if n == number:
                self.crash_point = point
        if plan.crash and rng.random() < plan.crash:
            # Half the random crashes hit a named point, half a random moment (mid-work).
            if rng.random() < 0.5:
                self.crash_point = rng.choice(POINTS)
            else:
                self.crash_time = start + rng.uniform(0.0, timeout)
        if plan.error and rng.random() < plan.error:
            self.error_time = start + rng.uniform(0.0, timeout)
        if plan.hang and rng.random() < plan.hang:
            self.hang_time = start + rng.uniform(0.0, timeout)

    def point(self, name: str) -> None:
        if self.crash_point == name:
            raise SimulatedCrash(f"injected crash at {name}")
