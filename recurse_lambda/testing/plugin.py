"""pytest fixtures for testing ``@recursive`` handlers, registered as the ``recurse_lambda`` plugin.

Installing recurse-lambda makes these available in any test suite:

* ``simulate`` — runs a handler as a whole chain in the simulator (virtual time, an in-memory ledger) and
  returns its :class:`ChainReport`;
* ``embedded_s3`` — moto's S3 server on ``127.0.0.1`` for the session, with helpers to create buckets and objects;
* ``fault_schedule`` — builds a :class:`FaultPlan` from a ``--faults`` spec or keywords;
* ``lambda_context`` and ``virtual_clock`` — a fake Lambda context whose remaining time follows a virtual clock;
* the marker ``@pytest.mark.recurse_lambda(**defaults)`` — defaults for ``simulate`` and ``lambda_context``.

pytest imports this module in every session of everyone who installs the package, so it imports nothing but
pytest: the simulator is imported when a fixture is first used, and moto's server starts only for a test that
asks for ``embedded_s3``. Without the ``local`` extra, only the tests using ``embedded_s3`` fail, with the
command that installs it. When a test fails, the timelines of the chains it simulated are added to its report.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pluggy

    from .. import RecursiveHandler, Run
    from ..local import ChainReport, EmbeddedS3, FakeContext, FaultPlan, Simulator, VirtualClock

__all__ = [
    "ChainSimulation",
    "LocalS3",
    "embedded_s3",
    "fault_schedule",
    "lambda_context",
    "simulate",
    "virtual_clock",
]

_MARKER = "recurse_lambda"
# The simulator's own defaults, except the ledger: a test checks the handler's logic under a ledger shared by all
# containers, as `recurse-lambda simulate` does; `ledger="config"` tests the deployed configuration instead.
_DEFAULTS: dict[str, Any] = {"timeout": 60.0, "ledger": "memory", "seed": 0}
_SHOWN_REPORTS = 3  # a failing property test may have simulated hundreds of chains: show the last few
_SHOWN_LINES = 40
_simulations = pytest.StashKey["ChainSimulation"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**defaults): defaults for the simulate fixture (timeout, faults, seed, ledger, chunk_cost, s3, "
        "any Simulator option) and the lambda_context fixture (timeout)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Add the timelines of the chains a failed test simulated to its report."""
    # An old-style wrapper, not wrapper=True: it works with every pytest this plugin may be loaded into.
    outcome: pluggy.Result[pytest.TestReport] = yield
    report = outcome.get_result()
    simulation = item.stash.get(_simulations, None)
    if report.when == "call" and report.failed and simulation is not None and simulation.reports:
        report.sections.append(("recurse-lambda: simulated chains", _describe(simulation.reports)))


# -- fault schedules ---------------------------------------------------------------------------------------------


def _fault_plan(spec: FaultPlan | str | None = None, /, **faults: Any) -> FaultPlan:
    from ..local import FaultPlan

    plan = FaultPlan.parse(spec) if isinstance(spec, str) else spec or FaultPlan()
    if "crash_at" in faults:
        at = faults["crash_at"]
        pairs: Iterable[tuple[str, int]] = at.items() if isinstance(at, Mapping) else at
        faults["crash_at"] = tuple((str(point), int(n)) for point, n in pairs)
    for name, value in faults.items():
        # FaultPlan range-checks floats only: make duplicate=1 a float so that duplicate=2 is refused.
        if isinstance(value, int) and not isinstance(value, bool):
            faults[name] = float(value)
    return dataclasses.replace(plan, **faults)  # runs FaultPlan's checks again


@pytest.fixture
def fault_schedule() -> Callable[..., FaultPlan]:
    """Builds a :class:`FaultPlan`: ``fault_schedule(spec="", /, **faults)``.

    ``spec`` is a ``recurse-lambda simulate --faults`` string (``"crash@after_handoff=1,duplicate=0.2"``) or a
    :class:`FaultPlan`; keywords (``crash``, ``error``, ``hang``, ``duplicate``, ``throttle``,
    ``recycle``, and ``crash_at`` as ``[(point, n)]`` or ``{point: n}``) replace what the spec says.
    """
    return _fault_plan


# -- clock and context -------------------------------------------------------------------------------------------


def _marker_defaults(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """The ``recurse_lambda`` markers' keywords, the closest (function over class over module) winning."""
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(_MARKER))):
        if mark.args:
            raise TypeError(f"@pytest.mark.{_MARKER} takes keyword arguments only, not {mark.args!r}")
        merged.update(mark.kwargs)
    return merged


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A fresh :class:`VirtualClock` at 0: it moves only when advanced."""
    from ..local import VirtualClock

    return VirtualClock()


@pytest.fixture
def lambda_context(request: pytest.FixtureRequest, virtual_clock: VirtualClock) -> FakeContext:
    """A :class:`FakeContext` for calling a plain Lambda handler directly.

    Its remaining time is ``timeout`` (60 s, or the marker's ``timeout=``) minus what ``virtual_clock`` has been
    advanced since the test began, floored at 0; nothing stops the handler at the deadline. The request id is
    derived from the test's id, so it is the same on every run. Run ``@recursive`` handlers with ``simulate``.
    """
    from ..local import FakeContext

    defaults = _marker_defaults(request.node)
    names = {k: defaults[k] for k in ("function_name", "function_version") if k in defaults}
    return FakeContext(
        clock=virtual_clock,
        deadline=virtual_clock.now() + float(defaults.get("timeout", _DEFAULTS["timeout"])),
        aws_request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, request.node.nodeid)),
        **names,
    )


# -- the embedded S3 ---------------------------------------------------------------------------------------------


class LocalS3:
    """The ``embedded_s3`` fixture's value: a running :class:`EmbeddedS3` and helpers.

    moto keeps buckets for the whole process, so give each test its own: ``create_bucket()`` invents a name.
    """

    def __init__(self, server: EmbeddedS3) -> None:
        self.server = server
        self._helper_client: Any = None

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self) -> Any:
        """A new boto3 S3 client bound to the server, with dummy credentials; pass ``embedded_s3.client`` itself
        as the simulator's ``s3_client``."""
        return self.server.client()

    @property
    def _s3(self) -> Any:
        if self._helper_client is None:
            self._helper_client = self.server.client()
        return self._helper_client

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a new unique name when ``name`` is None) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        self._s3.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes | str | os.PathLike[str]) -> str:
        """Write an object (text is UTF-8 encoded; a path is read), creating the bucket if needed; returns its ETag."""
        if isinstance(body, os.PathLike):
            with open(body, "rb") as f:
                body = f.read()
        data = body.encode() if isinstance(body, str) else body
        try:
            response = self._s3.put_object(Bucket=bucket, Key=key, Body=data)
        except self._s3.exceptions.NoSuchBucket:
            self.create_bucket(bucket)
            response = self._s3.put_object(Bucket=bucket, Key=key, Body=data)
        return str(response["ETag"])

    def get(self, bucket: str, key: str) -> bytes:
        """An object's content."""
        content: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return content

    def __repr__(self) -> str:
        return f"LocalS3({self.server!r})"


@pytest.fixture(scope="session")
def embedded_s3() -> Iterator[LocalS3]:
    """moto's S3 server on ``127.0.0.1`` at a free port, started once per session when a test first asks for it.

    Its clients carry dummy credentials and never reach AWS. Needs the ``local`` extra: without moto, every test
    using this fixture fails with the ``pip install`` command to run.
    """
    from ..local import EmbeddedS3, MissingExtraError

    server = EmbeddedS3()
    try:
        server.start()
    except MissingExtraError as exc:
        missing: MissingExtraError | None = exc
    else:
        missing = None
    if missing is not None:  # failed outside the except block: the report shows the message, not a chain
        pytest.fail(f"embedded_s3: {missing}", pytrace=False)
    try:
        yield LocalS3(server)
    finally:
        server.stop()


# -- whole chains ------------------------------------------------------------------------------------------------


def _paced(handler: RecursiveHandler, clock: VirtualClock, cost: float) -> RecursiveHandler:
    """``handler`` with each chunk (the work before a ``yield``) costing ``cost`` more virtual seconds."""
    from .. import RecursiveHandler

    inner = handler.fn

    def pace(chunks: Generator[Any, Any, Any]) -> Generator[None, None, Any]:
        try:
            while True:
                try:
                    next(chunks)
                except StopIteration as stop:
                    return stop.value
                clock.advance(cost)  # inside the runner's step, so it counts as the chunk's own time
                yield
        finally:
            chunks.close()  # a hand-off or a kill closes the user's generator too (its readers stop)

    @functools.wraps(inner)  # the runner keys warm-container markers by the function's qualified name
    def fn(event: Any, state: Any, run: Run) -> Any:
        out = inner(event, state, run)
        return pace(out) if inspect.isgenerator(out) else out  # a plain function: a one-hop chain, unpaced

    return RecursiveHandler(fn, handler.config)


class ChainSimulation:
    """The ``simulate`` fixture's value: ``simulate(handler, event, **options) -> ChainReport``.

    Options are :class:`Simulator`'s (``timeout``, ``ledger``, ``seed``, ``max_retry_attempts``,
    ``recursion``, …) plus:

    * ``faults`` — a :class:`FaultPlan` or a ``--faults`` spec string;
    * ``chunk_cost`` — virtual seconds each chunk costs, added at every ``yield``, so that a handler that does not
      advance a clock itself spans hops deterministically;
    * ``s3=True`` — the session's ``embedded_s3`` as the handler's S3;
    * ``clock`` — default: a new :class:`VirtualClock` per call.

    Defaults: a 60 s timeout, ``ledger="memory"``, seed 0, overridden by ``@pytest.mark.recurse_lambda(...)``.
    """

    def __init__(self, defaults: Mapping[str, Any], s3: Callable[[], LocalS3]) -> None:
        self._defaults = dict(defaults)
        self.reports: list[ChainReport] = []
        """The report of every chain this test simulated (a failed test shows the last few)."""
        self.last: Simulator | None = None
        """The last simulator built, for its ``commits`` log or its ``ledger``."""
        self._s3 = s3

    def __call__(self, handler: RecursiveHandler, event: Any, /, **options: Any) -> ChainReport:
        """Run ``handler`` as a chain from ``event`` and return the report (``.raise_for_status()`` to assert)."""
        report = self.simulator(handler, **options).run(event)
        self.reports.append(report)
        return report

    def simulator(self, handler: RecursiveHandler, /, **options: Any) -> Simulator:
        """The :class:`Simulator` that ``simulate`` would run, for several runs or its log."""
        from .. import RecursiveHandler
        from ..local import Simulator, VirtualClock

        opts = {**_DEFAULTS, **self._defaults, **options}
        faults, chunk_cost, s3 = opts.pop("faults", None), opts.pop("chunk_cost", None), opts.pop("s3", False)
        clock = opts.pop("clock", None) or VirtualClock()
        if chunk_cost is not None and isinstance(handler, RecursiveHandler):
            if not isinstance(clock, VirtualClock):
                raise ValueError(
                    "chunk_cost advances a VirtualClock; with a WallClock or CpuClock work costs real time"
                )
            handler = _paced(handler, clock, float(chunk_cost))
        if s3:
            if opts.get("s3_client") is not None:
                raise ValueError("pass s3=True (the embedded S3) or s3_client=, not both")
            opts["s3_client"] = self._s3().client
        self.last = Simulator(handler, clock=clock, faults=_fault_plan(faults), **opts)
        return self.last


@pytest.fixture
def simulate(request: pytest.FixtureRequest) -> ChainSimulation:
    """Runs a ``@recursive`` handler as a whole chain: ``simulate(handler, event, **options) -> ChainReport``.

    In virtual time with an in-memory ledger by default; see :class:`ChainSimulation` for the options. The
    embedded S3 starts only when a call passes ``s3=True``.
    """

    def s3() -> LocalS3:
        server: LocalS3 = request.getfixturevalue("embedded_s3")
        return server

    simulation = ChainSimulation(_marker_defaults(request.node), s3)
    request.node.stash[_simulations] = simulation
    return simulation


def _describe(reports: list[ChainReport]) -> str:
    parts = []
    if len(reports) > _SHOWN_REPORTS:
        parts.append(f"({len(reports) - _SHOWN_REPORTS} earlier chains not shown)")
    for report in reports[-_SHOWN_REPORTS:]:
        lines = report.timeline().splitlines()
        if len(lines) > _SHOWN_LINES + 2:  # keep the heading and the totals, cut the middle of a long chain
            half = _SHOWN_LINES // 2
            lines = [
                *lines[: half + 1],
                f"     … {len(lines) - _SHOWN_LINES - 2} lines not shown …",
                *lines[-half - 1 :],
            ]
        text = [f"chain {report.chain_id}", *lines]
        if report.status != "SUCCEEDED":
            text += [f"error: {report.error}", f"last committed state: {report.last_state!r}"]
        parts.append("\n".join(text))
    return "\n\n".join(parts)
