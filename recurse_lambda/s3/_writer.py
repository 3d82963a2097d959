"""An S3 output written exactly once across hops: a multipart upload whose position lives in the chain's state.

The facts this is built on (Amazon S3 User Guide, "Amazon S3 multipart upload limits",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html): parts are 5 MiB to 5 GiB except the last,
which has no minimum; part numbers run from 1 to 10,000. Re-uploading a part number replaces the part, so a
retry that re-uploads the parts after the last commit (same numbers) is idempotent. ``UploadPart`` takes no
conditional headers; ``CompleteMultipartUpload`` and ``PutObject`` take ``If-None-Match: *`` and ``If-Match``
(412 when the condition fails; 409 ``ConditionalRequestConflict`` on a concurrent conflicting write, after which
AWS says to start the upload again: "Conditional requests" and the API reference of CompleteMultipartUpload,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).

:class:`WriterState` is a field of the user's state. It holds the upload id, the committed parts (number, ETag,
size), the byte count and a reference to the *tail*: the bytes that do not fill a part yet. Whenever the
state is dumped (a checkpoint or a hand-off: the only moments anything is committed), a serializer hook first
spills the tail to a small object ``<spill prefix><chain id>/tail-<part>-<md5>`` (content-addressed, so an
uncommitted attempt can never overwrite what a committed state points at), so the envelope carries a reference,
never the bytes. The next hop reads the tail back and goes on. Everything under ``<spill prefix><chain id>/`` is
deleted when the object is completed or the upload aborted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from ..errors import ConfigurationError, OutputExistsError, S3Error
from ._output_key import OutputKey
from ._source import error_code, raise_s3_error
from ._writer_state import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    SPILL_PREFIX,
    WriterPart,
    WriterState,
    WriterTail,
    abort_upload,
    cleanup,
    default_concurrency,
    marker_key,
    md5_hex,
    multipart_etag,
)

__all__ = [
    "MIN_PART_SIZE",
    "OutputExistsError",
    "S3Writer",
    "WriterPart",
    "WriterState",
    "WriterTail",
    "abort_upload",
    "make_writer",
    "multipart_etag",
    "open_writer",
]


class S3Writer:
    """Bytes to ``s3://bucket/key``, in parts of ``part_size``; the object appears at :meth:`complete`.

    ``if_exists``: ``"fail"`` (the default) raises :class:`OutputExistsError` at once, before any work, when
    the key holds an object; ``"replace"`` replaces it (completing with ``If-Match`` on the ETag seen now).
    ``concurrency``: the parts uploaded at once while the next one fills (memory: ``concurrency`` ×
    ``part_size`` plus the part filling); by default :func:`default_concurrency`; 1 uploads each part as it
    fills, in the caller's thread. ``min_part_size`` exists only
    for tests against servers that lower S3's 5 MiB minimum (moto's ``S3_UPLOAD_PART_MIN_SIZE``).
    """

    def __init__(
        self,
        client_getter: Callable[[], Any],
        bucket: str,
        key: str,
        state: WriterState,
        *,
        chain_id: str,
        if_exists: str = "fail",
        part_size: int = DEFAULT_PART_SIZE,
        spill_bucket: str | None = None,
        spill_prefix: str = SPILL_PREFIX,
        content_type: str | None = None,
        min_part_size: int = MIN_PART_SIZE,
        concurrency: int | None = None,
    ) -> None:
        if if_exists not in ("fail", "replace"):
            raise ConfigurationError(f"if_exists must be 'fail' or 'replace', not {if_exists!r}")
        if not min_part_size <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"part_size {part_size} is outside S3's part sizes ({min_part_size} to {MAX_PART_SIZE} bytes)"
            )
        if not isinstance(state, WriterState):
            raise ConfigurationError(f"state must be a WriterState field of the chain's state, not {state!r}")
        if state.bucket and (state.bucket, state.key) != (bucket, key):
            raise ConfigurationError(
                f"this WriterState writes s3://{state.bucket}/{state.key}, not s3://{bucket}/{key}"
            )
        self._client_getter = client_getter
        self._client: Any = None
        self.state = state
        self.part_size = part_size
        self.content_type = content_type
        if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
            raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        self.concurrency = default_concurrency(part_size) if concurrency is None else concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: deque[tuple[int, bytes | bytearray, Future[str]]] = deque()
        self._buffer = bytearray()  # the part filling: a bytearray of part_size, its first _filled bytes
        self._filled = 0
        self._spare: list[bytearray] = []  # part buffers whose upload finished: reused, never reallocated
        self._synced: tuple[int, str] | None = None  # (size, md5) of the tail the state points at
        self._cleaned = False
        self._replay = False  # the object was finished by an earlier attempt: later writes are replays
        if not state.condition:  # the first use: the choice about an existing object is made now
            state.bucket, state.key, state.token = bucket, key, chain_id
            state.spill_bucket = spill_bucket or bucket
            state.spill_dir = f"{spill_prefix}{chain_id}/"
        self._out = OutputKey(
            lambda: self.client,
            state.bucket,
            state.key,
            state.token,
            state.spill_bucket,
            state.spill_dir,
            content_type,
        )
        if not state.condition:
            state.condition, head = self._out.existing(if_exists)
            if head is not None:
                self._adopt(head)  # this chain finished it, and crashed before it could record so
        elif state.tail is not None and not state.done:
            tail = self._read_tail(state.tail)
            if tail is not None:
                self._append(memoryview(tail))
                self._synced = (state.tail.size, state.tail.key.rsplit("-", 1)[-1])
        if state.done:  # committed finished (an attempt adopted the object it had completed): writes replay
            self._replay = True
        state.attach(self)

    def __repr__(self) -> str:
        s = self.state
        return f"S3Writer(s3://{s.bucket}/{s.key}, bytes={s.size}, parts={len(s.parts)}, done={s.done})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_getter()
        return self._client

    # ------------------------------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; every full part is uploaded now. Returns ``len(data)``."""
        if self.state.done:
            if self._replay:
                return len(data)  # an earlier attempt finished the object with these very bytes
            raise ConfigurationError(f"s3://{self.state.bucket}/{self.state.key} is complete: no more writes")
        view = memoryview(data).cast("B")
        self.state.size += view.nbytes
        self._append(view)
        return view.nbytes

    def _append(self, view: memoryview) -> None:
        # Copied once, into a part buffer; a full one is uploaded as it is and comes back for a later part, so
        # memory holds `concurrency + 1` buffers however large the output (no 8 MiB allocation per part).
        at = 0
        while at < view.nbytes and not self.state.done:
            if not self._buffer:
                self._buffer = self._spare.pop() if self._spare else bytearray(self.part_size)
            take = min(self.part_size - self._filled, view.nbytes - at)
            self._buffer[self._filled : self._filled + take] = view[at : at + take]
            self._filled += take
            at += take
            if self._filled == self.part_size:
                full, self._buffer, self._filled = self._buffer, bytearray(), 0
                self._upload_part(full)

    def _pending(self) -> bytes:
        return bytes(memoryview(self._buffer)[: self._filled])

    def sync(self) -> None:
        """Make the state describe every byte written: wait for the parts in flight, spill the tail if it
        changed (every dump of the state does this)."""
        s = self.state
        self._drain()
        if s.done:
            return
        if not self._filled:
            s.tail, self._synced = None, (0, "")
            return
        tail = self._pending()
        md5 = md5_hex(tail)
        if self._synced == (len(tail), md5) and s.tail is not None:
            return
        key = f"{s.spill_dir}tail-{len(s.parts) + 1:05d}-{md5}"
        try:
            response = self.client.put_object(Bucket=s.spill_bucket, Key=key, Body=tail)
        except ClientError as exc:
            raise_s3_error(exc, s.spill_bucket, key, "spill the output's tail to")
        s.tail = WriterTail(key=key, etag=str(response["ETag"]), size=len(tail))
        self._synced = (len(tail), md5)

    def complete(self) -> dict[str, Any]:
        """Make the object appear, once: ``{"bucket", "key", "etag" (no quotes), "bytes"}``. Idempotent."""
        s = self.state
        self._drain()
        if not s.done:
            if not s.upload_id:
                self._put_whole()
            else:
                if self._filled or not s.parts:
                    chunk = self._pending()
                    self._filled = 0
                    self._upload_part(chunk)
                    self._drain()
                if not s.done:
                    self._complete_upload()
            s.tail = None
            self._filled = 0
        self._buffer, self._spare = bytearray(), []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if not self._cleaned:  # also after a replay: the attempt that completed may have died before this
            self._out.prove_done(s.etag)
            self._cleanup(keep_upload=s.upload_id)
            self._cleaned = True
        return {"bucket": s.bucket, "key": s.key, "etag": s.etag.strip('"'), "bytes": s.size}

    def abort(self) -> None:
        """Abort the upload and delete the spilled tails (what a CANCELLED chain does)."""
        abort_upload(self.state, self.client)

    # ------------------------------------------------------------------------------------------ the requests

    def _conditions(self) -> dict[str, str]:
        c = self.state.condition
        return {"IfNoneMatch": "*"} if c == "*" else {"IfMatch": c}

    def _adopt(self, head: Mapping[str, Any]) -> None:
        """Take the finished object as this writer's: every later write replays bytes already in it."""
        s = self.state
        s.etag, s.size, s.tail = str(head["ETag"]), int(head["ContentLength"]), None
        self._filled = 0
        self._replay = True

    def _finished_by_us(self) -> bool:
        """True (and the object adopted) when the key holds the object this chain completed."""
        head = self._out.finished()
        if head is not None:
            self._adopt(head)
        return head is not None

    def _read_tail(self, tail: WriterTail) -> bytes | None:
        s = self.state
        try:
            response = self.client.get_object(Bucket=s.spill_bucket, Key=tail.key, IfMatch=tail.etag)
            data = bytes(response["Body"].read())
        except ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"} and self._finished_by_us():
                return None  # the completion deleted it: the object is finished
            raise_s3_error(exc, s.spill_bucket, tail.key, "read the output's spilled tail from")
        if len(data) != tail.size:
            raise S3Error(
                f"the spilled tail s3://{s.spill_bucket}/{tail.key} has {len(data)} bytes, not {tail.size}"
            )
        return data

    def _upload_part(self, chunk: bytes | bytearray) -> None:
        """Upload the next part: in the background when ``concurrency`` > 1 (at most that many in flight)."""
        s = self.state
        number = len(s.parts) + len(self._inflight) + 1
        if number > MAX_PARTS:
            raise ConfigurationError(
                f"s3://{s.bucket}/{s.key} needs more than {MAX_PARTS} parts of {self.part_size} bytes: "
                "pass a larger part_size"
            )
        if not s.upload_id:
            try:
                created = self.client.create_multipart_upload(Bucket=s.bucket, Key=s.key, **self._out.extra())
                s.upload_id = str(created["UploadId"])
                # A marker under the chain's spill folder: an upload created by an attempt that never committed
                # is found (and aborted) when the chain completes or is cancelled.
                self.client.put_object(
                    Bucket=s.spill_bucket, Key=marker_key(s.spill_dir, s.upload_id), Body=s.upload_id.encode()
                )
            except ClientError as exc:
                raise_s3_error(exc, s.bucket, s.key, "start the multipart upload of")
        if self.concurrency <= 1:
            self._collect(number, len(chunk), self._send, (number, chunk))
            self._reuse(chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-writer")
        self._inflight.append((number, chunk, self._pool.submit(self._send, number, chunk)))
        while len(self._inflight) > self.concurrency:  # `concurrency` uploads while the next part fills
            self._drain(1)

    def _send(self, number: int, chunk: bytes | bytearray) -> str:
        s = self.state
        response = self.client.upload_part(
            Bucket=s.bucket, Key=s.key, UploadId=s.upload_id, PartNumber=number, Body=chunk
        )
        return str(response["ETag"])  # the part's MD5 (botocore checks the body's checksum on the way)

    def _drain(self, n: int | None = None) -> None:
        """Wait for the oldest ``n`` uploads in flight (all when None) and record them in order."""
        while self._inflight and (n is None or n > 0):
            number, chunk, future = self._inflight.popleft()
            self._collect(number, len(chunk), future.result, ())
            self._reuse(chunk)
            n = None if n is None else n - 1

    def _reuse(self, chunk: bytes | bytearray) -> None:
        if isinstance(chunk, bytearray) and len(chunk) == self.part_size and not self.state.done:
            self._spare.append(chunk)

    def _collect(self, number: int, size: int, call: Callable[..., str], args: tuple[Any, ...]) -> None:
        s = self.state
        try:
            etag = call(*args)
        except Exception as exc:
            # S3 answers NoSuchUpload once the upload is complete (moto 5 raises an internal KeyError instead):
            # whatever the answer, an object this chain finished means an earlier attempt completed the upload
            # and died before it could record so.
            if s.done or self._finished_by_us():
                self._inflight.clear()
                return
            if isinstance(exc, ClientError):
                raise_s3_error(exc, s.bucket, s.key, f"upload part {number} of")
            raise
        if not s.done:
            s.parts.append(WriterPart(number=number, etag=etag, size=size))

    def _put_whole(self) -> None:
        s = self.state
        body = self._pending()
        expected = f'"{md5_hex(body)}"'
        self._out.announce(expected)
        try:
            response = self.client.put_object(
                Bucket=s.bucket, Key=s.key, Body=body, **self._conditions(), **self._out.extra()
            )
        except ClientError as exc:
            self._recognise(exc, expected)
            return
        s.etag = str(response["ETag"])

    def _complete_upload(self) -> None:
        s = self.state
        parts = [{"ETag": p.etag, "PartNumber": p.number} for p in s.parts]
        expected = multipart_etag([p.etag for p in s.parts])
        self._out.announce(expected)
        try:
            response = self.client.complete_multipart_upload(
                Bucket=s.bucket,
                Key=s.key,
                UploadId=s.upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditions(),
            )
        except ClientError as exc:
            self._recognise(exc, expected)
            return
        s.etag = str(response["ETag"])

    def _recognise(self, exc: ClientError, expected_etag: str | None) -> None:
        """After a refused completion: the object this chain finished before (not recorded), or an error."""
        self.state.etag = self._out.recognise(exc, expected_etag, self.state.size)

    def _cleanup(self, keep_upload: str = "") -> None:
        cleanup(self.client, self.state, keep_upload)


def make_writer(
    client_getter: Callable[[], Any], bucket: str, key: str, state: WriterState, **opts: Any
) -> S3Writer:
    """The writer ``run.s3.writer`` returns (``opts`` as for :class:`S3Writer`; ``chain_id`` is required)."""
    return S3Writer(client_getter, bucket, key, state, **opts)


def open_writer(run: Any, bucket: str, key: str, state: WriterState, **opts: Any) -> S3Writer:
    """A writer for a handler's ``run``: over ``run.s3``'s client, its spill folder named by ``run.chain_id``."""
    return S3Writer(lambda: run.s3.client, bucket, key, state, chain_id=run.chain_id, **opts)
