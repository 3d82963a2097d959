"""Sharded jobs: one object (or a prefix) split into parallel shard chains, joined in the ledger, reduced once.

See docs/shards.md. ``Shards`` and ``Shard`` are also exported by :mod:`recurse_lambda`.
"""

from .plan import SHARD_ID_PREFIX, ObjectInfo, Shard, Shards, SourceRef

__all__ = ["SHARD_ID_PREFIX", "ObjectInfo", "Shard", "Shards", "SourceRef"]
