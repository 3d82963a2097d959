"""One output from many pieces: a sharded job's shards each write a piece, its ``reduce`` composes them, once.

Each shard writes its piece with the ordinary writer (``run.s3.writer(bucket, piece_key(...), state.out)``) and
returns ``out.complete()``. ``reduce`` (which runs once, and again only if the invocation running it crashes) calls
:func:`compose_output` with the pieces in shard order. It builds the output with one multipart upload:

- a piece of at least the minimum part size is copied server-side with ``UploadPartCopy`` (``CopySourceIfMatch``
  on the piece's ETag, so a changed piece fails the copy with 412), in byte ranges (``CopySourceRange``) of at
  most 5 GiB when it is larger;
- smaller pieces, and what is left of a piece after a part was filled from it, are downloaded (ranged GETs with
  ``IfMatch``) and merged into an uploaded part of at most ``part_size`` bytes (memory: one part per upload in
  flight).

The S3 facts (Amazon S3 API reference, UploadPartCopy, https://docs.aws.amazon.com/AmazonS3/latest/API/
API_UploadPartCopy.html, and "Multipart upload limits", https://docs.aws.amazon.com/AmazonS3/latest/userguide/
qfacts.html): every part but the last is 5 MiB to 5 GiB, part numbers 1 to 10,000; ``x-amz-copy-source-range``
(``bytes=first-last``, inclusive) may be used only when the source is larger than 5 MB; ``x-amz-copy-source-if-
match`` copies only if the source's ETag matches (else 412). An output that fits in one part is one ``PutObject``.

Exactly once: the output is completed with ``If-None-Match: *`` (or ``If-Match`` on the ETag replaced), and carries
``x-amz-meta-recurse-lambda-writer: compose-<digest of the pieces>``. A rerun of ``reduce`` (same pieces, so the
same digest) first HEADs the key: an object it already completed is recognised (the metadata, or a done marker on
servers that keep none) and only the cleanup is redone. A rerun that finds no object starts a new upload; every
upload leaves a marker under ``<spill prefix>compose-<digest>/``, and the cleanup after the completion aborts the
uploads of earlier attempts and deletes the pieces. The pieces are deleted only after the output exists.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from botocore.exceptions import ClientError

from ..errors import ConfigurationError, OutputExistsError
from ._output_key import OutputKey
from ._source import raise_s3_error
from ._writer_state import (
    CONCURRENCY_CEILING,
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    SPILL_PREFIX,
    WriterState,
    cleanup,
    default_concurrency,
    marker_key,
    md5_hex,
    multipart_etag,
)

__all__ = ["Planned", "compose_output", "piece_key", "plan_parts"]


def piece_key(key: str, index: int, job_id: str, spill_prefix: str = SPILL_PREFIX) -> str:
    """Where shard ``index`` of job ``job_id`` writes its piece of the output ``key``: under the writer's spill
    prefix (so the template's lifecycle rule and permissions cover it), named by the job and the output."""
    return f"{spill_prefix}{job_id}/pieces/{index:05d}/{key}"


@dataclass(frozen=True)
class Planned:
    """One part of the output: a server-side copy of one range of a piece, or ranges merged and uploaded.

    ``segments``: ``(piece index, start, end)``, end exclusive, in output order.
    """

    copy: bool
    segments: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        return sum(end - start for _, start, end in self.segments)


def plan_parts(
    sizes: Sequence[int], part_size: int, min_part_size: int = MIN_PART_SIZE, max_copy: int = MAX_PART_SIZE
) -> list[Planned]:
    """The parts of the output made of pieces of ``sizes`` (in order): every part but the last has at least
    ``min_part_size`` bytes; a copied part at most ``max_copy``, a merged one at most ``part_size``."""
    parts: list[Planned] = []
    pending: list[tuple[int, int, int]] = []  # ranges to merge: fewer than min_part_size bytes between parts
    filled = 0
    for i, size in enumerate(sizes):
        at = 0
        if filled and size:
            if filled + size <= part_size:
                pending.append((i, 0, size))
                filled += size
                if filled >= min_part_size:
                    parts.append(Planned(False, tuple(pending)))
                    pending, filled = [], 0
                continue
            at = part_size - filled  # fill the merged part from this piece; the rest is copied or carried
            pending.append((i, 0, at))
            parts.append(Planned(False, tuple(pending)))
            pending, filled = [], 0
        rest = size - at
        if rest >= min_part_size:
            # Equal ranges, each at least min_part_size since max_copy >= 2 * min_part_size.
            n = -(-rest // max_copy)
            cuts = [at + rest * j // n for j in range(n + 1)]
            parts.extend(Planned(True, ((i, a, b),)) for a, b in pairwise(cuts))
        elif rest:
            pending, filled = [(i, at, size)], rest
    if pending:
        (i, start, end), whole = pending[0], sizes[pending[0][0]]
        # The last part has no minimum: one range is copied if S3 can copy it (all of a piece, or a range of a
        # piece larger than the minimum); a lone small output is merged, to become one PutObject.
        copyable = len(pending) == 1 and parts and ((start, end) == (0, whole) or whole >= min_part_size)
        parts.append(Planned(bool(copyable), tuple(pending)))
    return parts


def _token(bucket: str, key: str, pieces: Sequence[Mapping[str, Any]]) -> str:
    described = [bucket, key] + [
        [p["bucket"], p["key"], str(p["etag"]).strip('"'), p["bytes"]] for p in pieces
    ]
    return "compose-" + hashlib.sha256(json.dumps(described).encode()).hexdigest()[:32]


class _Composer:
    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        pieces: Sequence[Mapping[str, Any]],
        *,
        if_exists: str,
        part_size: int,
        min_part_size: int,
        max_copy: int,
        content_type: str | None,
        spill_prefix: str,
        concurrency: int,
    ) -> None:
        self.client, self.bucket, self.key, self.pieces = client, bucket, key, list(pieces)
        self.if_exists, self.part_size, self.content_type = if_exists, part_size, content_type
        self.min_part_size, self.max_copy, self.concurrency = min_part_size, max_copy, concurrency
        self.token = _token(bucket, key, self.pieces)
        # The state the writer's cleanup works on: the spill folder of this composition in the output's bucket.
        self.spill = WriterState(
            bucket=bucket,
            key=key,
            spill_bucket=bucket,
            spill_dir=f"{spill_prefix}{self.token}/",
            token=self.token,
        )
        self.out = OutputKey(
            lambda: client, bucket, key, self.token, bucket, self.spill.spill_dir, content_type
        )
        self.size = sum(int(p["bytes"]) for p in self.pieces)
        self.etag = ""
        self.upload_id = ""
        self.completed = False  # this attempt's completion made the object (its upload is complete, not open)
        self.merging = threading.Semaphore(max(1, default_concurrency(part_size)))

    def run(self) -> dict[str, Any]:
        condition, ours = self.out.existing(self.if_exists)
        if ours is not None:  # composed by an earlier run of reduce: only the cleanup is left
            self.etag = str(ours["ETag"])
        else:
            plan = plan_parts(
                [int(p["bytes"]) for p in self.pieces], self.part_size, self.min_part_size, self.max_copy
            )
            if len(plan) > MAX_PARTS:
                raise ConfigurationError(
                    f"s3://{self.bucket}/{self.key} would need {len(plan)} parts (at most {MAX_PARTS}): "
                    "pass a larger part_size"
                )
            conditions = {"IfNoneMatch": "*"} if condition == "*" else {"IfMatch": condition}
            try:
                if len(plan) <= 1 and not (plan and plan[0].copy):
                    self._put_whole(plan[0] if plan else Planned(False, ()), conditions)
                else:
                    self._multipart(plan, conditions)
            except OutputExistsError:
                raise
            except Exception:
                # Unless a concurrent attempt completed it (and may have cleaned up): abort this one's upload.
                if not self._finished_by_us():
                    self._abort_own()
                    raise
        self.out.prove_done(self.etag)  # also after a rerun: the run that completed may have died before this
        self._delete_pieces()
        cleanup(self.client, self.spill, keep_upload=self.upload_id if self.completed else "")
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag.strip('"'), "bytes": self.size}

    def _finished_by_us(self) -> bool:
        head = self.out.finished()
        if head is not None:
            self.etag = str(head["ETag"])
        return head is not None

    def _abort_own(self) -> None:
        """After an error: abort this attempt's upload (nobody else completes it); its marker stays for the
        cleanup of the attempt that succeeds."""
        if self.upload_id and not self.completed:
            with suppress(ClientError):  # else the next attempt's cleanup, or the lifecycle rule, aborts it
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)

    def _refused(self, exc: ClientError, expected_etag: str | None) -> None:
        """After a refused completion: the object an earlier attempt completed, or an error."""
        self.etag = self.out.recognise(exc, expected_etag, self.size)

    # ------------------------------------------------------------------------------------------ writing

    def _put_whole(self, part: Planned, conditions: dict[str, str]) -> None:
        body = self._merged(part)
        expected = f'"{md5_hex(body)}"'
        self.out.announce(expected)
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, **conditions, **self.out.extra()
            )
        except ClientError as exc:
            self._refused(exc, expected)
            return
        self.etag = str(response["ETag"])

    def _multipart(self, plan: list[Planned], conditions: dict[str, str]) -> None:
        try:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **self.out.extra()
            )
            self.upload_id = str(created["UploadId"])
            # Found and aborted by the cleanup of whichever attempt completes (an attempt that dies before this
            # PUT leaves an empty upload to the bucket's lifecycle rule).
            self.client.put_object(
                Bucket=self.bucket,
                Key=marker_key(self.spill.spill_dir, self.upload_id),
                Body=self.upload_id.encode(),
            )
        except ClientError as exc:
            raise_s3_error(exc, self.bucket, self.key, "start the multipart upload of")
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-compose") as pool:
            etags = list(pool.map(self._part, range(1, len(plan) + 1), plan))
        expected = multipart_etag(etags)
        self.out.announce(expected)
        try:
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
                **conditions,
            )
        except ClientError as exc:
            self._refused(exc, expected)
            return
        self.etag, self.completed = str(response["ETag"]), True

    def _part(self, number: int, part: Planned) -> str:
        common = {"Bucket": self.bucket, "Key": self.key, "UploadId": self.upload_id, "PartNumber": number}
        if not part.copy:
            with self.merging:
                return str(self.client.upload_part(Body=self._merged(part), **common)["ETag"])
        ((i, start, end),) = part.segments
        piece = self.pieces[i]
        etag = str(piece["etag"]).strip('"')
        extra = (
            {}
            if (start, end) == (0, int(piece["bytes"]))
            else {"CopySourceRange": f"bytes={start}-{end - 1}"}
        )
        response = self.client.upload_part_copy(
            CopySource={"Bucket": piece["bucket"], "Key": piece["key"]},
            CopySourceIfMatch=f'"{etag}"',
            **extra,
            **common,
        )
        return str(response["CopyPartResult"]["ETag"])

    def _merged(self, part: Planned) -> bytes:
        body = bytearray()
        for i, start, end in part.segments:
            piece = self.pieces[i]
            etag = '"' + str(piece["etag"]).strip('"') + '"'
            try:
                response = self.client.get_object(
                    Bucket=piece["bucket"], Key=piece["key"], Range=f"bytes={start}-{end - 1}", IfMatch=etag
                )
            except ClientError as exc:
                raise_s3_error(exc, piece["bucket"], piece["key"], "read the output's piece")
            body += response["Body"].read()
        return bytes(body)

    def _delete_pieces(self) -> None:
        for p in self.pieces:  # one by one: pieces may be in several buckets, and a shard job has few of them
            self.client.delete_object(Bucket=p["bucket"], Key=p["key"])


def compose_output(
    client: Any,
    bucket: str,
    key: str,
    pieces: Sequence[Mapping[str, Any]],
    *,
    if_exists: str = "fail",
    part_size: int = DEFAULT_PART_SIZE,
    content_type: str | None = None,
    spill_prefix: str = SPILL_PREFIX,
    concurrency: int = CONCURRENCY_CEILING,
    min_part_size: int = MIN_PART_SIZE,
    max_copy: int = MAX_PART_SIZE,
) -> dict[str, Any]:
    """Make ``s3://bucket/key`` the concatenation of ``pieces`` (in order), once; then delete the pieces.

    ``pieces``: what each shard's ``out.complete()`` returned (``{"bucket", "key", "etag", "bytes"}``), in shard
    order. Returns ``{"bucket", "key", "etag" (no quotes), "bytes"}``. Idempotent: a rerun after a crash at any
    point recognises the object it completed, or starts the composition again. ``if_exists``: ``"fail"`` raises
    :class:`OutputExistsError` when another object is at the key; ``"replace"`` replaces it (``If-Match`` on the
    ETag seen now). ``concurrency``: parts copied at once (merged parts: as many as the writer's memory share
    holds). ``min_part_size`` and ``max_copy`` exist only for tests against servers that lower S3's limits.
    """
    if if_exists not in ("fail", "replace"):
        raise ConfigurationError(f"if_exists must be 'fail' or 'replace', not {if_exists!r}")
    if not min_part_size <= part_size <= MAX_PART_SIZE:
        raise ConfigurationError(
            f"part_size {part_size} is outside S3's part sizes ({min_part_size} to {MAX_PART_SIZE} bytes)"
        )
    if not 2 * min_part_size <= max_copy <= MAX_PART_SIZE:
        raise ConfigurationError(
            f"max_copy must be 2 × min_part_size to {MAX_PART_SIZE} bytes, not {max_copy}"
        )
    if isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
    for p in pieces:
        if not {"bucket", "key", "etag", "bytes"} <= set(p):
            raise ConfigurationError(f"a piece is a writer's complete() result, not {p!r}")
    return _Composer(
        client,
        bucket,
        key,
        pieces,
        if_exists=if_exists,
        part_size=part_size,
        min_part_size=min_part_size,
        max_copy=max_copy,
        content_type=content_type,
        spill_prefix=spill_prefix,
        concurrency=concurrency,
    ).run()
