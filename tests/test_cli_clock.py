"""``recurse-lambda simulate --clock … --chunk-cost …``: a clock chosen on the command line, and runs in virtual
time that are exact and repeatable (the same seed and faults print the same report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda.cli import main

FAULTS = "duplicate=0.3,crash=0.2,throttle=0.2,recycle=0.5"

STEPS = """
from pydantic import BaseModel
from recurse_lambda import recursive


class Step(BaseModel):
    i: int = 0
    total: int = 0


@recursive(state=Step)
def handler(event, state, run):
    while state.i < event["n"]:
        state.total += state.i
        state.i += 1
        yield  # no clock advanced here: --chunk-cost gives each chunk its virtual cost
    return {"i": state.i, "total": state.total}
"""


@pytest.fixture
def steps_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "steps_chain.py").write_text(STEPS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["simulate", "steps_chain:handler", "--event", '{"n": 60}', "-q", "--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1]), out


def test_two_virtual_runs_with_faults_print_identical_reports(
    steps_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--virtual", "--chunk-cost", "0.1", "--timeout", "1", "--faults", FAULTS, "--seed", "7")
    first_code, first, first_out = run_json(capsys, *argv)
    second_code, second, second_out = run_json(capsys, *argv)
    assert first_out == second_out and first == second and first_code == second_code
    assert first["clock"] == "virtual"
    assert first["hops"] > 5  # the chunk cost spans hops: 60 chunks of 0.1 s with a 1 s timeout
    assert first["invocations"] > first["hops"]  # and the faults did something
    if first["status"] == "SUCCEEDED":
        assert first["result"] == {"i": 60, "total": sum(range(60))}
    # --clock virtual is the same thing; so is --chunk-cost alone (it implies the virtual clock)
    assert run_json(capsys, "--clock", "virtual", *argv[1:])[1] == first
    assert run_json(capsys, *argv[1:])[1] == first


def test_a_virtual_run_without_faults_takes_as_many_hops_as_its_cost_says(
    steps_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, _ = run_json(capsys, "--chunk-cost", "0.1", "--timeout", "1")
    assert code == 0 and summary["result"] == {"i": 60, "total": sum(range(60))}
    assert summary["timeouts"] == 0
    # 6 s of chunks in 1 s invocations: at least 6 hops, and the policy's reserve makes a few more.
    assert 6 <= summary["hops"] <= 12
    assert summary["duration_s"] >= 6.0  # virtual seconds, spent by the chunks


def test_the_text_report_is_identical_too(steps_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "steps_chain:handler", "--event", '{"n": 30}', "-q", "--chunk-cost", "0.2"]
    argv += ["--faults", "crash=0.3", "--seed", "3"]
    main(argv)
    first = capsys.readouterr().out
    main(argv)
    assert capsys.readouterr().out == first
    assert "result:" in first or "chain FAILED" in first


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_cpu_and_wall_clocks_run_the_chain(
    clock: str, steps_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, _ = run_json(capsys, "--clock", clock)
    assert code == 0 and summary["clock"] == clock and summary["result"]["i"] == 60


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clock", "wall", "--chunk-cost", "0.1"], "--chunk-cost advances the virtual clock"),
        (["--clock", "cpu", "--virtual"], "--virtual and --clock cpu disagree"),
        (["--chunk-cost", "-1"], "--chunk-cost must be a non-negative"),
        (["--clock", "sundial"], "invalid choice: 'sundial'"),
    ],
)
def test_clock_usage_errors(
    argv: list[str], message: str, steps_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["simulate", "steps_chain:handler", *argv])
    except SystemExit as exit_info:  # argparse's own errors exit; ours return the status
        code = int(str(exit_info.code))
    assert code == 2
    assert message in capsys.readouterr().err


def test_the_demo_takes_the_hops_the_readme_says_on_any_machine(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("moto.server", reason="the embedded S3 needs moto[server]")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    stated = int(readme.split("as a chain of ", 1)[1].split(" short Lambda invocations", 1)[0])
    counts = []
    for _ in range(2):  # in virtual time: the same count every run, whatever the machine's load
        assert main(["demo", "-q"]) == 0
        out = capsys.readouterr().out
        counts.append(int(out.split("OK: ", 1)[1].split(" hops", 1)[0]))
    assert counts == [stated, stated]
