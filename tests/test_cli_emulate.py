"""``recurse-lambda emulate``: its arguments, and whole runs in a child process (a chain through the local Lambda,
with S3 and the ledger it starts itself), which must stop everything they started, also on Ctrl-C."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recurse_lambda.cli import emulate
from recurse_lambda.cli.common import UsageError

ROOT = Path(__file__).resolve().parents[1]

RUNNER = """
import argparse, sys
from recurse_lambda.cli import emulate
from recurse_lambda.cli.common import UsageError
parser = argparse.ArgumentParser(prog="recurse-lambda")
emulate.add_parser(parser.add_subparsers())
args = parser.parse_args(["emulate", *sys.argv[1:]])
try:
    sys.exit(args.command(args))
except UsageError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""

needs_runtime = pytest.mark.skipif(
    importlib.util.find_spec("awslambdaric") is None, reason="emulate needs awslambdaric (the lambda extra)"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    emulate.add_parser(parser.add_subparsers())
    return parser.parse_args(["emulate", *argv])


# ------------------------------------------------------------------------------------------ arguments


def test_put_takes_the_same_local_equals_s3_url_as_simulate(tmp_path):
    f = tmp_path / "a=b.txt"
    f.write_text("x\n")
    up = emulate.parse_put(f"{f}=s3://my-bucket/dir/k.txt")
    assert (up.bucket, up.key, up.local) == ("my-bucket", "dir/k.txt", f)
    for bad in (
        "my-bucket/k",
        f"{f}=s3://my-bucket",
        f"{f}=s3:///k",
        f"{f}=s3://b/k",
        "/no/such/file=s3://my-bucket/k",
    ):
        with pytest.raises(UsageError):
            emulate.parse_put(bad)


def test_faults_are_probabilities_of_known_kinds():
    assert emulate.parse_faults("") == {"duplicate": 0.0, "kill": 0.0, "throttle": 0.0}
    assert emulate.parse_faults("duplicate=0.3, kill=0.1") == {"duplicate": 0.3, "kill": 0.1, "throttle": 0.0}
    for bad in ("crash=0.1", "kill", "kill=x", "kill=1.5", "duplicate=-0.1"):
        with pytest.raises(UsageError):
            emulate.parse_faults(bad)


def test_env_and_handler_names():
    assert emulate.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(UsageError):
        emulate.parse_env(["=1"])
    assert emulate.lambda_handler_name("examples.line_count:handler") == "examples.line_count.handler"
    with pytest.raises(UsageError):
        emulate.lambda_handler_name("mod:obj.attr")  # Lambda's handler setting is MODULE.FUNCTION


@pytest.mark.parametrize(
    "argv",
    [
        ("line_count:handler", "--timeout", "0"),
        ("line_count:handler", "--workers", "0"),
        ("line_count:handler", "--event", "{not json"),
        ("line_count:handler", "--faults", "explode=1"),
        ("no_such_module:handler",),
        ("line_count:no_such_function",),
    ],
)
def test_usage_errors_come_before_anything_starts(argv, monkeypatch, tmp_path):
    shutil.copy(ROOT / "examples" / "line_count.py", tmp_path / "line_count.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "line_count", raising=False)
    args = parse(*argv)
    with pytest.raises(UsageError):
        args.command(args)


# ------------------------------------------------------------------------------------------ whole runs


def leftovers(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory``: the run's workers and servers, if any survived."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def start(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    shutil.copy(ROOT / "examples" / "line_count.py", tmp_path / "line_count.py")
    data = b"".join(
        b"line %d of the input\r\n" % n if n % 7 == 0 else b"line %d\n" % n for n in range(200_000)
    )
    (tmp_path / "input.txt").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.e2e
@needs_runtime
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds leftover processes through /proc")
def test_a_chain_runs_through_the_local_lambda_and_everything_stops(tmp_path):
    from tests.e2e.conftest import line_count_reference

    proc = start(
        tmp_path,
        "line_count:handler",
        "--event",
        '{"bucket": "emulate-input", "key": "in.txt"}',
        "--put",
        "input.txt=s3://emulate-input/in.txt",
        "--timeout",
        "1",
        "--faults",
        "duplicate=0.5",
        "--seed",
        "3",  # the starting event's draw is a duplicate
        "--json",
    )
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED"
    assert summary["result"] == line_count_reference((tmp_path / "input.txt").read_bytes())
    assert summary["duplicates"] >= 1 and summary["hops"] >= 1
    assert summary["s3"] == "moto" and summary["ledger"] in ("dynalite", "moto")
    assert summary["library_ms_median"] is not None
    assert "hop   0" in err and "local Lambda" in err  # the progress lines
    assert leftovers(tmp_path) == []


@pytest.mark.e2e
@needs_runtime
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds leftover processes through /proc")
def test_ctrl_c_stops_everything_it_started(tmp_path):
    proc = start(
        tmp_path,
        "line_count:handler",
        "--event",
        '{"bucket": "emulate-input", "key": "in.txt"}',
        "--put",
        "input.txt=s3://emulate-input/in.txt",
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the workers are up: the run is under way
        seen.append(line)
        if line.startswith("local Lambda"):
            break
    assert leftovers(tmp_path), seen  # the workers (and dynalite) run in the task root
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    end = time.time() + 10
    while leftovers(tmp_path) and time.time() < end:
        time.sleep(0.1)
    assert leftovers(tmp_path) == []
