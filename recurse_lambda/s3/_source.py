"""A read-only view of one S3 object pinned to its ETag, so a chain never mixes two versions of it.

The pin (``{"etag", "version_id", "size"}``) lives in a chain-level mapping that the runner saves with every
checkpoint, so every hop of a chain reads exactly the object the first hop saw. Every ranged GET sends
``IfMatch`` (and ``VersionId`` when the bucket is versioned); S3 answers 412 when the object changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from http.client import HTTPException
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as URLLib3Error

from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3Error,
)
from ._body import BufferPool, read_into

__all__ = ["PinnedSource", "error_code", "raise_s3_error"]

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled"})
_CHANGED = frozenset({"PreconditionFailed", "412"})
_OUT_OF_RANGE = frozenset({"InvalidRange", "416"})
_BARE_404 = frozenset({"NotFound", "404"})


def error_code(exc: ClientError) -> str:
    """The S3 error code of ``exc`` (HEAD responses have no body, so botocore uses the status as the code)."""
    error = exc.response.get("Error") or {}
    code = error.get("Code")
    if code:
        return str(code)
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(status) if status is not None else "Unknown"


def raise_s3_error(exc: ClientError, bucket: str, key: str, action: str, *, client: Any = None) -> NoReturn:
    """Raise the library's error for a botocore ``ClientError`` on ``s3://bucket/key`` (412 excluded).

    HEAD answers a missing bucket and a missing key alike (a bare 404); given a ``client``, a HEAD on the
    bucket tells them apart, because "bucket does not exist" is worth a clear message.
    """
    code = error_code(exc)
    url = f"s3://{bucket}/{key}"
    if code == "NoSuchBucket" or (
        code in _BARE_404 and client is not None and _bucket_missing(client, bucket)
    ):
        raise BucketNotFoundError(f"cannot {action} {url}: bucket {bucket!r} does not exist") from exc
    if code in _NOT_FOUND:
        raise ObjectNotFoundError(f"cannot {action} {url}: no such key") from exc
    if code == "NoSuchVersion":
        raise ObjectNotFoundError(f"cannot {action} {url}: the pinned version no longer exists") from exc
    if code in _DENIED:
        raise AccessDeniedError(f"cannot {action} {url}: access denied ({code})") from exc
    message = (exc.response.get("Error") or {}).get("Message", "")
    raise S3Error(f"cannot {action} {url}: {code} {message}".rstrip()) from exc


def _bucket_missing(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return error_code(exc) in {"404", "NoSuchBucket", "NotFound"}
    return False


class PinnedSource:
    """One S3 object pinned to the ETag (and version) recorded in ``pins``; ``read`` sends ``IfMatch``.

    ``pins`` is keyed by ``"bucket/key"``. A key already there is trusted without a request (a later hop);
    otherwise the object is HEADed once and its pin recorded (the first hop).
    """

    __slots__ = ("_bucket", "_client", "_key", "_pin")

    def __init__(
        self, client: Any, bucket: str, key: str, *, pins: MutableMapping[str, dict[str, Any]]
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        pin_key = f"{bucket}/{key}"
        pin = pins.get(pin_key)
        if pin is None:
            head = self._head()
            pin = {
                "etag": head["ETag"],
                "version_id": head.get("VersionId"),
                "size": int(head["ContentLength"]),
            }
            pins[pin_key] = pin
        self._pin = pin

    def __repr__(self) -> str:
        return (
            f"PinnedSource(s3://{self._bucket}/{self._key}, etag={self.etag}, size={self._pin.get('size')})"
        )

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key(self) -> str:
        return self._key

    @property
    def etag(self) -> str:
        return str(self._pin["etag"])

    def note(self, name: str, value: Any = None) -> Any:
        """Read (or, given ``value``, record) a fact about the pinned object in its pin, which the chain commits
        with its progress: a later hop learns it without a request (the readers note the compression)."""
        if value is not None:
            self._pin[name] = value
        return self._pin.get(name)

    @property
    def version_id(self) -> str | None:
        version = self._pin.get("version_id")
        return None if version is None else str(version)

    @property
    def size(self) -> int:
        """The pinned object's size; a pin saved without one is completed by a HEAD that checks the ETag."""
        size = self._pin.get("size")
        if size is None:
            head = self._head(if_match=True)
            size = self._pin["size"] = int(head["ContentLength"])
        return int(size)

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)`` of the pinned object, clamped to its size (no request when empty)."""
        body = self._get(start, end)
        if body is None:
            return b""
        with self._reading(body):
            return bytes(body.read())

    def iter_pieces(self, start: int, end: int, pool: BufferPool) -> Iterator[memoryview]:
        """Like :meth:`read`, one GET, its body yielded as it arrives, in views of buffers from ``pool``.

        The request is made on the first ``next``; closing the iterator early closes the body. A body cut
        short just ends: the bytes yielded are then fewer than asked for.
        """
        body = self._get(start, end)
        if body is not None:
            with self._reading(body):
                yield from read_into(body, pool)

    def _get(self, start: int, end: int) -> Any:
        """The body of a GET of ``[start, end)`` (clamped to the size), or ``None`` if that is empty."""
        end = min(end, self.size)
        if start < 0:
            raise ValueError(f"start must be >= 0, not {start}")
        if start >= end:
            return None
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self._key,
            "Range": f"bytes={start}-{end - 1}",
            "IfMatch": self.etag,
        }
        if self.version_id is not None:
            kwargs["VersionId"] = self.version_id
        try:
            response = self._client.get_object(**kwargs)
        except ClientError as exc:
            self._raise(exc, "read")
        except BotoCoreError as exc:  # connection reset, read timeout: transient, so the hop is retried
            raise S3Error(f"cannot read s3://{self._bucket}/{self._key}: {exc}") from exc
        returned = response.get("ETag")
        if returned is not None and str(returned) != self.etag:  # a server that ignored IfMatch
            response["Body"].close()
            raise ObjectChangedError(self._bucket, self._key, self.etag, str(returned))
        return response["Body"]

    @contextlib.contextmanager
    def _reading(self, body: Any) -> Iterator[None]:
        """Close the body after; a body that breaks is an object change if the pin no longer holds."""
        try:
            yield
        except (BotoCoreError, URLLib3Error, HTTPException, OSError) as exc:
            # The body broke (IncompleteRead, reset, timeout). A server replacing the object may cut the body
            # it is sending, so ask whether the pin still holds before calling the failure transient.
            self._check_pin(exc)
            raise S3Error(f"cannot read s3://{self._bucket}/{self._key}: {exc}") from exc
        finally:
            body.close()

    def _check_pin(self, cause: BaseException) -> None:
        """Raise ``ObjectChangedError`` (or ``ObjectNotFoundError``) if the pinned object is gone; else return.

        A HEAD that fails for another reason proves nothing, so the caller's transient error stands.
        """
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key, "IfMatch": self.etag}
        if self.version_id is not None:
            kwargs["VersionId"] = self.version_id
        try:
            head = self._client.head_object(**kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code in _CHANGED:
                raise ObjectChangedError(self._bucket, self._key, self.etag, self._current_etag()) from cause
            if code in _NOT_FOUND or code == "NoSuchVersion":
                raise_s3_error(exc, self._bucket, self._key, "read")
            return
        except Exception:
            return
        current = head.get("ETag")
        if current is not None and str(current) != self.etag:  # a server that ignored IfMatch
            raise ObjectChangedError(self._bucket, self._key, self.etag, str(current)) from cause

    def _head(self, *, if_match: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if if_match:
            kwargs["IfMatch"] = self.etag
            if self.version_id is not None:
                kwargs["VersionId"] = self.version_id
        try:
            head: dict[str, Any] = self._client.head_object(**kwargs)
        except BotoCoreError as exc:
            raise S3Error(f"cannot inspect s3://{self._bucket}/{self._key}: {exc}") from exc
        except ClientError as exc:
            if if_match:
                self._raise(exc, "inspect")
            raise_s3_error(exc, self._bucket, self._key, "inspect", client=self._client)
        return head

    def _raise(self, exc: ClientError, action: str) -> NoReturn:
        code = error_code(exc)
        if code in _CHANGED:
            raise ObjectChangedError(self._bucket, self._key, self.etag, self._current_etag()) from exc
        if code in _OUT_OF_RANGE:
            # Reads stay within the pinned size, so a range the server calls unsatisfiable means the object
            # shrank: some servers answer 416 before they evaluate IfMatch.
            current = self._current_etag()
            if current != self.etag:
                raise ObjectChangedError(self._bucket, self._key, self.etag, current) from exc
        raise_s3_error(exc, self._bucket, self._key, action, client=self._client)

    def _current_etag(self) -> str | None:
        # Only to make the error message useful: a failure here must not hide the 412 itself.
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._key)
        except Exception:
            return None
        etag = head.get("ETag")
        return None if etag is None else str(etag)
