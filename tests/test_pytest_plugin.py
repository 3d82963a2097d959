"""The pytest plugin, as a user's test suite sees it: small suites run by ``pytester`` with the plugin loaded
through its ``pytest11`` entry point, as it is for anyone who installs the package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

# The handlers the inner suites test, written next to them as chains.py.
CHAINS = """
from pydantic import BaseModel

from recurse_lambda import recursive


class Sum(BaseModel):
    i: int = 0
    total: int = 0


def expected(n):
    return sum(i * i for i in range(n))


@recursive(state=Sum)
def squares(event, state, run):
    while state.i < event["n"]:
        state.total += state.i * state.i
        state.i += 1
        yield
    return state.total


@recursive(state=Sum)
def broken(event, state, run):
    while state.i < event["n"]:
        if state.i == 3:
            raise ValueError("record 3 is malformed")
        state.i += 1
        yield
    return state.i


@recursive
def once(event, state, run):
    return 42


class Lines(BaseModel):
    offset: int = 0
    lines: int = 0


@recursive(state=Lines)
def count_lines(event, state, run):
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset, encoding=None)
    for batch in reader.batches(1_000):
        state.lines += len(batch.records)
        state.offset = batch.end
        yield
    return state.lines
"""


def run_inner(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    """Run ``tests`` (the body of a test module) in-process, with chains.py beside it."""
    pytester.makepyfile(chains=CHAINS, test_inner=textwrap.dedent(tests))
    return pytester.runpytest("-p", "no:cacheprovider", "--strict-markers", *args)


# -- loading -------------------------------------------------------------------------------------------------------


def test_the_plugin_is_loaded_through_its_entry_point(pytester: pytest.Pytester) -> None:
    tests = """
        import recurse_lambda.pytest_plugin as plugin


        def test_registered(request):
            manager = request.config.pluginmanager
            assert manager.get_plugin("recurse_lambda") is plugin
            assert any(p is plugin and d.project_name == "recurse-lambda" for p, d in manager.list_plugin_distinfo())


        def test_a_fixture(simulate):
            pass
    """
    run_inner(pytester, tests).assert_outcomes(passed=2)
    # Disabled by name, its fixtures are gone: they come from the entry point, not from anything else.
    run_inner(pytester, tests, "-p", "no:recurse_lambda").assert_outcomes(failed=1, errors=1)


def test_importing_the_plugin_imports_neither_boto3_nor_moto_nor_the_simulator() -> None:
    code = (
        "import json, sys, recurse_lambda.pytest_plugin\n"
        "print(json.dumps([m for m in ('boto3', 'botocore', 'moto', 'recurse_lambda.local') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.recurse_lambda(**defaults): defaults for the simulate fixture*"]
    )


# -- lambda_context ------------------------------------------------------------------------------------------------


def test_lambda_context_counts_down_with_the_virtual_clock(pytester: pytest.Pytester) -> None:
    tests = """
        import uuid

        import pytest

        from recurse_lambda.local import FakeContext


        def plain(event, context):  # an ordinary Lambda handler, called directly
            return {"remaining": context.get_remaining_time_in_millis(), "request": context.aws_request_id}


        def test_default(lambda_context, virtual_clock):
            assert isinstance(lambda_context, FakeContext)
            assert plain({}, lambda_context)["remaining"] == 60_000
            virtual_clock.advance(59.75)
            assert plain({}, lambda_context)["remaining"] == 250
            virtual_clock.advance(5)
            assert plain({}, lambda_context)["remaining"] == 0  # floored; nothing is killed


        @pytest.mark.recurse_lambda(timeout=3, function_name="orders")
        def test_marker(lambda_context, request):
            assert lambda_context.get_remaining_time_in_millis() == 3_000
            assert lambda_context.invoked_function_arn.endswith(":function:orders")
            assert lambda_context.aws_request_id == str(uuid.uuid5(uuid.NAMESPACE_URL, request.node.nodeid))
    """
    run_inner(pytester, tests).assert_outcomes(passed=2)


# -- simulate ------------------------------------------------------------------------------------------------------


def test_a_chain_that_fails_fails_the_test_and_its_timeline_is_shown(pytester: pytest.Pytester) -> None:
    tests = """
        from chains import broken, expected, squares


        def test_succeeds(simulate):
            assert simulate(squares, {"n": 10}).raise_for_status().result == expected(10)


        def test_fails(simulate):
            simulate(broken, {"n": 10}).raise_for_status()


        def test_fails_after_long_chains(simulate):
            for n in range(60, 64):
                assert simulate(squares, {"n": n}, chunk_cost=1.0, timeout=1.5).hops == n + 1  # one chunk per hop, and the return
            assert False, "the last three chains are shown, cut short"
    """
    result = run_inner(pytester, tests)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*ChainFailed*record 3 is malformed*",
            "*- recurse-lambda: simulated chains -*",
            "*hop kind*outcome*timeline",
            "*retry*error*",
            "status FAILED: *",
            "error: *record 3 is malformed*",
            "last committed state: {'i': 3, 'total': 0}",  # the retries commit after every chunk
        ]
    )
    out = result.stdout.str()
    # The failing tests' chains only, at most three per test, each cut to 40 lines and its totals.
    assert len(re.findall(r"^status ", out, re.M)) == 1 + 3
    assert "(1 earlier chains not shown)" in out
    assert len(re.findall(r"^     … \d+ lines not shown …$", out, re.M)) == 3
    assert "status SUCCEEDED: 64 hops" in out


def test_chunk_cost_the_marker_and_the_options(pytester: pytest.Pytester) -> None:
    tests = """
        import pytest

        from chains import expected, once, squares
        from recurse_lambda.local import WallClock


        @pytest.mark.recurse_lambda(timeout=3.0, chunk_cost=1.0)
        def test_paced(simulate):
            report = simulate(squares, {"n": 10})
            assert report.raise_for_status().result == expected(10)
            assert report.hops >= 4 and report.ended - report.started >= 10.0
            assert simulate(squares, {"n": 10}, chunk_cost=None).hops == 1  # the call wins over the marker


        def test_unpaced_work_takes_no_virtual_time(simulate):
            report = simulate(squares, {"n": 10})
            assert report.hops == 1 and report.chunk_time == 0.0


        def test_a_plain_function_is_one_hop(simulate):
            assert simulate(once, {}, chunk_cost=1.0).raise_for_status().result == 42


        def test_the_ledger(simulate):
            simulate(squares, {"n": 3})
            assert simulate.last.ledger is not None  # an in-memory ledger by default
            simulate(squares, {"n": 3}, ledger="config")
            assert simulate.last.ledger is None  # the handler's own: it declares none


        def test_simulator_exposes_the_commit_log(simulate):
            sim = simulate.simulator(squares, chunk_cost=1.0, timeout=3.0)
            assert sim.run({"n": 5}).status == "SUCCEEDED"
            assert [c.op for c in sim.commits].count("hand_off") >= 1


        def test_chunk_cost_needs_a_virtual_clock(simulate):
            with pytest.raises(ValueError, match="VirtualClock"):
                simulate(squares, {"n": 1}, chunk_cost=1.0, clock=WallClock())


        @pytest.mark.recurse_lambda(3.0)
        def test_marker_arguments_are_keywords(simulate):
            pass
    """
    result = run_inner(pytester, tests)
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(["*TypeError: @pytest.mark.recurse_lambda takes keyword arguments only*"])


# -- fault_schedule ------------------------------------------------------------------------------------------------


def test_fault_schedules_force_retries_and_duplicates(pytester: pytest.Pytester) -> None:
    tests = """
        import pytest

        from chains import expected, squares
        from recurse_lambda.local import FaultPlan


        def test_specs_and_keywords(fault_schedule):
            assert fault_schedule() == FaultPlan()
            plan = fault_schedule("crash@after_handoff=1,duplicate=0.2")
            assert plan == FaultPlan(duplicate=0.2, crash_at=(("after_handoff", 1),))
            assert fault_schedule(plan, duplicate=0.5, crash_at={"before_claim": 2}) == FaultPlan(
                duplicate=0.5, crash_at=(("before_claim", 2),)
            )
            with pytest.raises(ValueError, match="between 0 and 1"):
                fault_schedule(duplicate=2)
            with pytest.raises(ValueError, match="unknown fault point"):
                fault_schedule("crash@nowhere=1")


        @pytest.mark.parametrize("faults", ["crash@after_handoff=1,duplicate=0.5", "plan"])
        def test_the_report_shows_them(simulate, fault_schedule, faults):
            if faults == "plan":
                faults = fault_schedule(duplicate=0.5, crash_at=[("after_handoff", 1)])
            report = simulate(squares, {"n": 40}, chunk_cost=0.5, timeout=3.0, faults=faults, seed=3)
            assert report.raise_for_status().result == expected(40)
            assert report.retries == 1 and report.count("resent") == 1 and report.count("crash") == 1
            assert report.duplicates_dropped >= 1
            print("SUMMARY", report.summary())
    """
    result = run_inner(pytester, tests, "-s")
    result.assert_outcomes(passed=3)
    assert len(re.findall(r"SUMMARY .*'retries': 1, 'duplicates_dropped': [1-9]", result.stdout.str())) == 2


# -- embedded_s3 ---------------------------------------------------------------------------------------------------


def test_the_embedded_s3_serves_a_line_counting_chain(pytester: pytest.Pytester) -> None:
    tests = """
        import pytest

        from chains import count_lines

        pytestmark = pytest.mark.recurse_lambda(timeout=2.0, chunk_cost=0.5)
        DATA = "a line\\n" * 4_999 + "the last, unterminated"


        @pytest.fixture
        def event(embedded_s3):
            bucket = embedded_s3.create_bucket()
            etag = embedded_s3.put(bucket, "data.txt", DATA)
            assert etag.startswith('"') and embedded_s3.get(bucket, "data.txt") == DATA.encode()
            return {"bucket": bucket, "key": "data.txt"}


        def test_counts_lines_over_several_hops(simulate, event):
            report = simulate(count_lines, event, s3=True)
            assert report.raise_for_status().result == 5_000
            assert report.hops >= 3


        def test_same_server_for_the_session(embedded_s3):
            assert embedded_s3.endpoint_url.startswith("http://127.0.0.1:")
            client = embedded_s3.client()
            assert client.meta.endpoint_url == embedded_s3.endpoint_url
            assert len(client.list_buckets()["Buckets"]) >= 1  # the previous test's bucket is still there


        def test_put_creates_the_bucket(embedded_s3, tmp_path):
            (tmp_path / "f.txt").write_bytes(b"x\\ny\\n")
            embedded_s3.put("made-by-put", "f.txt", tmp_path / "f.txt")
            assert embedded_s3.get("made-by-put", "f.txt") == b"x\\ny\\n"


        def test_without_s3_the_handler_has_no_client(simulate, event):
            report = simulate(count_lines, event)
            assert report.status == "FAILED" and "no 's3' client" in report.error


        def test_s3_and_s3_client_together_are_refused(simulate, event, embedded_s3):
            with pytest.raises(ValueError, match="not both"):
                simulate(count_lines, event, s3=True, s3_client=embedded_s3.client)
    """
    run_inner(pytester, tests).assert_outcomes(passed=5)


def test_without_moto_only_the_tests_using_s3_fail_and_they_say_what_to_install(
    pytester: pytest.Pytester,
) -> None:
    # A fresh process in which moto cannot be imported, as without the `local` extra.
    pytester.makepyfile(
        chains=CHAINS,
        test_inner="""
            from chains import expected, squares


            def test_no_s3_needed(simulate, lambda_context):
                assert simulate(squares, {"n": 5}).raise_for_status().result == expected(5)


            def test_s3(embedded_s3):
                pass
        """,
    )
    script = (
        "import sys\n"
        "sys.modules['moto'] = None  # `import moto` now raises ImportError\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '-rE']))\n"
    )
    result = pytester.run(sys.executable, "-c", script)
    assert result.ret == 1
    out = result.stdout.str()
    assert "1 passed, 1 error" in out
    message = re.search(r"^embedded_s3: the embedded S3 needs moto's server .*$", out, re.M)
    assert message and message.group().endswith("install it with: pip install 'recurse-lambda[local]'")
    assert "Traceback" not in out and "direct cause" not in out


# -- the shipped example and the docs ------------------------------------------------------------------------------


def test_the_example_test_passes(pytester: pytest.Pytester) -> None:
    for name in ("line_count.py", "test_line_count_example.py"):
        pytester.path.joinpath(name).write_text((ROOT / "examples" / name).read_text(encoding="utf-8"))
    pytester.runpytest("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(passed=10)


def docs_test_module() -> str:
    """The ``py`` blocks of docs/testing.md, in order: a test module a user could copy."""
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    fence = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
    return "\n\n".join(m.group("body") for m in fence.finditer(text) if m.group("lang") == "py")


def test_the_examples_in_the_testing_guide_pass(pytester: pytest.Pytester) -> None:
    module = docs_test_module()
    tests = len(re.findall(r"^def test_", module, re.M))
    assert tests >= 5
    pytester.makepyfile(test_docs=module)
    pytester.runpytest("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(passed=tests)
