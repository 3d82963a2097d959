"""``recurse-lambda status | list | cancel | resume --ledger MODULE:ATTR``: control commands over any ledger, shown
with the SQLite ledger of examples/ (no AWS, no network)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda import ChainStatus
from recurse_lambda.cli import main
from recurse_lambda.testing.ledger_contract import P1

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")
FACTORY = "sqlite_ledger:from_environment"


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A SQLite ledger file named by $RECURSE_LAMBDA_SQLITE, examples/ on sys.path, and no AWS region or table."""
    monkeypatch.syspath_prepend(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECURSE_LAMBDA_SQLITE", str(tmp_path / "chains.db"))
    monkeypatch.setenv("RECURSE_LAMBDA_TABLE", "ignored-when-a-ledger-is-named")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    from sqlite_ledger import SqliteLedger

    yield SqliteLedger(tmp_path / "chains.db")
    sys.modules.pop("sqlite_ledger", None)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_list_and_cancel_run_on_the_sqlite_ledger_without_aws(
    ledger: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger.start("c1", progress=P1, event={"k": 1}, now=100.0)
    ledger.start("c2", progress=P1, event={}, now=200.0)
    code, out, _ = cli(capsys, "status", "c1", "--ledger", FACTORY, "--json", "--state")
    assert code == 0
    shown = json.loads(out)
    assert (shown["status"], shown["chunks"], shown["state"], shown["event"]) == (
        "RUNNING",
        5,
        {"n": 1},
        {"k": 1},
    )
    code, out, _ = cli(capsys, "list", "--ledger", FACTORY, "--json")
    assert code == 0 and [r["chain_id"] for r in json.loads(out)] == ["c2", "c1"]
    code, out, _ = cli(capsys, "cancel", "c2", "--ledger", FACTORY)
    assert code == 0 and "cancelled chain c2 at hop 0" in out
    assert ledger.get("c2").status is ChainStatus.CANCELLED
    code, _, err = cli(capsys, "cancel", "c2", "--ledger", FACTORY)
    assert code == 1 and "c2" in err
    code, _, err = cli(capsys, "status", "nope", "--ledger", FACTORY)
    assert code == 1 and "no chain 'nope' in the ledger" in err


def test_the_ledger_may_be_an_object_in_a_module_of_the_current_directory(
    ledger: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "my_ledgers.py").write_text(
        "from sqlite_ledger import SqliteLedger\nLEDGER = SqliteLedger('chains.db')\n", encoding="utf-8"
    )
    ledger.start("c1", progress=P1, event={}, now=100.0)
    try:
        code, out, _ = cli(capsys, "list", "--ledger", "my_ledgers:LEDGER")
    finally:
        sys.modules.pop("my_ledgers", None)
    assert code == 0 and "c1" in out and "RUNNING" in out


def test_resume_moves_nothing_when_it_cannot_reach_lambda(
    ledger: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger.start("c1", progress=P1, event={}, now=100.0)
    ledger.claim("c1", hop=0, owner="r1", now=101.0, lease_until=102.0)
    ledger.fail("c1", hop=0, owner="r1", error="boom", now=103.0)
    code, _, err = cli(
        capsys, "resume", "c1", "--ledger", FACTORY
    )  # resume invokes Lambda: it needs a region
    assert code == 2 and "no AWS region" in err
    record = ledger.get("c1")
    assert (record.status, record.hop) == (ChainStatus.FAILED, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--ledger", "sqlite_ledger:SqliteLedger"],
            "calling it failed: TypeError",
        ),  # a class needing a path
        (["--ledger", "sqlite_ledger:PATH_ENV"], "neither a ledger nor a factory of one (it is str)"),
        (["--ledger", "json:dumps"], "calling it failed: TypeError"),
        (["--ledger", "builtins:dict"], "returned dict, not a ledger"),
        (["--ledger", "sqlite_ledger"], "expected MODULE:ATTR"),
        (["--ledger", "no_such_module:x"], "cannot import module 'no_such_module'"),
        (["--ledger", "sqlite_ledger:nothing"], "has no attribute 'nothing'"),
        (["--ledger", FACTORY, "--table", "chains"], "--ledger and --table name two ledgers"),
    ],
)
def test_a_bad_ledger_is_a_usage_error(
    ledger: Any, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, stdout, err = cli(capsys, "list", *argv)
    assert (code, stdout) == (2, "") and message in err


def test_a_factory_that_fails_says_why(
    ledger: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECURSE_LAMBDA_SQLITE")
    code, _, err = cli(capsys, "list", "--ledger", FACTORY)
    assert code == 2 and "set RECURSE_LAMBDA_SQLITE to the SQLite file of the ledger" in err


def test_the_option_is_in_each_control_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "list", "cancel", "resume"):
        assert main([command, "--help"]) == 0
        assert "--ledger MODULE:ATTR" in capsys.readouterr().out
