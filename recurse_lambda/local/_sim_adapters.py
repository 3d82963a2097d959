"""The simulator's stand-ins for the outside world: a spill store, and the views of the ledger and of Lambda's
Invoke API that one simulated invocation uses (deadline checks, latencies, fault points, a commit log)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import ChainRecord, ChainStatus, ConfigurationError, EnvelopeError, InvokeThrottled, Ledger
from ._faults import InvocationFaults

if TYPE_CHECKING:
    from ._simulator import Simulator, _Delivery


class MemorySpillStore:
    """A spill store in a dict, standing in for the S3 spill bucket."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        self.objects[key] = body
        return {"bucket": "memory", "key": key}

    def get(self, ref: Mapping[str, Any]) -> bytes:
        try:
            return self.objects[str(ref["key"])]
        except KeyError:
            raise EnvelopeError(f"the spilled envelope body {ref['key']!r} is gone") from None


@dataclass
class Commit:
    """A successful conditional ledger write: the writer's hop and owner, and the chunks committed after it."""

    op: str
    chain_id: str
    hop: int
    owner: str | None
    at: float
    chunks: int


class _SimLedger:
    """The simulator's view of the ledger: deadline checks, latency, fault points and a commit log."""

    def __init__(self, inner: Ledger, sim: Simulator, faults: InvocationFaults) -> None:
        self.inner = inner
        self.sim = sim
        self.faults = faults

    @property
    def name(self) -> str | None:
        return self.inner.name

    def _call(
        self, point: str | None, op: str, hop: int, owner: str | None, fn: Callable[[], ChainRecord]
    ) -> ChainRecord:
        if point:
            self.faults.point(f"before_{point}")
        self.sim.clock.sleep(self.sim.ledger_latency)  # checks the deadline even when the latency is 0
        record = fn()
        self.sim.commits.append(
            Commit(op, record.chain_id, hop, owner, self.sim.clock.peek(), _chunks(record))
        )
        if point:
            self.faults.point(f"after_{point}")
        return record

    def start(
        self,
        chain_id: str,
        *,
        progress: dict[str, Any],
        event: Any,
        now: float,
        function: str | None = None,
    ) -> tuple[ChainRecord, bool]:
        self.sim.clock.sleep(self.sim.ledger_latency)
        return self.inner.start(chain_id, progress=progress, event=event, now=now, function=function)

    def get(self, chain_id: str) -> ChainRecord | None:
        self.sim.clock.sleep(self.sim.ledger_latency)
        return self.inner.get(chain_id)

    def claim(self, chain_id: str, *, hop: int, owner: str, now: float, lease_until: float) -> ChainRecord:
        return self._call(
            "claim",
            "claim",
            hop,
            owner,
            lambda: self.inner.claim(chain_id, hop=hop, owner=owner, now=now, lease_until=lease_until),
        )

    def checkpoint(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float, lease_until: float
    ) -> ChainRecord:
        return self._call(
            "checkpoint",
            "checkpoint",
            hop,
            owner,
            lambda: self.inner.checkpoint(
                chain_id, hop=hop, owner=owner, progress=progress, now=now, lease_until=lease_until
            ),
        )

    def hand_off(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], now: float
    ) -> ChainRecord:
        return self._call(
            "handoff",
            "hand_off",
            hop,
            owner,
            lambda: self.inner.hand_off(chain_id, hop=hop, owner=owner, progress=progress, now=now),
        )

    def finish(
        self, chain_id: str, *, hop: int, owner: str, progress: dict[str, Any], result: Any, now: float
    ) -> ChainRecord:
        return self._call(
            "finish",
            "finish",
            hop,
            owner,
            lambda: self.inner.finish(
                chain_id, hop=hop, owner=owner, progress=progress, result=result, now=now
            ),
        )

    def fail(self, chain_id: str, *, hop: int, owner: str | None, error: str, now: float) -> ChainRecord:
        return self._call(
            None,
            "fail",
            hop,
            owner,
            lambda: self.inner.fail(chain_id, hop=hop, owner=owner, error=error, now=now),
        )

    def list(self, *, status: ChainStatus | None = None, limit: int = 100) -> list[ChainRecord]:
        self.sim.clock.sleep(self.sim.ledger_latency)
        return self.inner.list(status=status, limit=limit)

    def resume(self, chain_id: str, *, now: float, stall_after: float = 900.0) -> ChainRecord:
        return self._call(
            None, "resume", -1, None, lambda: self.inner.resume(chain_id, now=now, stall_after=stall_after)
        )

    def cancel(self, chain_id: str, *, now: float) -> ChainRecord:
        return self._call(None, "cancel", -1, None, lambda: self.inner.cancel(chain_id, now=now))

    def join(self, chain_id: str, *, part: str, now: float) -> ChainRecord:
        return self._call("join", "join", -1, part, lambda: self.inner.join(chain_id, part=part, now=now))

    def resend(self, chain_id: str, *, hop: int, resends: int, quiet_since: float, now: float) -> ChainRecord:
        return self._call(
            None,
            "resend",
            hop,
            None,
            lambda: self.inner.resend(chain_id, hop=hop, resends=resends, quiet_since=quiet_since, now=now),
        )

    def abort(self, chain_id: str, *, part: str, status: ChainStatus, error: str, now: float) -> ChainRecord:
        return self._call(
            None,
            "abort",
            -1,
            part,
            lambda: self.inner.abort(chain_id, part=part, status=status, error=error, now=now),
        )


def _chunks(record: ChainRecord) -> int:
    return int(record.progress.get("chunks", 0)) if isinstance(record.progress, dict) else 0


class _SimInvoker:
    """``invoke_async`` into the simulator's queue, as the delivery ``parent`` would call Lambda's Invoke."""

    def __init__(self, sim: Simulator, parent: _Delivery, faults: InvocationFaults) -> None:
        self.sim = sim
        self.parent = parent
        self.faults = faults

    def invoke_async(self, function: str, payload: bytes) -> None:
        sim = self.sim
        self.faults.point("before_invoke")
        sim.clock.sleep(sim.invoke_latency)
        if sim.faults.throttle and sim.rng.random() < sim.faults.throttle:
            sim.throttles += 1
            raise InvokeThrottled("Rate Exceeded. (simulated)", sim.throttle_retry_after)
        if not function.startswith(sim.arn):
            raise ConfigurationError(f"the chain invoked {function}, not this function ({sim.arn})")
        sim.invoke_targets.append(function)
        sim.enqueue(json.loads(payload), kind="hand_off", lineage=self.parent.lineage + 1)
        self.faults.point("after_invoke")
