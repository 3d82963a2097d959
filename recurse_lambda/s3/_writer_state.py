"""The writer's state (a field of the chain's state), its sizes, and what works on the state alone: cleaning up,
aborting.

See :mod:`recurse_lambda.s3._writer` for the design.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, PrivateAttr, SerializerFunctionWrapHandler, model_serializer

from ._prefetch import function_memory
from ._source import error_code

__all__ = [
    "CONCURRENCY_CEILING",
    "DEFAULT_PART_SIZE",
    "GONE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "META",
    "MIN_PART_SIZE",
    "SPILL_PREFIX",
    "WriterPart",
    "WriterState",
    "WriterTail",
    "abort_upload",
    "cleanup",
    "default_concurrency",
    "done_key",
    "marker_key",
    "md5_hex",
    "multipart_etag",
]

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # every part but the last (qfacts.html)
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MIB
SPILL_PREFIX = "_recurse_lambda/writer/"
META = "recurse-lambda-writer"  # x-amz-meta-…: names the chain that wrote the object, to recognise it later
#: Part uploads in flight at most by default: s3transfer's 10 threads (with 8 MiB parts as fast as it on the
#: JuiceFS gateway, ``benchmarks/s3_write.py``, in less memory), within the client's pool beside a reader's GETs.
CONCURRENCY_CEILING = 10
#: The share of the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) the parts of one writer may hold.
MEMORY_SHARE = 0.18


def default_concurrency(part_size: int) -> int:
    """Parts uploaded at once by default: what the memory budget holds besides the part filling (at least 1),
    at most :data:`CONCURRENCY_CEILING`."""
    budget = int(function_memory() * MEMORY_SHARE)
    return max(1, min(CONCURRENCY_CEILING, budget // part_size - 1))


GONE = frozenset({"NoSuchUpload"})


class WriterPart(BaseModel):
    number: int
    etag: str
    size: int
    md5: str = ""  # unused since parts are not hashed twice (the ETag is the part's MD5); kept for old states


class WriterTail(BaseModel):
    key: str  # the spill object in ``spill_bucket``
    etag: str
    size: int


class WriterState(BaseModel):
    """Where an output stands; a field of the chain's state, committed with it at every safe point."""

    kind: Literal["s3-writer"] = "s3-writer"
    bucket: str = ""
    key: str = ""
    spill_bucket: str = ""
    spill_dir: str = ""  # <spill prefix><chain id>/
    token: str = ""  # the chain id: x-amz-meta-recurse-lambda-writer of the finished object
    condition: str = ""  # "*" (If-None-Match) or the ETag to replace (If-Match); "" before the first use
    upload_id: str = ""
    parts: list[WriterPart] = []
    size: int = 0  # bytes written so far, committed with the state
    tail: WriterTail | None = None
    etag: str = ""  # the finished object's ETag (quoted, as S3 gives it) once completed
    _writer: Any = PrivateAttr(default=None)

    @model_serializer(mode="wrap")
    def _sync_before_dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A dump is a commit (a checkpoint or a hand-off): the live writer spills its tail first, so the state
        # dumped describes every byte written so far.
        if self._writer is not None:
            self._writer.sync()
        return handler(self)

    def attach(self, writer: Any) -> None:
        """Bind the live writer whose ``sync()`` runs before every dump of this state."""
        self._writer = writer

    @property
    def done(self) -> bool:
        return bool(self.etag)


def multipart_etag(etags: list[str]) -> str | None:
    """The ETag S3 gives a multipart object: the MD5 of its parts' MD5s (their ETags), then ``-`` and their
    count. None when a part's ETag is not an MD5 (SSE-KMS, SSE-C): the object is then recognised by its
    metadata or the done marker only."""
    digests = [e.strip('"') for e in etags]
    if not all(len(d) == 32 and all(c in "0123456789abcdefABCDEF" for c in d) for d in digests):
        return None
    digest = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests), usedforsecurity=False).hexdigest()
    return f'"{digest}-{len(digests)}"'


def md5_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def done_key(spill_dir: str) -> str:
    return f"{spill_dir}done"


def marker_key(spill_dir: str, upload_id: str) -> str:
    return f"{spill_dir}upload-{hashlib.sha256(upload_id.encode()).hexdigest()[:24]}"


def cleanup(client: Any, s: WriterState, keep_upload: str) -> int:
    """Delete everything under the chain's spill folder but the done marker; abort every upload a marker names
    but ``keep_upload``."""
    aborted = 0
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.spill_bucket, Prefix=s.spill_dir):
        keys.extend(str(o["Key"]) for o in page.get("Contents", ()) if o["Key"] != done_key(s.spill_dir))
    for key in keys:
        if key.startswith(f"{s.spill_dir}upload-"):
            upload_id = client.get_object(Bucket=s.spill_bucket, Key=key)["Body"].read().decode()
            if upload_id != keep_upload:
                aborted += _abort(client, s.bucket, s.key, upload_id)
    for i in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        try:
            client.delete_objects(Bucket=s.spill_bucket, Delete={"Objects": batch, "Quiet": True})
        except (
            ClientError
        ):  # the JuiceFS gateway wants Content-MD5, which botocore no longer sends: one by one
            for item in batch:
                client.delete_object(Bucket=s.spill_bucket, Key=item["Key"])
    return aborted


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> int:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) in GONE | {"404"}:
            return 0  # completed or aborted already
        raise
    return 1


def _writer_states(value: Any) -> Iterator[WriterState]:
    if isinstance(value, WriterState):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _writer_states(getattr(value, name))
    elif isinstance(value, dict):
        if value.get("kind") == "s3-writer" and "upload_id" in value:
            yield WriterState.model_validate(value)
        else:
            for v in value.values():
                yield from _writer_states(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _writer_states(v)


def abort_upload(state: Any, client: Any = None) -> int:
    """Abort the open uploads of every writer in ``state`` and delete their spilled tails; the number aborted.

    ``state`` is a :class:`WriterState`, a chain's state model holding some, or a dumped state (the JSON the
    ledger keeps). A finished writer is left alone. For a CANCELLED chain; a FAILED one keeps its upload, so
    that ``resume`` continues it.
    """
    if client is None:
        import boto3

        client = boto3.client("s3")
    aborted = 0
    for s in _writer_states(state):
        if s.done or not s.condition:
            continue
        if s.upload_id:
            aborted += _abort(client, s.bucket, s.key, s.upload_id)
        aborted += cleanup(client, s, keep_upload=s.upload_id)
    return aborted
