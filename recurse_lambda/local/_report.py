"""What a simulated chain did: one row per invocation, totals, and a timeline a person can read."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ChainFailed


@dataclass
class InvocationRow:
    """One simulated invocation."""

    number: int
    request_id: str
    kind: str  # first | hand_off | retry | duplicate | destination
    attempt: int  # Lambda's delivery attempt for this request id (1-3)
    container: int
    cold: bool
    start: float
    end: float
    hop: int | None = None
    chunks: int = 0
    chunk_time: float = 0.0
    outcome: str = ""  # the runner's outcome, or timeout / crash / error
    error: str | None = None
    chain_id: str | None = None  # the chain this invocation belonged to (a shard's lane in a timeline)

    @property
    def billed(self) -> float:
        return self.end - self.start

    @property
    def utilization(self) -> float:
        return self.chunk_time / self.billed if self.billed > 0 else 0.0


@dataclass
class ChainReport:
    """The end of a simulated chain and everything that happened on the way."""

    chain_id: str | None
    # SUCCEEDED | FAILED | CANCELLED | REJECTED (the first event started no chain) | RUNNING (stalled)
    status: str
    result: Any = None
    error: str | None = None
    last_state: Any = None
    rows: list[InvocationRow] = field(default_factory=list)
    destination: list[dict[str, Any]] = field(default_factory=list)  # captured on-failure records
    first_response: Any = None
    # Every chain the run touched and its final status: a trigger event (an SQS batch, say) starts several.
    chains: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    @property
    def invocations(self) -> int:
        return len(self.rows)

    @property
    def hops(self) -> int:
        """Distinct hops that did work (of every chain: a sharded job counts its shards' hops)."""
        return len({(r.chain_id, r.hop) for r in self.rows if r.hop is not None and r.chunks})

    def count(self, *outcomes: str) -> int:
        return sum(1 for r in self.rows if r.outcome in outcomes)

    @property
    def retries(self) -> int:
        return sum(1 for r in self.rows if r.kind == "retry")

    @property
    def duplicates_dropped(self) -> int:
        """Deliveries of a hop that another invocation owned or had already moved past.

        An on-failure destination record is not a duplicate: when it finds the chain moved on or ended (the
        invocation Lambda gave up on had committed before it died), its row says ``stale`` but is not counted.
        """
        return sum(1 for r in self.rows if r.outcome in ("duplicate", "stale") and r.kind != "destination")

    @property
    def timeouts(self) -> int:
        return self.count("timeout")

    @property
    def chunk_time(self) -> float:
        return sum(r.chunk_time for r in self.rows)

    @property
    def billed(self) -> float:
        return sum(r.billed for r in self.rows)

    @property
    def utilization(self) -> float:
        """Chunk time over billed time, across every invocation of the chain."""
        return self.chunk_time / self.billed if self.billed > 0 else 0.0

    def raise_for_status(self) -> ChainReport:
        """Raise :class:`ChainFailed` (with the error and last committed state) unless the chain SUCCEEDED."""
        if self.status != "SUCCEEDED":
            raise ChainFailed(
                self.chain_id or "?", self.error or f"chain ended {self.status}", self.last_state
            )
        return self

    def summary(self) -> dict[str, Any]:
        """The figures ``recurse-lambda simulate --json`` prints."""
        return {
            "chain_id": self.chain_id,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "hops": self.hops,
            "invocations": self.invocations,
            "retries": self.retries,
            "duplicates_dropped": self.duplicates_dropped,
            "timeouts": self.timeouts,
            "crashes": self.count("crash"),
            "utilization": round(self.utilization, 6),
            "billed_s": round(self.billed, 6),
            "duration_s": round(self.ended - self.started, 6),
            "failure_records": len(self.destination),
        }

    def timeline(self, width: int = 40) -> str:
        """A text timeline: one line per invocation, a bar placed on the chain's time axis."""
        span = max(self.ended - self.started, 1e-9)
        lines = [
            f"{'#':>4} {'hop':>4} {'kind':<11} {'start s':>9} {'dur s':>8} {'chunks':>7} {'util':>6}  "
            f"{'outcome':<11} timeline"
        ]
        for r in self.rows:
            a = min(width - 1, int((r.start - self.started) / span * width))
            b = min(width, max(a + 1, int((r.end - self.started) / span * width)))
            bar = " " * a + ("#" if r.chunks else "-") * (b - a)
            hop = "-" if r.hop is None else str(r.hop)
            lines.append(
                f"{r.number:>4} {hop:>4} {r.kind:<11} {r.start - self.started:>9.3f} {r.billed:>8.3f} "
                f"{r.chunks:>7} {r.utilization:>6.1%}  {r.outcome:<11} |{bar:<{width}}|"
            )
        s = self.summary()
        lines.append(
            f"status {s['status']}: {s['hops']} hops, {s['invocations']} invocations, {s['retries']} retries, "
            f"{s['duplicates_dropped']} duplicates dropped, {s['timeouts']} timeouts, "
            f"utilisation {s['utilization']:.1%}"
        )
        return "\n".join(lines)

    def timeline_svg(self, *, title: str | None = None) -> str:
        """The timeline as an SVG picture: a lane per chain, a bar per invocation coloured by outcome."""
        from ._svg import timeline_svg

        return timeline_svg(self, title=title)

    def write_timeline(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write :meth:`timeline_svg` to ``path`` (UTF-8) and return the path."""
        target = Path(path)
        target.write_text(self.timeline_svg(title=title), encoding="utf-8")
        return target

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "rows": [asdict(r) for r in self.rows], "destination": self.destination}
