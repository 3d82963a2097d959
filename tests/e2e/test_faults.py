"""A chain through the local Lambda with hangs past the deadline, crashes, function errors and duplicate
deliveries ends with exactly the fault-free result."""

from __future__ import annotations

import json

from recurse_lambda import ChainStatus

from .conftest import HERE, function_environ, lambda_client, wait_for_end


def test_hangs_crashes_errors_and_duplicates_leave_the_result_exact(
    s3, big_object, ledger_endpoint, ledger_table, local_lambda, tmp_path
):
    table, ledger = ledger_table
    fn = local_lambda(
        "faulty_count.handler",
        HERE,
        name="faulty-count",
        timeout=1.0,
        workers=2,
        duplicates=0.5,
        seed=3,
        environ={**function_environ(s3, ledger_endpoint, table), "FAULT_DIR": str(tmp_path)},
    )
    event = {
        "bucket": big_object["bucket"],
        "key": big_object["key"],
        "hang": [1],
        "crash": [2],
        "error": [3],
    }
    # Started as an S3 notification would: an asynchronous invoke, retried by the local Lambda if it fails.
    answer = lambda_client(fn).invoke(
        FunctionName=fn.name, InvocationType="Event", Payload=json.dumps(event).encode()
    )
    assert answer["StatusCode"] == 202
    assert fn.wait_idle(150, settle=1.0)
    (record,) = ledger.list()
    record = wait_for_end(ledger, record.chain_id, fn, limit=5)
    assert record.status is ChainStatus.SUCCEEDED, (record.error, fn.logs()[-4000:])
    assert record.result == big_object["expected"]
    errors = [result.error_type for _, result in fn.deliveries if not result.ok]
    injected = sorted(p.name for p in tmp_path.iterdir())
    # Each fault that struck cost its delivery; the retry (same request id) finished the hop.
    assert "Sandbox.Timedout" in errors if "hang-1" in injected else True
    assert "Runtime.ExitError" in errors if "crash-2" in injected else True
    assert record.hop >= 3 and injected, injected
    assert any(inv.kind == "duplicate" for inv, _ in fn.deliveries)
    assert any(inv.kind == "retry" for inv, _ in fn.deliveries)
    assert not fn.failures
