"""What the CLI's commands share: usage errors, progress per invocation, quiet logging, loading handlers."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from ..chain.handler import RecursiveHandler
from ..chain.world import InvocationStats, World
from ..core.ports import Ledger
from ..core.state_codec import strict_dumps

if TYPE_CHECKING:  # the simulator is imported by the commands that run it, not by chain control
    from ..local import ChainReport


class UsageError(Exception):
    """A bad argument: the CLI prints the message and exits with status 2."""


@dataclass(frozen=True)
class HopView:
    """One finished invocation, as the progress display sees it."""

    number: int  # invocations so far, this one included
    hop: int | None
    chunks: int
    outcome: str  # the runner's outcome, or timeout / crash / error
    state: Any  # the handler's state object as the invocation left it (uncommitted if it died), or None
    elapsed: float  # wall seconds since the run began

    @property
    def committed(self) -> bool:
        """Whether ``state`` is what the invocation committed (it handed off or finished), not only how far
        the handler got before it timed out, crashed, raised, lost its lease or was failed."""
        return self.outcome in ("handed_off", "succeeded")


Progress = Callable[[HopView], None]


class WatchedHandler(RecursiveHandler):
    """A copy of a ``@recursive`` handler that reports each invocation to ``progress`` when it ends."""

    def __init__(self, inner: RecursiveHandler, progress: Progress) -> None:
        fn = inner.fn
        # Invocations may overlap (the simulator interleaves them in virtual time): keyed by request id.
        self._states: dict[str, Any] = {}
        self._count = 0
        self._t0 = time.monotonic()

        # Keep a reference to the live state object: the runner mutates it in place, so at the end of the
        # invocation it shows how far the handler got.
        @functools.wraps(fn)
        def keep_state(event: Any, state: Any, run: Any) -> Any:
            self._states[run.request_id] = state
            return fn(event, state, run)

        super().__init__(keep_state, inner.config)
        self.progress = progress

    def handle(self, event: Any, context: Any, world: World) -> dict[str, Any]:
        from ..local import InvocationKilled, SimulatedCrash

        seen: list[InvocationStats] = []
        outer = world.observer

        def observe(stats: InvocationStats) -> None:
            seen.append(stats)
            if outer is not None:
                outer(stats)

        self._count += 1
        number, request_id = self._count, str(context.aws_request_id)
        outcome = ""
        try:
            return super().handle(event, context, dataclasses.replace(world, observer=observe))
        except InvocationKilled:
            outcome = "timeout"
            raise
        except SimulatedCrash:
            outcome = "crash"
            raise
        except Exception as exc:
            outcome = f"error ({type(exc).__name__})"
            raise
        finally:
            stats = seen[0] if seen else None
            if stats is not None and not outcome:
                outcome = str(stats.outcome or "")
            view = HopView(
                number=number,
                hop=stats.hop if stats else None,
                chunks=stats.chunks if stats else 0,
                outcome=outcome,
                state=self._states.pop(request_id, None),
                elapsed=time.monotonic() - self._t0,
            )
            self.progress(view)


def preload() -> None:
    """Import what ``run.s3`` imports lazily, before the chain starts.

    On Lambda that import happens once per container, at init; in the simulator it would land in the first
    chunk and make it look three times longer than the rest, which the budget policy takes as the chunk size.
    """
    importlib.import_module("..s3", __package__)


def warm_up(client: Any, bucket: str, key: str) -> None:
    """One HEAD and a one-byte GET before the chain starts.

    The first request of each kind pays one-time costs (botocore parses the operation's model, moto sets its
    backend up): a tenth of a second that would otherwise land in the chain's first chunk, and the budget
    policy would take it as the size of every chunk to come.
    """
    client.head_object(Bucket=bucket, Key=key)
    client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read()


def generic_progress(stream: TextIO) -> Progress:
    """A progress line per invocation: number, hop, outcome, chunks and the state it reached."""

    def show(view: HopView) -> None:
        hop = "-" if view.hop is None else str(view.hop)
        state = ""
        if view.state is not None and hasattr(view.state, "model_dump_json"):
            # The state's JSON as a hop hands it on: NaN and infinities spelled "NaN", "Infinity", "-Infinity".
            state = strict_dumps(view.state.model_dump(mode="json", fallback=repr), separators=(",", ":"))
            label = "state" if view.committed else "uncommitted state"
            state = f"  {label} {state if len(state) <= 80 else state[:77] + '...'}"
        print(
            f"[{view.elapsed:7.2f}s] #{view.number:<3} hop {hop:>3}  {view.outcome or '?':<12} "
            f"chunks {view.chunks:>4}{state}",
            file=stream,
            flush=True,
        )

    return show


def add_timeline_option(parser: Any) -> None:
    parser.add_argument(
        "--timeline",
        metavar="FILE.svg",
        type=Path,
        help="also draw the chain as an SVG picture (lanes per chain, bars per invocation) in FILE.svg",
    )


def check_timeline_path(path: Path | None) -> None:
    """Refuse a ``--timeline`` file that cannot be written now, rather than after the chain has run."""
    if path is None:
        return
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"--timeline {path}: is a directory")
    if not parent.is_dir():
        raise UsageError(f"--timeline {path}: no such directory: {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--timeline {path}: permission denied")


def write_timeline(report: ChainReport, path: Path | None, title: str) -> bool:
    """Write the SVG timeline if asked, and say where it went (on stderr: stdout may end with JSON)."""
    if path is None:
        return True
    try:
        report.write_timeline(path, title=title)
    except OSError as exc:
        print(f"cannot write the timeline to {path}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return False
    print(f"timeline: {path}", file=sys.stderr, flush=True)
    return True


class _NoTraceback(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return ""


@contextlib.contextmanager
def runner_logs(stream: TextIO, verbose: bool) -> Iterator[None]:
    """Show the runner's warnings as short lines on ``stream`` (tracebacks only when ``verbose``)."""
    logger = logging.getLogger("recurse_lambda")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("  ! %(message)s") if verbose else _NoTraceback("  ! %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False  # the CLI owns the terminal; a root handler would print everything twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def load_module_from_file(name: str, path: Path) -> ModuleType:
    """Import a file as module ``name`` (registered in ``sys.modules`` so pydantic can resolve its models)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@contextlib.contextmanager
def cwd_first_on_path() -> Iterator[None]:
    """Put the current directory first on ``sys.path`` while a command runs, as ``python -m`` does.

    Kept for the whole run, not just the import: a handler may import its own modules lazily.
    """
    cwd = os.getcwd()
    added = sys.path[:1] != [cwd]
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_attr(target: str, expected: str) -> Any:
    """The object ``MODULE:ATTR`` (or ``MODULE:OBJ.ATTR``) names, imported from ``sys.path``."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected {expected}, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(f"cannot import module {module_name!r} from {os.getcwd()}: {exc}") from exc
        raise UsageError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module itself is broken: say so, without a traceback of ours
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def resolve_handler(target: str) -> RecursiveHandler:
    """``MODULE:FUNCTION`` (or ``MODULE:OBJ.ATTR``), imported from ``sys.path`` (see :func:`cwd_first_on_path`)."""
    obj = _import_attr(target, "MODULE:FUNCTION (e.g. examples.line_count:handler)")
    if not isinstance(obj, RecursiveHandler):
        raise UsageError(
            f"{target} is not a @recursive handler (it is {type(obj).__name__}); decorate it with "
            "@recursive from recurse_lambda"
        )
    return obj


def resolve_ledger(target: str) -> Ledger:
    """``--ledger MODULE:ATTR``: a :class:`Ledger` object, or a zero-argument factory that returns one."""
    obj = _import_attr(
        target, "MODULE:ATTR naming a ledger or a factory of one (e.g. sqlite_ledger:from_environment)"
    )
    if isinstance(obj, type) or not isinstance(obj, Ledger):  # a class has the methods too: call it
        if not callable(obj):
            raise UsageError(
                f"{target} is neither a ledger nor a factory of one (it is {type(obj).__name__})"
            )
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(f"--ledger {target}: calling it failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(obj, type) or not isinstance(obj, Ledger):
            raise UsageError(
                f"--ledger {target} returned {type(obj).__name__}, not a ledger (see recurse_lambda.Ledger)"
            )
    return obj


def parse_event(text: str) -> Any:
    """``--event``: inline JSON, ``@FILE`` holding JSON, or ``@-`` for standard input."""
    source = "--event"
    if text.startswith("@"):
        path = text[1:]
        source = "standard input" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the event file {path!r}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the event in {source} is not valid JSON: {exc}") from exc
