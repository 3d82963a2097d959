"""The core's shape: pure transitions, the ports, Envelope.from_record, and no imports of AWS or outer layers."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import recurse_lambda
from recurse_lambda import (
    ChainRecord,
    ChainStatus,
    Envelope,
    EnvelopeCodec,
    InMemoryLedger,
    Ledger,
    LedgerConflict,
    LostLeaseError,
)
from recurse_lambda.core import ports, transitions
from recurse_lambda.core.ledger import LedgerAdmin, LedgerWriter

CORE = Path(recurse_lambda.__file__).parent / "core"
FORBIDDEN = (
    "boto3",
    "botocore",
    "recurse_lambda.aws",
    "recurse_lambda.s3",
    "recurse_lambda.local",
    "recurse_lambda.cli",
)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (lazy imports in functions included), as absolute names."""
    package = "recurse_lambda.core"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def type_checking_lines(path: Path) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_nothing_from_aws_or_the_outer_layers(path: Path) -> None:
    bad = [
        f"{path.name}:{line} imports {name}"
        for line, name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad
    typing_only = type_checking_lines(path)  # the core refers to an outer layer's types only for mypy
    outer = [
        (line, name)
        for line, name in imported_modules(path)
        if name.startswith("recurse_lambda.")
        and not name.startswith(("recurse_lambda.core", "recurse_lambda.errors"))
        and line not in typing_only
    ]
    assert not outer


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    names = {name for _, name in imported_modules(CORE / "ports.py")}
    assert {"recurse_lambda.core.model", "recurse_lambda.shards.plan"} <= names


# ---------------------------------------------------------------------------------------------- transitions

records = st.builds(
    ChainRecord,
    chain_id=st.just("c"),
    status=st.sampled_from(ChainStatus),
    hop=st.integers(0, 3),
    owner=st.sampled_from([None, "r1", "r2"]),
    lease_until=st.sampled_from([0.0, 150.0, 300.0]),
    progress=st.just({"state": {"n": [1]}, "chunks": 1, "pins": {}}),
    attempts=st.integers(0, 3),
    event=st.just({"e": [1]}),
    started_at=st.just(50.0),
    updated_at=st.sampled_from([60.0, 150.0, 250.0]),
    joined=st.sampled_from([(), ("0",), ("0", "1")]),
    resends=st.integers(0, 2),
    resent_hop=st.sampled_from([None, 0, 1]),
)

OPERATIONS: list[tuple[str, dict[str, Any]]] = [
    ("claim", {"hop": 0, "owner": "r1", "now": 200.0, "lease_until": 400.0}),
    ("checkpoint", {"hop": 0, "owner": "r1", "progress": {"n": 2}, "now": 200.0, "lease_until": 400.0}),
    ("hand_off", {"hop": 0, "owner": "r1", "progress": {"n": 2}, "now": 200.0}),
    ("finish", {"hop": 0, "owner": "r1", "progress": {"n": 2}, "result": 1, "now": 200.0, "retention": 10.0}),
    ("fail", {"hop": 0, "owner": "r2", "error": "x", "now": 200.0, "retention": 10.0}),
    ("cancel", {"now": 200.0, "retention": 10.0}),
    ("resume", {"now": 2000.0, "stall_after": 900.0}),
    ("join", {"part": "1", "now": 200.0}),
    ("resend", {"hop": 0, "resends": 0, "quiet_since": 200.0, "now": 300.0}),
    ("abort", {"part": "1", "status": ChainStatus.FAILED, "error": "x", "now": 200.0, "retention": 10.0}),
]


@given(current=st.one_of(st.none(), records), op=st.sampled_from(OPERATIONS))
def test_a_transition_is_pure_and_refuses_with_the_current_record(
    current: ChainRecord | None, op: tuple[str, dict[str, Any]]
) -> None:
    name, args = op
    before = copy.deepcopy(current)
    try:
        new: ChainRecord | None = getattr(transitions, name)(current, "c", **args)
        refused: LedgerConflict | None = None
    except LedgerConflict as exc:
        new, refused = None, exc
    assert current == before  # nothing mutated: records are frozen, and their dicts untouched
    if refused is not None:
        assert refused.current is current
        fenced = name in ("checkpoint", "hand_off", "finish")
        assert isinstance(refused, LostLeaseError) is fenced
    else:
        assert new is not None and current is not None and new.chain_id == "c"
        # Each write stamps its time, except a join of a part already in (which writes nothing).
        assert new.updated_at == args["now"] or new is current


def test_start_creates_or_returns_the_live_record() -> None:
    fresh, created = transitions.start(None, "c", progress={"n": 0}, event={}, now=1.0, function="f")
    assert created and (fresh.status, fresh.hop, fresh.owner, fresh.function) == (
        ChainStatus.RUNNING,
        0,
        None,
        "f",
    )
    ended = transitions.cancel(fresh, "c", now=2.0, retention=10.0)
    assert transitions.start(ended, "c", progress={}, event={}, now=11.0) == (ended, False)
    again, created = transitions.start(ended, "c", progress={}, event={"e": 1}, now=12.0)
    assert created and again.event == {"e": 1} and again.started_at == 12.0


def test_join_of_a_part_already_joined_returns_the_same_record() -> None:
    record, _ = transitions.start(None, "c", progress={}, event={}, now=1.0)
    joined = transitions.join(record, "c", part="0", now=2.0)
    assert transitions.join(joined, "c", part="0", now=3.0) is joined


def test_abort_refuses_a_status_that_is_not_an_ending_whatever_the_record() -> None:
    with pytest.raises(ValueError):
        transitions.abort(
            None, "c", part="0", status=ChainStatus.SUCCEEDED, error="x", now=1.0, retention=1.0
        )


# ---------------------------------------------------------------------------------------------- ports and model


def test_the_ledger_protocol_has_an_admin_and_a_writer_side_and_a_name() -> None:
    ledger = InMemoryLedger()
    assert isinstance(ledger, Ledger) and isinstance(ledger, LedgerAdmin) and isinstance(ledger, LedgerWriter)
    assert ledger.name is None and ports.Ledger is Ledger
    aws = pytest.importorskip("recurse_lambda.aws")
    assert aws.DynamoDBLedger("chains").name == "chains"


def test_an_envelope_from_a_record_encodes_as_the_hand_built_one_did() -> None:
    record, _ = transitions.start(None, "c", progress={"state": {"n": 1}}, event={"e": 1}, now=5.0)
    record = (
        transitions.resume(transitions.cancel(record, "c", now=6.0, retention=1.0), "c", now=7.0)
        if False
        else record
    )
    env = Envelope.from_record(record, code_version="7")
    old = Envelope(record.chain_id, record.hop, record.progress, record.event, record.started_at, "7")
    assert env == old and EnvelopeCodec().encode(env) == EnvelopeCodec().encode(old)
    assert Envelope.from_record(record).code_version == "$LATEST"
