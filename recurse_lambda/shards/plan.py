"""Parallel shards of one job: the configuration, the plan, and what a shard sees as ``run.shard``.

A sharded job splits the bytes of one object, or of every object under a prefix taken in key order as if
concatenated, into ``count`` contiguous byte ranges of equal size. Each range runs as its own chain. The ranges
ignore record boundaries: each shard aligns its own range (it starts at the first record that begins inside it,
and finishes the record that straddles its end), so no record is read twice or lost, whatever the cut points.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from . import split
from .reader import Shard, ShardReader  # what a shard reads; re-exported here, where they used to live

__all__ = ["ObjectInfo", "Part", "Shard", "ShardReader", "Shards", "SourceRef", "plan_shards"]

#: The key under which a shard's event carries its place in the job.
SHARD_KEY = "__recurse_lambda_shard__"

# Each shard is one chain and one concurrent invocation (the default account concurrency is 1,000), and the
# plan, kept in the job's ledger item and envelope, holds every shard's ranges.
MAX_SHARDS = 1000


@dataclass(frozen=True)
class SourceRef:
    """What a job reads: one object (``key``) or every object under ``prefix``, in ``bucket``."""

    bucket: str
    key: str | None = None
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not self.bucket or (self.key is None) == (self.prefix is None):
            raise ConfigurationError(
                f"a sharded job reads a bucket and either a key or a prefix, not {self!r}"
            )


def source_from_event(event: Any) -> SourceRef:
    """The default ``Shards.source``: ``{"bucket": ..., "key": ...}`` or ``{"bucket": ..., "prefix": ...}``."""
    if not isinstance(event, Mapping) or not isinstance(event.get("bucket"), str):
        raise ConfigurationError(
            'a sharded job\'s event must be {"bucket": ..., "key": ...} or {"bucket": ..., "prefix": ...}, '
            "or pass Shards(source=...) to read it from another shape"
        )
    key, prefix = event.get("key"), event.get("prefix")
    return SourceRef(
        event["bucket"],
        key=str(key) if key is not None else None,
        prefix=str(prefix) if prefix is not None else None,
    )


@dataclass(frozen=True)
class Shards:
    """Run a job as ``count`` parallel shards whose results ``reduce`` merges, once, when the last one ends.

    ``reduce`` gets the shards' results in shard order and returns the job's result (JSON-serialisable).
    ``source`` maps the job's event to what is split (default :func:`source_from_event`). A job smaller than
    ``count × min_bytes`` gets fewer shards, so tiny inputs do not fan out to idle chains.
    """

    count: int
    reduce: Callable[[list[Any]], Any]
    source: Callable[[Any], SourceRef] = source_from_event
    min_bytes: int = 1024 * 1024
    #: ``"auto"``: an object cut by the split is looked at (its first bytes, one small GET), and a gzip or zstd
    #: one is cut at member or frame starts (see ``shards/split.py``); None: every object is split as stored.
    compression: str | None = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_SHARDS:
            raise ConfigurationError(
                f"Shards.count must be an int from 1 to {MAX_SHARDS}, not {self.count!r}"
            )
        if not callable(self.reduce):
            raise ConfigurationError(f"Shards.reduce must be callable, not {self.reduce!r}")
        if not callable(self.source):
            raise ConfigurationError(f"Shards.source must be callable, not {self.source!r}")
        if self.min_bytes < 1:
            raise ConfigurationError("Shards.min_bytes must be at least 1")
        if self.compression not in ("auto", None):
            raise ConfigurationError(f"Shards.compression must be 'auto' or None, not {self.compression!r}")


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a job, as listed when the job is split."""

    bucket: str
    key: str
    etag: str
    size: int
    version_id: str | None = None


@dataclass(frozen=True)
class Part:
    """The bytes ``[start, end)`` of one object, pinned to its ETag: a shard is a sequence of parts."""

    bucket: str
    key: str
    etag: str
    size: int
    start: int
    end: int
    version_id: str | None = None
    #: ``"gzip"`` or ``"zstd"``: ``start`` and ``end`` are member or frame starts (or 0 and the size), and the
    #: shard reads the decompressed content between them.
    compression: str | None = None

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.compression is None else {"compression": self.compression}
        return {
            **extra,
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "start": self.start,
            "end": self.end,
            "version_id": self.version_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Part:
        return cls(
            bucket=str(data["bucket"]),
            key=str(data["key"]),
            etag=str(data["etag"]),
            size=int(data["size"]),
            start=int(data["start"]),
            end=int(data["end"]),
            version_id=None if data.get("version_id") is None else str(data["version_id"]),
            compression=None if data.get("compression") is None else str(data["compression"]),
        )

    @property
    def pin(self) -> tuple[str, dict[str, Any]]:
        """The pin a shard starts with, so every shard reads the version the job was split on."""
        return f"{self.bucket}/{self.key}", {
            "etag": self.etag,
            "version_id": self.version_id,
            "size": self.size,
        }


def plan_shards(
    objects: Sequence[ObjectInfo], count: int, min_bytes: int = 1, read: Reader | None = None
) -> list[list[Part]]:
    """Cut the objects' bytes, concatenated in the given order, into at most ``count`` equal ranges.

    There is always at least one shard (with no parts when there are no bytes at all). Empty objects hold no
    records and are left out. With ``read`` (``read(object, start, end)``: its stored bytes), an object a cut
    falls inside is looked at: a gzip or zstd one is cut at member or frame starts (``shards/split.py``), or
    not at all (the cut moves to its end); a single such object that cannot be cut is refused.
    """
    objects = [o for o in objects if o.size > 0]
    total = sum(o.size for o in objects)
    n = max(1, min(count, -(-total // min_bytes)))
    cuts = [total * i // n for i in range(n + 1)]
    kinds: dict[int, str] = {}
    if read is not None and n > 1:
        kinds, cuts = _compressed_cuts(objects, cuts, read)
        if len(cuts) == 2 and len(objects) == 1:
            o = objects[0]
            raise ConfigurationError(split.unsplittable(kinds[0], f"s3://{o.bucket}/{o.key}", n))
    shards: list[list[Part]] = []
    for lo, hi in itertools.pairwise(cuts):
        parts, base = [], 0
        for k, o in enumerate(objects):
            a, b = max(lo, base), min(hi, base + o.size)
            if a < b:
                kind = kinds.get(k)
                parts.append(Part(o.bucket, o.key, o.etag, o.size, a - base, b - base, o.version_id, kind))
            base += o.size
        shards.append(parts)
    return shards


Reader = Callable[[ObjectInfo, int, int], bytes]


def _compressed_cuts(
    objects: list[ObjectInfo], cuts: list[int], read: Reader
) -> tuple[dict[int, str], list[int]]:
    """The compression of each object a cut falls inside (gzip or zstd only), and the cuts moved for them."""
    cut_inside, base = [], 0
    for k, o in enumerate(objects):
        if any(base < c < base + o.size for c in cuts):
            cut_inside.append(k)
        base += o.size
    kinds: dict[int, str] = {}
    if cut_inside:  # one 4-byte GET each, several at a time (a prefix job may cut inside many objects)
        with ThreadPoolExecutor(min(8, len(cut_inside)), thread_name_prefix="shard-split") as pool:
            heads = pool.map(lambda k: read(objects[k], 0, min(objects[k].size, 4)), cut_inside)
            kinds = {
                k: kind
                for k, head in zip(cut_inside, heads, strict=True)
                if (kind := split.detect(head)) is not None
            }
    if not kinds:
        return kinds, cuts

    def find(k: int, local: int) -> int | None:
        o = objects[k]
        return split.find_start(kinds[k], lambda a, b: read(o, a, b), local, o.size)

    return kinds, split.snap(objects, cuts, kinds, find)


#: Every shard chain id begins with this, and no user chain id may: a ``chain_id=`` function (or a key) that
#: returns such an id is refused, so a business key can never name another job's shard.
SHARD_ID_PREFIX = "@shard/"


def shard_chain_id(job_id: str, index: int, count: int, *, legacy: bool = False) -> str:
    """``@shard/job/007``: zero-padded, so a job's shard chain ids sort in shard order.

    ``legacy``: the ``job/007`` form of jobs split by recurse-lambda before the reserved prefix (their plan has
    no ``"ids"`` entry), so a job in flight across an upgrade still finds its shards.
    """
    part = shard_part(index, count)
    return f"{job_id}/{part}" if legacy else f"{SHARD_ID_PREFIX}{job_id}/{part}"


def shard_chain_ids(job_id: str, plan: Mapping[str, Any]) -> list[str]:
    """The chain ids of a job's shards, in shard order, from the job's plan."""
    n = int(plan["count"])
    legacy = plan.get("ids") != SHARD_ID_PREFIX
    return [shard_chain_id(job_id, i, n, legacy=legacy) for i in range(n)]


def check_user_chain_id(chain_id: str) -> None:
    """Refuse a user's chain id in the shards' namespace (:data:`SHARD_ID_PREFIX`)."""
    if chain_id.startswith(SHARD_ID_PREFIX):
        raise ConfigurationError(
            f"chain id {chain_id!r} begins with {SHARD_ID_PREFIX!r}, which is reserved for the shards of "
            "sharded jobs; make the chain_id function return another form"
        )


def shard_part(index: int, count: int) -> str:
    """What a finished shard adds to its job's ``joined`` set: its padded index (short, so 1,000 fit an item)."""
    return f"{index:0{len(str(max(count - 1, 0)))}d}"
