"""The resumable S3 writer on moto: small and multipart outputs, hand-offs through a dumped state, the
recognition of an object the chain finished before, existing objects, and aborts (s3/_writer.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import moto.s3.models
import pytest
from pydantic import BaseModel

from recurse_lambda.errors import ConfigurationError
from recurse_lambda.s3._writer import OutputExistsError, S3Writer, make_writer
from recurse_lambda.s3._writer_state import WriterState, abort_upload, multipart_etag
from recurse_lambda.s3._writer_text import CsvWriter, JsonLinesWriter, TextWriter

BUCKET = "out"
PART = 1024  # tests lower S3's 5 MiB minimum part size (moto's too) so that outputs have many parts


class State(BaseModel):
    out: WriterState = WriterState()
    n: int = 0


@pytest.fixture
def s3(moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)
    moto_s3.create_bucket(Bucket=BUCKET)
    yield moto_s3


def writer(s3: Any, state: WriterState, key: str = "o", **opts: Any) -> S3Writer:
    opts.setdefault("part_size", PART)
    return make_writer(lambda: s3, BUCKET, key, state, chain_id="chain-1", min_part_size=PART, **opts)


def commit(state: State) -> str:
    """What a checkpoint or hand-off does: dump the state (the tail is spilled then)."""
    return json.dumps(state.model_dump(mode="json", round_trip=True))


def load(committed: str) -> State:
    return State.model_validate(json.loads(committed))


def hand_off(state: State) -> State:
    return load(commit(state))


def body(s3: Any, key: str = "o") -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ())]


def open_uploads(s3: Any) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", ()))


def test_a_small_output_is_one_conditional_put(s3: Any) -> None:
    state = State()
    out = writer(s3, state.out)
    out.write(b"hello ")
    out.write(b"world\n")
    info = out.complete()
    assert body(s3) == b"hello world\n"
    assert info == {
        "bucket": BUCKET,
        "key": "o",
        "etag": hashlib.md5(b"hello world\n").hexdigest(),
        "bytes": 12,
    }
    assert keys(s3) == ["o"] and open_uploads(s3) == []
    assert out.complete() == info  # idempotent


def test_parts_across_hand_offs_make_one_object(s3: Any) -> None:
    data = bytes(range(256)) * 23  # 5,888 bytes: 5 full parts and a tail
    state = State()
    for i in range(0, len(data), 700):
        out = writer(s3, state.out)
        out.write(data[i : i + 700])
        state = hand_off(state)
        if i < len(data) - 700:
            assert "o" not in keys(s3)  # nothing appears before the completion
    info = writer(s3, state.out).complete()
    assert body(s3) == data
    size = state.out.parts[0].size  # S3's multipart ETag, computed from the bytes themselves
    md5s = [hashlib.md5(data[i : i + size]).hexdigest() for i in range(0, len(data), size)]
    assert multipart_etag(md5s) == f'"{info["etag"]}"'
    assert [p.etag.strip('"') for p in state.out.parts] == md5s
    assert len(state.out.parts) == 6 and keys(s3) == ["o"] and open_uploads(s3) == []


@pytest.mark.parametrize("concurrency", [2, 4])
def test_parts_uploaded_in_the_background_are_committed_in_order(s3: Any, concurrency: int) -> None:
    data = bytes(range(256)) * 40
    state = State()
    for i in range(0, len(data), 2500):
        out = writer(s3, state.out, concurrency=concurrency)
        out.write(data[i : i + 2500])
        state = hand_off(state)  # the dump waits for the uploads in flight
        assert [p.number for p in state.out.parts] == list(range(1, len(state.out.parts) + 1))
        assert sum(p.size for p in state.out.parts) + (state.out.tail.size if state.out.tail else 0) == min(
            i + 2500, len(data)
        )
    writer(s3, state.out, concurrency=concurrency).complete()
    assert body(s3) == data and open_uploads(s3) == []


def test_the_tail_is_spilled_not_carried(s3: Any) -> None:
    state = State()
    writer(s3, state.out).write(b"x" * 900)
    dumped = state.model_dump(mode="json")
    assert len(json.dumps(dumped)) < 2000 and dumped["out"]["tail"]["size"] == 900
    assert any(k.startswith("_recurse_lambda/writer/chain-1/tail-") for k in keys(s3))


def test_a_retry_after_an_unrecorded_completion_finishes(s3: Any) -> None:
    data = b"abcdefghij" * 300
    state = State()
    writer(s3, state.out).write(data[:1500])
    committed = commit(state)  # the last commit before the completing hop
    out = writer(s3, load(committed).out)
    out.write(data[1500:])
    first = out.complete()  # ... and the hop dies before it records the end
    retry = load(committed)
    out = writer(s3, retry.out)
    out.write(data[1500:])
    assert out.complete() == first
    assert body(s3) == data and keys(s3) == ["o"] and open_uploads(s3) == []


def test_a_retry_of_a_small_output_after_an_unrecorded_put(s3: Any) -> None:
    fresh = State()
    out = writer(s3, fresh.out)
    out.write(b"tiny\n")
    first = out.complete()
    out = writer(s3, State().out)  # the retry starts from nothing: the first hop never committed
    out.write(b"tiny\n")
    assert out.complete() == first and keys(s3) == ["o"]


def test_an_existing_object_fails_before_any_work_or_is_replaced(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="o", Body=b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        writer(s3, State().out)
    state = State()
    out = writer(s3, state.out, if_exists="replace")
    out.write(b"new" * 1000)
    out.complete()
    assert body(s3) == b"new" * 1000


def test_a_replacement_never_overwrites_a_newer_object(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="o", Body=b"old")
    state = State()
    out = writer(s3, state.out, if_exists="replace")
    out.write(b"new")
    s3.put_object(Bucket=BUCKET, Key="o", Body=b"someone else's")  # changed after the writer saw it
    with pytest.raises(OutputExistsError, match="another writer"):
        out.complete()
    assert body(s3) == b"someone else's"


def test_a_new_object_never_overwrites_one_that_appeared(s3: Any) -> None:
    state = State()
    out = writer(s3, state.out)
    out.write(b"z" * 3000)
    s3.put_object(Bucket=BUCKET, Key="o", Body=b"first")
    with pytest.raises(OutputExistsError):
        out.complete()
    assert body(s3) == b"first"


def test_abort_upload_leaves_nothing(s3: Any) -> None:
    state = State()
    writer(s3, state.out).write(b"q" * 2500)
    dumped = hand_off(state).model_dump(mode="json")
    assert open_uploads(s3) and keys(s3)
    assert abort_upload(dumped, s3) == 1
    assert open_uploads(s3) == [] and keys(s3) == []


def test_an_upload_of_an_attempt_that_never_committed_is_aborted_at_the_end(s3: Any) -> None:
    lost = State()
    writer(s3, lost.out).write(b"a" * 2500)  # uploads parts, then dies before any commit
    state = State()
    out = writer(s3, state.out)
    out.write(b"a" * 2500)
    out.complete()
    assert open_uploads(s3) == [] and keys(s3) == ["o"]


def test_bad_options_are_refused_before_any_request() -> None:

    def no_client() -> Any:
        raise AssertionError("no request")

    with pytest.raises(ConfigurationError, match="if_exists"):
        make_writer(no_client, BUCKET, "o", WriterState(), chain_id="c", if_exists="maybe")
    with pytest.raises(ConfigurationError, match="part_size"):
        make_writer(no_client, BUCKET, "o", WriterState(), chain_id="c", part_size=1024)


def test_text_helpers(s3: Any) -> None:
    state = State()
    out = writer(s3, state.out)
    TextWriter(out).write_line("ünïcode")
    JsonLinesWriter(out).write_record({"a": "é", "b": [1, 2]})
    csv_out = CsvWriter(out, header=["x", "y"])  # not at the start: no header
    csv_out.write_row(["1,5", 'say "hi"'])
    out.complete()
    assert body(s3) == 'ünïcode\n{"a":"é","b":[1,2]}\n"1,5","say ""hi"""\r\n'.encode()
    state2 = State()
    out2 = writer(s3, state2.out, key="c")
    CsvWriter(out2, header=["x", "y"]).write_row([1, 2])
    out2.complete()
    assert body(s3, "c") == b"x,y\r\n1,2\r\n"


def test_a_retry_after_a_completion_whose_cleanup_was_lost_finishes(s3: Any) -> None:
    """The completing hop died between CompleteMultipartUpload and the deletion of the spilled tail: the retry
    reads the tail, its next part upload finds the upload gone, and it recognises the object as its own."""
    data = b"0123456789" * 400
    state = State()
    writer(s3, state.out).write(data[:1500])
    committed = commit(state)
    tail = load(committed).out.tail
    assert tail is not None
    spilled = body(s3, tail.key)
    out = writer(s3, load(committed).out)
    out.write(data[1500:])
    first = out.complete()
    s3.put_object(Bucket=BUCKET, Key=tail.key, Body=spilled)  # as if the cleanup never ran
    out = writer(s3, load(committed).out)
    out.write(data[1500:])  # the upload is complete: these writes replay bytes already in the object
    assert out.complete() == first
    assert body(s3) == data and keys(s3) == ["o"] and open_uploads(s3) == []


def test_a_completed_writer_refuses_more_writes(s3: Any) -> None:

    out = writer(s3, State().out)
    out.write(b"a")
    out.complete()
    with pytest.raises(ConfigurationError, match="complete"):
        out.write(b"b")


def test_which_conditional_writes_moto_honours(s3: Any) -> None:
    """What docs/outputs.md says about moto (5.x): PutObject honours If-None-Match: * and If-Match;
    CompleteMultipartUpload honours If-None-Match: * but ignores If-Match, and a second completion of the same
    upload returns the object instead of NoSuchUpload. The writer's own checks do not depend on the last two."""
    from botocore.exceptions import ClientError

    s3.put_object(Bucket=BUCKET, Key="k", Body=b"1")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfNoneMatch="*")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfMatch='"0123"')

    def upload() -> tuple[str, list[dict[str, Any]]]:
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
        etag = s3.upload_part(Bucket=BUCKET, Key="k", UploadId=uid, PartNumber=1, Body=b"p")["ETag"]
        return uid, [{"ETag": etag, "PartNumber": 1}]

    uid, parts = upload()
    with pytest.raises(ClientError, match="PreconditionFailed"):
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="k", UploadId=uid, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    s3.complete_multipart_upload(  # If-Match with a wrong ETag: moto completes anyway (S3 answers 412)
        Bucket=BUCKET, Key="k", UploadId=uid, MultipartUpload={"Parts": parts}, IfMatch='"0123"'
    )
    again = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="k", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    assert again["ETag"] == s3.head_object(Bucket=BUCKET, Key="k")["ETag"]


def test_multipart_etag_needs_md5_part_etags() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    assert multipart_etag([f'"{md5}"', md5]) == f'"{hashlib.md5(bytes.fromhex(md5) * 2).hexdigest()}-2"'
    assert multipart_etag([f'"{md5}"', '"not-an-md5-kms-etag"']) is None  # recognised by metadata only


@pytest.mark.parametrize(
    ("memory_mb", "part_mib", "expected"),
    [
        (None, 8, 10),
        ("512", 8, 10),
        ("10240", 8, 10),
        ("128", 8, 1),
        ("256", 8, 4),
        ("512", 64, 1),
        ("x", 8, 10),
    ],
)
def test_default_concurrency_follows_the_function_memory(
    s3: Any, monkeypatch: pytest.MonkeyPatch, memory_mb: str | None, part_mib: int, expected: int
) -> None:
    from recurse_lambda.s3._writer import default_concurrency

    if memory_mb is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    assert default_concurrency(part_mib * 1024 * 1024) == expected
    assert writer(s3, WriterState(), part_size=part_mib * 1024 * 1024).concurrency == expected
    with pytest.raises(ConfigurationError, match="concurrency"):
        writer(s3, WriterState(), concurrency=0)


def test_a_state_committed_after_adopting_the_finished_object_replays(s3: Any) -> None:
    # Found by the fault-schedule property: a retry from the chain's start adopts the object an earlier attempt
    # completed, commits that state at a safe point, and dies; the next retry resumes from that commit.
    first = writer(s3, State().out)
    first.write(b"ab")
    info = first.complete()
    retry = State()
    adopted = writer(s3, retry.out)
    assert adopted.write(b"a") == 1  # replayed, not written
    committed = hand_off(retry)
    assert committed.out.done
    later = writer(s3, committed.out)
    assert later.write(b"b") == 1
    assert later.complete() == info and body(s3) == b"ab" and open_uploads(s3) == []


@pytest.mark.parametrize("concurrency", [1, 3])
def test_part_buffers_are_reused_whatever_the_output_size(s3: Any, concurrency: int) -> None:
    out = writer(s3, State().out, concurrency=concurrency)
    sent: list[Any] = []  # the buffers themselves (kept alive, so that ids are not recycled)
    send = out._send

    def watch(number: int, chunk: Any) -> str:
        sent.append(chunk)
        return send(number, chunk)

    out._send = watch  # type: ignore[method-assign]
    data = bytes(range(256)) * (PART // 256 * 20 + 3)  # 20 full parts and a tail, in odd-sized writes
    for i in range(0, len(data), 3001):
        out.write(memoryview(data)[i : i + 3001])
    out.complete()
    assert body(s3) == data and open_uploads(s3) == []
    assert (
        len(sent) == 21 and len({id(c) for c in sent[:20]}) <= concurrency + 1
    )  # the same buffers, again and again


def test_cancel_aborts_the_upload_of_a_cancelled_chain_and_calls_s3_only_for_a_writer(s3: Any) -> None:
    from recurse_lambda.control import ChainControl
    from recurse_lambda.core.memory_ledger import InMemoryLedger
    from recurse_lambda.local import VirtualClock

    state = State()
    out = writer(s3, state.out)
    out.write(b"x" * (3 * PART + 10))  # three parts uploaded, a tail
    dumped = json.loads(commit(state))
    assert len(open_uploads(s3)) == 1 and keys(s3) != []  # the upload, its marker and the spilled tail
    ledger, clock = InMemoryLedger(), VirtualClock()
    ledger.start("c", progress={"state": dumped}, event={}, now=clock.time())
    ledger.start("plain", progress={"state": {"i": 1}}, event={}, now=clock.time())
    factories: list[str] = []

    def factory(service: str) -> Any:
        factories.append(service)
        return s3

    control = ChainControl(ledger, clock=clock, environ={}, client_factory=factory, invoker=object())  # type: ignore[arg-type]
    control.cancel("plain")
    assert factories == []  # no writer in that state: no S3 client, no request
    assert control.cancel("c").status.value == "CANCELLED"
    assert factories == ["s3"] and open_uploads(s3) == [] and keys(s3) == []


class NoMetadata:
    """A server that keeps no user metadata (as the JuiceFS gateway does for multipart uploads): HEAD omits it."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def head_object(self, **kwargs: Any) -> Any:
        return {k: v for k, v in self.s3.head_object(**kwargs).items() if k != "Metadata"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)


class DiesAfterCompleting(NoMetadata):
    """The attempt completes the object, then dies before anything else (the done marker after it included)."""

    def put_object(self, **kwargs: Any) -> Any:
        response = self.s3.put_object(**kwargs)
        if kwargs["Key"] == "o":
            raise SystemExit("the invocation died")
        return response

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        self.s3.complete_multipart_upload(**kwargs)
        raise SystemExit("the invocation died")


@pytest.mark.parametrize("size", [10, 5 * PART + 7])  # one PutObject; a multipart upload
def test_a_retry_from_the_start_recognises_the_object_on_a_server_without_metadata(
    s3: Any, size: int
) -> None:
    # The done marker names the expected ETag *before* the completion, so the object is recognised even when the
    # attempt that completed it died before it could write anything after it.
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    dying = make_writer(
        lambda: DiesAfterCompleting(s3),
        BUCKET,
        "o",
        State().out,
        chain_id="c",
        min_part_size=PART,
        part_size=PART,
    )
    dying.write(data)
    with pytest.raises(SystemExit):
        dying.complete()
    assert body(s3) == data
    retry = make_writer(
        lambda: NoMetadata(s3), BUCKET, "o", State().out, chain_id="c", min_part_size=PART, part_size=PART
    )
    assert retry.state.done  # recognised before any work: the writes replay
    retry.write(data)
    info = retry.complete()
    assert info["bytes"] == size and body(s3) == data and open_uploads(s3) == []
    assert keys(s3) == ["_recurse_lambda/writer/c/done", "o"]  # kept on such a server, for later retries
    with pytest.raises(OutputExistsError):  # another chain's writer is refused, as before
        make_writer(lambda: NoMetadata(s3), BUCKET, "o", State().out, chain_id="another", min_part_size=PART)
