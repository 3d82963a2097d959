"""examples/line_count.py, unchanged, over a 64 MB object: AWS's runtime client in worker processes, boto3's Invoke
over HTTP, S3 and the ledger on loopback servers.

Whether the object fits in one hop depends on the machine (a quiet 2-core machine counts 64 MB in under a second,
a loaded one needs about 2.5 s): each case checks the result, that nothing timed out, and, when the chunks took
longer than one invocation, that it really was a chain. The library primes its clients at init (issue 13), so a
cold worker's first chunk starts with nearly the whole second.
"""

from __future__ import annotations

from typing import Any

import pytest

from recurse_lambda import ChainStatus
from recurse_lambda.local.lambda_runtime import LocalLambda

from .conftest import EXAMPLES, HERE, function_environ, start_chain, wait_for_end


def run_line_count(fn: LocalLambda, big_object: dict[str, Any], ledger: Any) -> Any:
    chain_id = start_chain(fn, {"bucket": big_object["bucket"], "key": big_object["key"]})
    record = wait_for_end(ledger, chain_id, fn)
    assert record.status is ChainStatus.SUCCEEDED, record.error
    assert record.result == big_object["expected"]
    assert fn.wait_idle(30)
    hops: list[dict[str, Any]] = [r for r in fn.log_records() if r.get("kind") == "hop"]
    assert hops and all(h["chain_id"] == chain_id for h in hops)
    assert all(h["library_time"] is not None and h["library_time"] >= 0 for h in hops)
    # No unplanned timeout: every delivery ended with a response, none was killed or retried.
    assert all(result.ok for _, result in fn.deliveries), [r.error_type for _, r in fn.deliveries]
    assert fn.worker_restarts == 0 and not fn.failures
    assert len(hops) == record.hop + 1 and {h["hop"] for h in hops} == set(range(record.hop + 1))
    if (
        sum(h["chunk_time"] for h in hops) > fn.timeout
    ):  # more work than one invocation holds, on this machine
        assert record.hop >= 1  # so it really was a chain of invocations, each handing off in time
    return record


@pytest.mark.parametrize("timeout", [3.0, 1.0])
def test_line_count_over_64_mb(timeout, s3, big_object, ledger_endpoint, ledger_table, local_lambda):
    table, ledger = ledger_table
    fn = local_lambda(
        "line_count.handler",
        EXAMPLES,
        name="line-count",
        timeout=timeout,
        workers=2,
        environ=function_environ(s3, ledger_endpoint, table),
    )
    run_line_count(fn, big_object, ledger)


def test_line_count_at_1_s_with_clients_primed_at_init(
    s3, big_object, ledger_endpoint, ledger_table, local_lambda
):
    """The 1 s case as it runs once the library primes its clients at init: the same handler, with its clients
    created at import (tests/e2e/primed_count.py)."""
    table, ledger = ledger_table
    fn = local_lambda(
        "primed_count.handler",
        HERE,
        name="line-count",
        timeout=1.0,
        workers=2,
        python_path=[str(EXAMPLES)],
        environ=function_environ(s3, ledger_endpoint, table),
    )
    run_line_count(fn, big_object, ledger)
