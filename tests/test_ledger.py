from __future__ import annotations

import pytest

from recurse_lambda import InMemoryLedger, Ledger
from recurse_lambda.testing.ledger_contract import LedgerContract


class TestInMemoryLedger(LedgerContract):
    @pytest.fixture
    def ledger(self):
        return InMemoryLedger()


def test_in_memory_ledger_satisfies_the_protocol():
    assert isinstance(InMemoryLedger(), Ledger)


def test_in_memory_ledger_refuses_state_that_is_not_json():
    with pytest.raises(TypeError):
        InMemoryLedger().start("c", progress={"state": {"x": object()}}, event={}, now=0.0)
