"""A chain through the local Lambda with hangs past the deadline, crashes, function errors and duplicate
deliveries ends with exactly the fault-free result.

Margins for a loaded machine (the tier shares 2 cores with the servers and the workers): a 2 s timeout, so that
only the injected faults fail a delivery, and a floor under the work (``pace``: 0.15 s slept per batch of 20 000
lines, about 7.8 s over the 64 MB object) so that the chain needs at least four hops, and the faulty hops 1-3
exist, however fast the machine is.
"""

from __future__ import annotations

import json

from recurse_lambda import ChainStatus

from .conftest import HERE, function_environ, lambda_client, wait_for_end

TIMEOUT = 2.0
PACE = 0.15


def test_hangs_crashes_errors_and_duplicates_leave_the_result_exact(
    s3, big_object, ledger_endpoint, ledger_table, local_lambda, tmp_path
):
    table, ledger = ledger_table
    fn = local_lambda(
        "faulty_count.handler",
        HERE,
        name="faulty-count",
        timeout=TIMEOUT,
        workers=2,
        duplicates=0.5,
        seed=3,  # the first draw (the starting event's) is a duplicate: there is at least one
        environ={**function_environ(s3, ledger_endpoint, table), "FAULT_DIR": str(tmp_path)},
    )
    event = {
        "bucket": big_object["bucket"],
        "key": big_object["key"],
        "pace": PACE,
        "hang": [1],
        "crash": [2],
        "error": [3],
    }
    # Started as an S3 notification would: an asynchronous invoke, retried by the local Lambda if it fails.
    answer = lambda_client(fn).invoke(
        FunctionName=fn.name, InvocationType="Event", Payload=json.dumps(event).encode()
    )
    assert answer["StatusCode"] == 202
    assert fn.wait_idle(240, settle=1.0), fn.logs()[-4000:]
    (record,) = ledger.list()
    record = wait_for_end(ledger, record.chain_id, fn, limit=5)
    assert record.status is ChainStatus.SUCCEEDED, (record.error, fn.logs()[-4000:])
    assert record.result == big_object["expected"]
    assert record.hop >= 3
    injected = sorted(p.name for p in tmp_path.iterdir())
    assert injected == ["crash-2", "error-3", "hang-1"]  # every fault struck (its hop existed)
    errors = sorted(str(result.error_type) for _, result in fn.deliveries if not result.ok)
    # Each fault cost its delivery and nothing else failed; the retry (same request id) finished the hop.
    assert errors == ["Runtime.ExitError", "Sandbox.Timedout", "Unhandled"], errors
    assert any(inv.kind == "duplicate" for inv, _ in fn.deliveries)
    assert sum(inv.kind == "retry" for inv, _ in fn.deliveries) == 3
    assert not fn.failures
