"""The key an output is completed at, as the writer and ``compose_output`` both see it.

Both complete an object exactly once: with a condition (``If-None-Match: *``, or ``If-Match`` on the ETag of the
object they replace), and, when a completion is refused, by recognising the object an earlier attempt of theirs
completed. An object is theirs when its metadata carries their token (``x-amz-meta-recurse-lambda-writer``), or,
on servers that keep no metadata (the JuiceFS gateway), when the done marker in their spill folder names its ETag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ..errors import OutputExistsError
from ._source import error_code, raise_s3_error
from ._writer_state import GONE, META, done_key

__all__ = ["OutputKey"]

_FAILED = frozenset({"PreconditionFailed", "412"})
_CONFLICT = frozenset({"ConditionalRequestConflict", "409"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass
class OutputKey:
    """``s3://bucket/key``, completed by the writer (or composition) named ``token``."""

    client: Callable[[], Any]  # the S3 client, made on first use
    bucket: str
    key: str
    token: str
    spill_bucket: str
    spill_dir: str
    content_type: str | None = None
    announced: str = field(default="", init=False)  # the ETag the done marker names before the completion

    def announce(self, expected_etag: str | None) -> None:
        """Before a completion: the done marker names the ETag the object will have, when it can be known (the
        MD5 of a small body; the multipart ETag of MD5 parts). An attempt that completes and dies at once is then
        recognised by a retry that starts over, even on a server that keeps no metadata (the JuiceFS gateway).
        Naming an ETag no object gets is harmless, and an object that has it holds the very bytes this completion
        writes (the ETag is their MD5, or the MD5 of their parts' MD5s)."""
        if expected_etag:
            self.client().put_object(
                Bucket=self.spill_bucket, Key=done_key(self.spill_dir), Body=expected_etag.encode()
            )
            self.announced = expected_etag

    def extra(self) -> dict[str, Any]:
        """What the object is created with: the token in its metadata, and its content type."""
        extra: dict[str, Any] = {"Metadata": {META: self.token}}
        if self.content_type:
            extra["ContentType"] = self.content_type
        return extra

    def existing(self, if_exists: str) -> tuple[str, Mapping[str, Any] | None]:
        """Before any work: the condition to complete with, and the HEAD of an object already ours (finished by
        an earlier attempt that died before it could record so), if there is one.

        ``("*", None)``: nothing at the key. ``("*", head)``: ours. ``(etag, None)``: another object, replaced
        (``if_exists="replace"``). With ``if_exists="fail"``, another object raises :class:`OutputExistsError`.
        """
        try:
            head = self.client().head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return "*", None
            raise_s3_error(exc, self.bucket, self.key, "inspect the output", client=self.client())
        if self.ours(head):
            return "*", head
        if if_exists == "fail":
            raise OutputExistsError(
                self.bucket,
                self.key,
                f"the output already exists (ETag {head['ETag']}); pass if_exists='replace'",
            )
        return str(head["ETag"]), None

    def ours(self, head: Mapping[str, Any]) -> bool:
        """Whether the object HEAD describes is the one completed under this token."""
        if (head.get("Metadata") or {}).get(META) == self.token:
            return True
        try:
            marker = self.client().get_object(Bucket=self.spill_bucket, Key=done_key(self.spill_dir))
        except ClientError:
            return False
        return bool(marker["Body"].read().decode() == str(head["ETag"]))

    def finished(self) -> Mapping[str, Any] | None:
        """The HEAD of the object at the key if it is ours, else None (whatever S3 answers)."""
        try:
            head = self.client().head_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return None
        return head if self.ours(head) else None

    def prove_done(self, etag: str) -> None:
        """After a completion (this attempt's or an earlier one's): on a server that kept no metadata, the done
        marker must name the object's ETag (it survives the cleanup of the spill folder and expires with its
        lifecycle rule); on one that kept it, a marker announced before the completion is deleted."""
        head = self.client().head_object(Bucket=self.bucket, Key=self.key)
        if (head.get("Metadata") or {}).get(META) == self.token:
            with suppress(ClientError):  # else left to the lifecycle rule
                self.client().delete_object(Bucket=self.spill_bucket, Key=done_key(self.spill_dir))
        elif self.announced != etag:
            self.client().put_object(
                Bucket=self.spill_bucket, Key=done_key(self.spill_dir), Body=etag.encode()
            )

    def recognise(self, exc: ClientError, expected_etag: str | None, size: int) -> str:
        """After a refused completion: the ETag of the object an earlier attempt completed (one of ``size``
        bytes, with ``expected_etag`` or ours by :meth:`ours`); otherwise an error."""
        code = error_code(exc)
        if code in _CONFLICT:
            raise OutputExistsError(
                self.bucket,
                self.key,
                "another write to the key conflicted with the completion (409); the chain stops",
            ) from exc
        if code not in _FAILED | GONE:
            raise_s3_error(exc, self.bucket, self.key, "complete")
        try:
            head = self.client().head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as head_exc:
            raise_s3_error(head_exc, self.bucket, self.key, "inspect the output")
        etag = str(head["ETag"])
        if not (etag == expected_etag or self.ours(head)) or int(head["ContentLength"]) != size:
            raise OutputExistsError(
                self.bucket, self.key, f"another writer's object is at the key (ETag {etag}); the chain stops"
            ) from exc
        return etag
