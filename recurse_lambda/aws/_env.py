"""The ledger a deployment configures through its environment (what examples/template.yaml sets)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..config import TABLE_ENV, spill_location
from ._dynamodb import DynamoDBLedger

__all__ = ["TABLE_ENV", "ledger_from_env"]


def ledger_from_env(environ: Mapping[str, str] | None = None) -> DynamoDBLedger | None:
    """A DynamoDBLedger on ``$RECURSE_LAMBDA_TABLE``, or None (stateless mode) when it is not set.

    State too large for an item goes under ``ledger/`` of the spill prefix when a spill bucket is configured
    (``$RECURSE_LAMBDA_SPILL_BUCKET``, ``$RECURSE_LAMBDA_SPILL_PREFIX``). No client is created here.
    """
    env = os.environ if environ is None else environ
    table = env.get(TABLE_ENV)
    if not table:
        return None
    bucket, prefix = spill_location(env)
    return DynamoDBLedger(table, s3_offload=(bucket, f"{prefix}ledger/") if bucket else None)
