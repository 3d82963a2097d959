"""The ``recurse-lambda`` command: demo, simulate, error paths, and the entry point as a real process."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from recurse_lambda import __version__
from recurse_lambda.cli import main

pytest.importorskip("moto.server", reason="the embedded S3 needs moto[server]")

REPO = Path(__file__).resolve().parent.parent
BUCKET = "cli-test-bucket"
FAULTS = "duplicate=0.3,crash=0.2,throttle=0.2,recycle=0.5"
SUMMARY_KEYS = {
    "status",
    "result",
    "hops",
    "invocations",
    "retries",
    "duplicates_dropped",
    "timeouts",
    "utilization",
}

SLEEPY = """
import time
from pydantic import BaseModel
from recurse_lambda import recursive


class Step(BaseModel):
    i: int = 0


@recursive(state=Step)
def handler(event, state, run):
    while state.i < event["n"]:
        time.sleep(event.get("sleep", 0.0))  # real time: the wall clock hands off between chunks
        state.i += 1
        yield
    return {"i": state.i}


def plain(event, context):
    return None
"""

FLAKY = """
from pydantic import BaseModel
from recurse_lambda import recursive


class Step(BaseModel):
    i: int = 0


raised = []


@recursive(state=Step, checkpoint_every_chunks=None)
def handler(event, state, run):
    while state.i < 5:
        state.i += 1
        if state.i == 3 and not raised:  # the first attempt raises with i = 3, of which nothing was committed
            raised.append(state.i)
            raise RuntimeError("flaky")
        yield
    return {"i": state.i}
"""


def sample_bytes(n_lines: int, seed: int) -> bytes:
    """LF and CRLF lines of varied length, some multi-byte UTF-8, some empty; no newline at the end."""
    rng = random.Random(seed)
    words = ["a", "chain", "hop", "naïve", "Grüße", "日本語", "🙂", "x" * 80]
    lines = []
    for _ in range(n_lines):
        text = " ".join(rng.choices(words, k=rng.randint(0, 12)))
        lines.append(text + rng.choice(["\n", "\r\n"]))
    return "".join(lines).encode() + "last line ✓".encode()


def expected_count(data: bytes) -> dict[str, int]:
    """The contract of examples/line_count.py, computed line by line (another way than the CLI's own count)."""
    lines = checksum = 0
    for line in io.BytesIO(data):  # BytesIO yields lines up to and including b"\n"
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        lines += 1
        checksum += zlib.crc32(line)
    return {"lines": lines, "bytes": len(data), "checksum": checksum % 2**64}


def last_json(out: str) -> dict[str, Any]:
    summary = json.loads(out.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    data = sample_bytes(6_000, seed=7)
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    return path, expected_count(data)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, where ``examples.line_count`` resolves as ``python -m`` would."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def sleepy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sleepy_chain.py").write_text(SLEEPY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "sleepy_chain", raising=False)
    return tmp_path


def line_count_args(path: Path, key: str, *extra: str) -> list[str]:
    event = json.dumps({"bucket": BUCKET, "key": key})
    return [
        "simulate",
        "examples.line_count:handler",
        "--event",
        event,
        "--put",
        f"{path}=s3://{BUCKET}/{key}",
        "--json",
        *extra,
    ]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"recurse-lambda {__version__}"


def test_embedded_s3_ignores_the_aws_profile_and_leaves_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recurse_lambda.local.embedded_s3 import EmbeddedS3

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # would make a default boto3 session fail
    before = dict(os.environ)
    with EmbeddedS3() as s3:
        assert s3.endpoint_url.startswith("http://127.0.0.1:")
        client = s3.client()
        assert client.meta.endpoint_url == s3.endpoint_url and client.meta.region_name == "us-east-1"
        client.create_bucket(Bucket="embedded-check")
        client.put_object(Bucket="embedded-check", Key="k", Body=b"hello")
        assert client.get_object(Bucket="embedded-check", Key="k")["Body"].read() == b"hello"
    assert dict(os.environ) == before
    with pytest.raises(RuntimeError, match="not running"):
        _ = s3.endpoint_url


def test_without_moto_the_demo_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)  # makes `from moto.server import ...` fail
    assert main(["demo", "--size-mb", "1"]) == 2
    assert "pip install 'recurse-lambda[local]'" in capsys.readouterr().err


def test_demo_counts_the_sample_and_prints_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size-mb", "1", "--timeout", "1", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert "hop kind" in out and "status SUCCEEDED" in out  # the timeline's header and totals
    assert "OK:" in out
    result = json.loads(out.split("result:", 1)[1].splitlines()[0])
    expect = json.loads(out.split("expected:", 1)[1].splitlines()[0])
    assert result == expect and result["lines"] > 1000
    assert "hop   0" in err  # progress, one line per invocation


def test_demo_sample_matches_the_contract_independently() -> None:
    from recurse_lambda.cli.demo import count_lines, sample_object

    data = sample_object(300_000, seed=1)
    assert data == sample_object(300_000, seed=1)  # deterministic
    assert b"\r\n" in data and not data.endswith(b"\n")
    assert any(b > 0x7F for b in data)  # multi-byte UTF-8
    assert count_lines(data) == expected_count(data)


def test_simulate_line_count_gives_the_right_result(
    in_repo: Path, data_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = data_file
    assert main(line_count_args(path, "plain.txt", "--timeout", "1")) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["status"] == "SUCCEEDED" and summary["result"] == expected
    assert summary["timeouts"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulate_under_faults_is_correct_or_fails_cleanly(
    seed: int, in_repo: Path, data_file: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = data_file
    code = main(
        line_count_args(path, f"faults-{seed}.txt", "--timeout", "1", "--faults", FAULTS, "--seed", str(seed))
    )
    summary = last_json(capsys.readouterr().out)
    assert summary["status"] in ("SUCCEEDED", "FAILED")
    assert code == (0 if summary["status"] == "SUCCEEDED" else 1)
    if summary["status"] == "SUCCEEDED":
        assert summary["result"] == expected  # exactly-once state, whatever the faults did
    else:
        assert summary["error"]


def test_simulate_against_another_endpoint(
    in_repo: Path,
    data_file: tuple[Path, dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from recurse_lambda.local.embedded_s3 import EmbeddedS3

    path, expected = data_file
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "other")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with EmbeddedS3() as other:
        argv = line_count_args(path, "elsewhere.txt", "--timeout", "1", "--s3-endpoint", other.endpoint_url)
        assert main(argv) == 0
        assert last_json(capsys.readouterr().out)["result"] == expected
        head = other.client().head_object(Bucket=BUCKET, Key="elsewhere.txt")
        assert head["ContentLength"] == expected["bytes"]


def test_simulate_hands_off_between_hops_and_prints_the_timeline(
    sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.dumps({"n": 25, "sleep": 0.02})
    assert main(["simulate", "sleepy_chain:handler", "--event", event, "--timeout", "0.4"]) == 0
    out, err = capsys.readouterr()
    assert "status SUCCEEDED" in out and 'result: {"i": 25}' in out
    assert "handed_off" in out and "handed_off" in err  # more than one hop, shown as it ran


def test_simulate_progress_marks_a_state_that_was_never_committed(
    sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sleepy_dir / "flaky_chain.py").write_text(FLAKY)
    assert main(["simulate", "flaky_chain:handler", "--timeout", "5"]) == 0
    _, err = capsys.readouterr()
    errored, succeeded = [line for line in err.splitlines() if line.startswith("[")]
    # The failed attempt got to i = 3 but committed nothing: its line must not present that as the state.
    assert "error (RuntimeError)" in errored and errored.endswith('uncommitted state {"i":3}'), errored
    assert "succeeded" in succeeded and succeeded.endswith('  state {"i":5}'), succeeded


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_simulate_a_many_hop_chain_under_faults(
    seed: int, sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.dumps({"n": 40, "sleep": 0.01})
    argv = ["simulate", "sleepy_chain:handler", "--event", event, "--timeout", "0.4", "--json", "-q"]
    code = main([*argv, "--faults", FAULTS, "--seed", str(seed)])
    summary = last_json(capsys.readouterr().out)
    assert code == (0 if summary["status"] == "SUCCEEDED" else 1)
    assert summary["status"] in ("SUCCEEDED", "FAILED")
    if summary["status"] == "SUCCEEDED":
        assert summary["result"] == {"i": 40}
    assert summary["invocations"] >= max(summary["hops"], 2)  # the work does not fit one invocation


def test_simulate_event_from_a_file_stateless_and_virtual(
    sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sleepy_dir / "event.json").write_text('{"n": 5}')
    assert main(["simulate", "sleepy_chain:handler", "--event", "@event.json", "--stateless", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["result"] == {"i": 5}
    # Virtual time moves only when something advances it: real work costs nothing, so one hop does it all.
    assert main(["simulate", "sleepy_chain:handler", "--event", '{"n": 5}', "--virtual", "--json"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["result"] == {"i": 5} and summary["hops"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "no_such_module_here:handler"], "cannot import module 'no_such_module_here'"),
        (["simulate", "sleepy_chain"], "expected MODULE:FUNCTION"),
        (["simulate", "sleepy_chain:missing"], "has no attribute 'missing'"),
        (["simulate", "sleepy_chain:plain"], "is not a @recursive handler"),
        (["simulate", "sleepy_chain:handler", "--event", "{not json"], "not valid JSON"),
        (["simulate", "sleepy_chain:handler", "--event", "@missing.json"], "cannot read the event file"),
        (["simulate", "sleepy_chain:handler", "--faults", "explode=0.5"], "unknown fault 'explode'"),
        (["simulate", "sleepy_chain:handler", "--faults", "crash=2"], "not between 0 and 1"),
        (["simulate", "sleepy_chain:handler", "--put", "x.txt"], "LOCAL=s3://BUCKET/KEY"),
        (["simulate", "sleepy_chain:handler", "--put", "nothere.txt=s3://bucket-1/k"], "no such file"),
        (["simulate", "sleepy_chain:handler", "--put", "sleepy_chain.py=s3://b/k"], "not a valid S3 bucket"),
        (["simulate", "sleepy_chain:handler", "--timeout", "0"], "--timeout must be positive"),
        (["demo", "--size-mb", "-1"], "--size-mb must be positive"),
        (["simulate"], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], message: str, sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_the_entry_point_runs_as_a_process(data_file: tuple[Path, dict[str, int]]) -> None:
    path, expected = data_file
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "recurse_lambda.cli", *line_count_args(path, "process.txt", "--timeout", "1")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["status"] == "SUCCEEDED" and summary["result"] == expected
    bad = subprocess.run(
        [sys.executable, "-m", "recurse_lambda.cli", "simulate", "examples.line_count:nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "has no attribute 'nope'" in bad.stderr


def test_the_sample_data_is_what_the_test_expects() -> None:
    data = sample_bytes(50, seed=0)
    assert expected_count(b"a\r\nb\n\nc") == {
        "lines": 4,
        "bytes": 7,
        "checksum": (zlib.crc32(b"a") + zlib.crc32(b"b") + zlib.crc32(b"") + zlib.crc32(b"c")) % 2**64,
    }
    assert expected_count(data)["lines"] == 51


def svg_bars(path: Path) -> list[Any]:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [g for g in root.iter("{http://www.w3.org/2000/svg}g") if "bar" in g.get("class", "").split()]


def test_simulate_draws_the_timeline_into_a_file(
    sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.dumps({"n": 25, "sleep": 0.02})
    argv = ["simulate", "sleepy_chain:handler", "--event", event, "--timeout", "0.4", "--json", "-q"]
    assert main([*argv, "--faults", "duplicate=0.5", "--timeline", "chain.svg"]) == 0
    out, err = capsys.readouterr()
    summary = last_json(out)  # the picture's message goes to stderr: stdout still ends with the JSON
    assert "timeline: chain.svg" in err
    bars = svg_bars(sleepy_dir / "chain.svg")
    assert len(bars) == summary["invocations"] > 1
    assert "simulate sleepy_chain:handler" in (sleepy_dir / "chain.svg").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["simulate", "demo"])
@pytest.mark.parametrize(
    ("where", "message"), [(".", "is a directory"), ("no/such/dir/x.svg", "no such directory")]
)
def test_a_timeline_that_cannot_be_written_is_refused_before_the_run(
    command: str, where: str, message: str, sleepy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "sleepy_chain:handler"] if command == "simulate" else ["demo", "--size-mb", "1"]
    assert main([*argv, "--timeline", where]) == 2
    out, err = capsys.readouterr()
    assert f"--timeline {where}: {message}" in err
    assert "hop" not in out + err.replace("--timeline", "")  # nothing ran


def test_a_timeline_write_that_fails_after_the_run_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recurse_lambda.cli.common import write_timeline
    from recurse_lambda.local import ChainReport

    report = ChainReport(chain_id="c", status="SUCCEEDED")
    assert write_timeline(report, None, "t")  # not asked: nothing to do
    assert not write_timeline(report, tmp_path / "gone" / "x.svg", "t")
    assert "cannot write the timeline to" in capsys.readouterr().err
    assert write_timeline(report, tmp_path / "x.svg", "t") and (tmp_path / "x.svg").is_file()


def test_demo_draws_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.svg"
    assert main(["demo", "--size-mb", "0.5", "--timeout", "0.5", "-q", "--timeline", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"timeline: {path}" in err and "OK:" in out
    hops = int(out.split("OK: ", 1)[1].split(" hops", 1)[0])
    assert len(svg_bars(path)) >= hops >= 1
    assert "recurse-lambda demo" in path.read_text(encoding="utf-8")
