"""An in-process model of AWS Lambda's asynchronous invocation, for running whole chains locally (DESIGN §8).

With a :class:`VirtualClock` (exact, repeatable), invocations overlap in virtual time as they would on Lambda:
each runs on its own thread and a scheduler resumes, one at a time, whichever is due first, so a duplicate
delivery meets a live owner. With a :class:`WallClock` (real work, skipped waits), invocations run one at a time
in the order their deliveries fall due. Modelled: the async queue and its delivery delay, retries of
a failed or timed-out invocation with the same request id after about 1 and 2 minutes, duplicate deliveries
with new request ids, throttled invokes, timeouts that kill the invocation at its deadline, warm and recycled
containers, recursive-loop termination after 16 invocations, and the on-failure destination.

After a timeout or a crash Lambda re-initialises the runtime: the container's memory (its warm state) is
replaced, its /tmp directory is kept. After a handled exception the runtime carries on.

Not modelled: concurrency limits (every delivery gets a container at once), and overlap under a WallClock.
"""

from __future__ import annotations

import heapq
import os
import random
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import (
    ConfigurationError,
    InMemoryLedger,
    InvocationStats,
    Ledger,
    RecursiveHandler,
    SpillStore,
    WarmState,
    World,
)
from ..shards import ObjectInfo, SourceRef
from ._clocks import InvocationKilled, SimClock, VirtualClock
from ._context import FakeContext
from ._faults import FaultPlan, InjectedError, InvocationFaults, SimulatedCrash
from ._report import ChainReport, InvocationRow
from ._scheduler import Scheduler
from ._sim_adapters import Commit, _SimInvoker, _SimLedger

RECURSION_LIMIT = 16  # Lambda stops a recursive loop after about 16 invocations when the setting is Terminate
# The template's forwarder queue: a record whose hand-back raised is delivered again after the visibility timeout,
# up to maxReceiveCount times (then it goes to the unrecorded-failures queue).
FORWARDER_VISIBILITY = 180.0
FORWARDER_RECEIVES = 5


@dataclass(order=True)
class _Delivery:
    time: float
    seq: int
    payload: Any = field(compare=False)
    request_id: str = field(compare=False)
    attempt: int = field(compare=False)
    kind: str = field(compare=False)
    lineage: int = field(compare=False)


class _Container:
    def __init__(
        self, number: int, tmp_dir: str, clients: Callable[[str], Any], cache: Callable[[str], Any] | None
    ) -> None:
        self.number = number
        self.tmp_dir = tmp_dir
        self.clients = clients
        self.cache = cache
        self.warm = self._fresh_warm_state()
        self.used = False
        self.busy = False

    def _fresh_warm_state(self) -> WarmState:
        cache = self.cache(self.tmp_dir) if self.cache is not None else None
        return WarmState(client_factory=self.clients, tmp_dir=self.tmp_dir, cache=cache)

    def reset_runtime(self) -> None:
        """What Lambda does after a timeout or crash: memory is lost, /tmp is kept."""
        self.warm = self._fresh_warm_state()


class Simulator:
    """Runs a ``@recursive`` handler as a chain, in-process, with Lambda's delivery semantics and faults."""

    def __init__(
        self,
        handler: RecursiveHandler,
        *,
        timeout: float = 60.0,
        clock: SimClock | None = None,
        ledger: Ledger | str | None = "config",
        max_retry_attempts: int = 2,
        retry_delays: tuple[float, float] = (60.0, 120.0),
        recursion: str = "Allow",
        faults: FaultPlan | None = None,
        seed: int = 0,
        s3_client: Callable[[], Any] | None = None,
        spill: SpillStore | None = None,
        environ: Mapping[str, str] | None = None,
        function_name: str = "recurse-lambda-sim",
        function_version: str = "$LATEST",
        delivery_delay: float = 0.05,
        invoke_latency: float = 0.02,
        ledger_latency: float = 0.0,
        throttle_retry_after: float = 0.5,
        duplicate_delay: float = 30.0,
        route_failures: bool = True,
        max_invocations: int = 100_000,
        concurrent: bool | None = None,
        cache: Callable[[str], Any] | None = None,
        metrics_sink: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(handler, RecursiveHandler):
            raise ConfigurationError(f"the simulator runs @recursive handlers, not {handler!r}")
        if not 0 <= max_retry_attempts <= 2:
            raise ConfigurationError("max_retry_attempts must be 0, 1 or 2, as in Lambda")
        if recursion not in ("Allow", "Terminate"):
            raise ConfigurationError("recursion must be 'Allow' or 'Terminate'")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self.handler = handler
        self.timeout = timeout
        self.clock = clock if clock is not None else VirtualClock()
        inner = {"config": handler.config.ledger, "memory": InMemoryLedger()}.get(ledger, ledger)  # type: ignore[arg-type]
        if isinstance(inner, str):
            raise ConfigurationError("ledger must be a Ledger, None (stateless mode), 'config' or 'memory'")
        self.ledger: Ledger | None = inner
        self.max_retry_attempts = max_retry_attempts
        self.retry_delays = retry_delays
        self.recursion = recursion
        self.faults = faults or FaultPlan()
        self.rng = random.Random(seed)
        self.s3_client = s3_client
        self.spill = spill
        self.environ = dict(environ or {})
        self.function_name = function_name
        self.function_version = function_version
        self.delivery_delay = delivery_delay
        self.invoke_latency = invoke_latency
        self.ledger_latency = ledger_latency
        self.throttle_retry_after = throttle_retry_after
        self.duplicate_delay = duplicate_delay
        self.route_failures = route_failures
        self.max_invocations = max_invocations
        # Builds each container's S3 content cache from its tmp directory, e.g.
        # ``lambda tmp: S3Cache(tmp_dir=tmp, clock=sim.clock)``; default: the handler's default cache.
        self.cache = cache
        self.metrics_sink = metrics_sink  # where EMF lines of handlers with metrics=True go (default: stdout)
        if concurrent and not isinstance(self.clock, VirtualClock):
            raise ConfigurationError("concurrent invocations need a VirtualClock")
        self.concurrent = isinstance(self.clock, VirtualClock) if concurrent is None else concurrent
        self.commits: list[Commit] = []
        self.invoke_targets: list[str] = []
        self.throttles = 0
        self._queue: list[_Delivery] = []
        self._seq = 0
        self._containers: list[_Container] = []
        self._containers_made = 0
        self._tmp_root: str | None = None
        self._scheduler: Scheduler | None = None
        self._report: ChainReport | None = None
        self._number = 0

    # ------------------------------------------------------------------ public

    def run(self, event: Any) -> ChainReport:
        """Deliver ``event`` as an asynchronous invocation and run the chain until nothing is left to deliver."""
        report = ChainReport(chain_id=None, status="RUNNING", started=self.clock.peek())
        self._report = report
        if self.concurrent:
            assert isinstance(self.clock, VirtualClock)
            self._scheduler = self.clock.scheduler = Scheduler(self.clock)
        try:
            self.enqueue(event, kind="first", lineage=0)
            if self._scheduler is not None:
                self._scheduler.run()
            while self._queue:
                delivery = heapq.heappop(self._queue)
                self.clock.advance_to(delivery.time)
                self._deliver(delivery)
        finally:
            if isinstance(self.clock, VirtualClock):
                self.clock.scheduler = None
            self._scheduler = self._report = None
        report.ended = self.clock.peek()
        self._conclude(report)
        return report

    def new_request_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    # ------------------------------------------------------------------ queue

    def enqueue(self, payload: Any, *, kind: str, lineage: int, delay: float | None = None) -> None:
        at = self.clock.peek() + (self.delivery_delay if delay is None else delay)
        self._push(_Delivery(at, 0, payload, self.new_request_id(), 1, kind, lineage))
        if (
            kind in ("first", "hand_off")
            and self.faults.duplicate
            and self.rng.random() < self.faults.duplicate
        ):
            dup_at = at + self.rng.uniform(0.0, self.duplicate_delay)
            self._push(_Delivery(dup_at, 0, payload, self.new_request_id(), 1, "duplicate", lineage))

    def _push(self, delivery: _Delivery) -> None:
        self._seq += 1
        delivery.seq = self._seq
        if self._scheduler is not None:
            self._scheduler.at(delivery.time, lambda: self._deliver(delivery))
        else:
            heapq.heappush(self._queue, delivery)

    def _container(self) -> _Container:
        """An idle warm container (the newest idle one), or a cold new one; recycling replaces it."""
        idle = [c for c in self._containers if not c.busy]
        recycle = self.faults.recycle and self.rng.random() < self.faults.recycle
        if idle and not recycle:
            return idle[-1]
        if idle:
            self._containers.remove(idle[-1])
        factory = self.s3_client

        def clients(service: str) -> Any:
            if service == "s3" and factory is not None:
                return factory()
            raise ConfigurationError(f"the simulator provides no {service!r} client")

        if self._tmp_root is None:
            self._tmp_root = tempfile.mkdtemp(prefix="recurse-lambda-sim-")
            weakref.finalize(self, shutil.rmtree, self._tmp_root, True)
        tmp_dir = os.path.join(self._tmp_root, f"container-{self._containers_made}")
        os.makedirs(tmp_dir)
        container = _Container(self._containers_made, tmp_dir, clients, self.cache)
        self._containers_made += 1
        self._containers.append(container)
        return container

    # ------------------------------------------------------------------ one invocation

    def _deliver(self, d: _Delivery) -> None:
        report = self._report
        assert report is not None
        if self.recursion == "Terminate" and d.lineage >= RECURSION_LIMIT and d.kind != "destination":
            self._give_up(d, "RecursiveInvocationException", report)
            return
        self._number += 1
        if self._number > self.max_invocations:
            raise RuntimeError(f"the simulation passed max_invocations={self.max_invocations}")
        container = self._container()
        container.busy = True
        start = self.clock.peek()
        row = InvocationRow(
            number=self._number,
            request_id=d.request_id,
            kind=d.kind,
            attempt=d.attempt,
            container=container.number,
            cold=not container.used,
            start=start,
            end=start,
        )
        container.used = True
        faults = InvocationFaults(self.faults, self.rng, self._number, start, self.timeout)
        live: list[InvocationStats] = []
        world = World(
            clock=self.clock,
            invoker=_SimInvoker(self, d, faults),
            warm=container.warm,
            ledger=_SimLedger(self.ledger, self, faults) if self.ledger is not None else None,
            spill=self.spill,
            s3_client=container.warm.client_getter("s3"),
            lister=_lister(container.warm.client_getter("s3")),
            environ=self.environ,
            on_safe_point=lambda: self._safe_point(faults),
            observer=live.append,
        )
        if self.metrics_sink is not None:
            world.metrics_sink = self.metrics_sink
        context = FakeContext(
            clock=self.clock,
            deadline=start + self.timeout,
            aws_request_id=d.request_id,
            function_name=self.function_name,
            function_version=self.function_version,
        )
        self.clock.deadline = start + self.timeout
        failed: str | None = None
        try:
            response = self.handler.handle(d.payload, context, world)
            if d.kind == "first":
                report.first_response = response
            if not live and isinstance(response, dict) and {"chains", "batchItemFailures"} & set(response):
                row.outcome = "dispatched"  # a trigger event: it started chains rather than running one
            if isinstance(response, dict) and response.get("outcome") == "succeeded":
                report.result = response.get("result")  # the ledger's copy wins in _conclude
            if isinstance(response, dict) and response.get("outcome") == "failed":
                report.error, report.last_state = response.get("error"), response.get("last_state")
        except InvocationKilled:
            failed, row.outcome = "timeout", "timeout"
        except SimulatedCrash as crash:
            failed, row.outcome, row.error = "crash", "crash", str(crash)
        except Exception as exc:  # a function error: Lambda retries it
            failed, row.outcome, row.error = "error", "error", f"{type(exc).__name__}: {exc}"
        finally:
            self.clock.deadline = None
            container.busy = False
            row.end = self.clock.peek()
        if failed in ("timeout", "crash"):
            container.reset_runtime()
        if live:
            stats = live[0]
            row.hop, row.chunks, row.chunk_time = stats.hop, stats.chunks, stats.chunk_time
            row.chain_id = stats.chain_id
            if report.chain_id is None and stats.chain_id is not None and d.lineage == 0:
                # The chain of the event that was run (and of its retries and duplicates), not the first chain
                # to end an invocation: a sharded job's shards can end theirs before the job's split does.
                report.chain_id = stats.chain_id
            if failed is None and stats.outcome is not None:
                row.outcome = str(stats.outcome)
        report.rows.append(row)
        if failed is not None and d.kind != "destination":
            self._retry_or_give_up(d, failed, report)
        elif failed is not None and d.attempt < FORWARDER_RECEIVES:  # the forwarder's queue delivers it again
            at = self.clock.peek() + FORWARDER_VISIBILITY
            self._push(
                _Delivery(at, 0, d.payload, self.new_request_id(), d.attempt + 1, "destination", d.lineage)
            )

    def _safe_point(self, faults: InvocationFaults) -> None:
        t = self.clock.peek()
        if faults.crash_point == "safe_point" or (faults.crash_time is not None and t >= faults.crash_time):
            raise SimulatedCrash("injected crash at a safe point")
        if faults.error_time is not None and t >= faults.error_time:
            faults.error_time = None
            raise InjectedError("injected function error at a safe point")
        if faults.hang_time is not None and t >= faults.hang_time and self.clock.deadline is not None:
            self.clock.sleep(self.clock.deadline - t)  # the chunk never returns: the deadline kills it

    def _retry_or_give_up(self, d: _Delivery, why: str, report: ChainReport) -> None:
        """Lambda retries a failed or timed-out event with the same request id, then gives it up."""
        if d.attempt <= self.max_retry_attempts:
            delay = self.retry_delays[min(d.attempt - 1, len(self.retry_delays) - 1)]
            self._push(
                _Delivery(
                    self.clock.peek() + delay, 0, d.payload, d.request_id, d.attempt + 1, "retry", d.lineage
                )
            )
        else:
            self._give_up(d, "RetriesExhausted", report, why)

    def _give_up(self, d: _Delivery, condition: str, report: ChainReport, why: str = "") -> None:
        record = {
            "version": "1.0",
            "timestamp": f"{self.clock.time():.3f}",
            "requestContext": {
                "requestId": d.request_id,
                "functionArn": f"{self.arn}:{self.function_version}",
                "condition": condition,
                "approximateInvokeCount": d.attempt,
            },
            "requestPayload": d.payload,
            "responseContext": {"statusCode": 200, "executedVersion": self.function_version},
            "responsePayload": {"errorType": why or condition},
        }
        report.destination.append(record)
        if self.route_failures:
            # The record keeps the lineage of the event it reports: a hop resent from it is still in the loop.
            self._push(
                _Delivery(self.clock.peek(), 0, record, self.new_request_id(), 1, "destination", d.lineage)
            )

    def _conclude(self, report: ChainReport) -> None:
        report.rows.sort(key=lambda r: (r.start, r.number))  # rows are appended as invocations end
        for chain_id in dict.fromkeys(r.chain_id for r in report.rows if r.chain_id is not None):
            record = self.ledger.get(chain_id) if self.ledger is not None else None
            seen = {r.outcome for r in report.rows if r.chain_id == chain_id}  # stateless: what the rows say
            status = "SUCCEEDED" if "succeeded" in seen else "FAILED" if "failed" in seen else "RUNNING"
            report.chains[chain_id] = str(record.status) if record is not None else status
        first = report.first_response
        if report.chain_id is None and isinstance(first, dict) and first.get("outcome") == "rejected":
            report.status, report.error = "REJECTED", first.get("error")  # no chain was ever started
            return
        if report.chain_id is None:
            return
        if self.ledger is not None:
            record = self.ledger.get(report.chain_id)
            if record is not None:
                report.status = str(record.status)
                report.result, report.error = record.result, record.error
                report.last_state = record.progress.get("state")
            return
        # Stateless mode: the ledger is missing, so read the ending from what the invocations said.
        if any(r.outcome == "succeeded" for r in report.rows):
            report.status = "SUCCEEDED"
        elif report.destination or any(r.outcome == "failed" for r in report.rows):
            report.status = "FAILED"


def _lister(client: Callable[[], Any]) -> Callable[[SourceRef], list[ObjectInfo]]:
    """Lists a sharded job's source with the simulator's S3 client (made on first use)."""

    def lister(ref: SourceRef) -> list[ObjectInfo]:
        from ..s3 import list_objects

        return list_objects(client(), ref)

    return lister
