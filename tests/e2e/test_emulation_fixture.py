"""The ``emulation`` fixture users import into their conftest.py: S3, a ledger table and the local Lambda in one."""

from __future__ import annotations

from recurse_lambda import ChainStatus

from .conftest import EXAMPLES, line_count_reference, text_object


def test_the_emulation_fixture_runs_a_chain_to_its_end(emulation):
    em = emulation("line_count.handler", EXAMPLES, timeout=3.0, workers=2)
    data = text_object(2 * 1024 * 1024, seed=11)
    em.put("fixture-input", "in.txt", data)
    record = em.run({"bucket": "fixture-input", "key": "in.txt"})
    assert record.status is ChainStatus.SUCCEEDED, record.error
    assert record.result == line_count_reference(data)
    assert em.chain() == record and em.ledger.get(record.chain_id) == record
    assert all(result.ok for _, result in em.fn.deliveries)
    hops = [r for r in em.fn.log_records() if r.get("kind") == "hop"]
    assert sorted(h["hop"] for h in hops) == list(range(record.hop + 1))  # log_records() is per worker
