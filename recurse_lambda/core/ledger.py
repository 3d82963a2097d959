"""The chain ledger (DESIGN §4), kept as one import path: the record in :mod:`.model`, the protocol in
:mod:`.ports`, the rules in :mod:`.transitions` and the in-memory store in :mod:`.memory_ledger`."""

from __future__ import annotations

from .memory_ledger import InMemoryLedger
from .model import ChainRecord, ChainStatus
from .ports import Ledger, LedgerAdmin, LedgerWriter

__all__ = ["ChainRecord", "ChainStatus", "InMemoryLedger", "Ledger", "LedgerAdmin", "LedgerWriter"]
