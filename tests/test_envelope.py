"""The continuation envelope: layout, signing, version, spilling, and the same-version target."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from recurse_lambda import (
    ENVELOPE_KEY,
    ConfigurationError,
    Envelope,
    EnvelopeCodec,
    EnvelopeError,
    EnvelopeSignatureError,
    same_version_target,
)
from recurse_lambda.local import MemorySpillStore

ENV = Envelope(
    chain_id="c1",
    hop=3,
    progress={"state": {"offset": 10}, "chunks": 7, "pins": {}},
    event={"bucket": "b", "key": "k"},
    started_at=1000.5,
    code_version="4",
)


def test_round_trip_keeps_everything_under_one_reserved_key():
    codec = EnvelopeCodec()
    payload = json.loads(codec.encode(ENV))
    assert list(payload) == [ENVELOPE_KEY]
    assert payload[ENVELOPE_KEY]["v"] == 1
    assert codec.decode(payload) == ENV


def test_signed_envelope_verifies_and_tampering_is_rejected():
    codec = EnvelopeCodec(signing_key=b"k" * 32)
    payload = json.loads(codec.encode(ENV))
    assert codec.decode(payload) == ENV
    payload[ENVELOPE_KEY]["progress"]["state"]["offset"] = 999_999
    with pytest.raises(EnvelopeSignatureError, match="does not match"):
        codec.decode(payload)


def test_unsigned_or_wrongly_signed_envelope_is_rejected_when_a_key_is_set():
    unsigned = json.loads(EnvelopeCodec().encode(ENV))
    with pytest.raises(EnvelopeSignatureError, match="not signed"):
        EnvelopeCodec(signing_key=b"secret").decode(unsigned)
    other = json.loads(EnvelopeCodec(signing_key=b"other").encode(ENV))
    with pytest.raises(EnvelopeSignatureError):
        EnvelopeCodec(signing_key=b"secret").decode(other)


def test_unknown_version_and_malformed_bodies_are_clear_errors():
    codec = EnvelopeCodec()
    payload = json.loads(codec.encode(ENV))
    payload[ENVELOPE_KEY]["v"] = 99
    with pytest.raises(EnvelopeError, match="version 99"):
        codec.decode(payload)
    with pytest.raises(EnvelopeError, match="not a JSON object"):
        codec.decode({ENVELOPE_KEY: "nope"})
    broken = json.loads(codec.encode(ENV))
    del broken[ENVELOPE_KEY]["hop"]
    with pytest.raises(EnvelopeError, match="malformed"):
        codec.decode(broken)


def big_envelope(size: int) -> Envelope:
    return Envelope("c1", 1, {"state": {"blob": "x" * size}, "chunks": 0, "pins": {}}, {"k": 1}, 0.0)


def test_an_envelope_over_the_limit_without_a_spill_store_fails_before_any_invoke():
    codec = EnvelopeCodec(max_payload_bytes=1000)
    with pytest.raises(ConfigurationError, match="no spill bucket"):
        codec.encode(big_envelope(2000))


def test_large_envelopes_spill_and_come_back_signed():
    spill = MemorySpillStore()
    codec = EnvelopeCodec(signing_key=b"s", spill=spill, max_payload_bytes=1000)
    env = big_envelope(5000)
    payload = codec.encode(env)
    assert len(payload) < 1000
    body = json.loads(payload)[ENVELOPE_KEY]
    assert "progress" not in body and body["body_ref"]["size"] > 5000
    assert codec.decode(json.loads(payload)) == env


def test_a_swapped_spilled_body_is_detected():
    spill = MemorySpillStore()
    codec = EnvelopeCodec(spill=spill, max_payload_bytes=1000)
    payload = json.loads(codec.encode(big_envelope(5000)))
    key = payload[ENVELOPE_KEY]["body_ref"]["key"]
    spill.objects[key] = spill.objects[key].replace(b"xxxx", b"yyyy", 1)
    with pytest.raises(EnvelopeError, match="digest"):
        codec.decode(payload)


ARN = "arn:aws:lambda:eu-west-1:111122223333:function:fn"


@pytest.mark.parametrize(
    ("invoked", "version", "expected"),
    [
        (ARN, "$LATEST", ARN),
        (ARN, "7", f"{ARN}:7"),
        (f"{ARN}:prod", "7", f"{ARN}:7"),  # an alias resolves to the version that is running
        (f"{ARN}:7", "7", f"{ARN}:7"),
        (f"{ARN}:$LATEST", "$LATEST", ARN),
    ],
)
def test_the_next_hop_targets_the_running_version(invoked, version, expected):
    ctx = SimpleNamespace(invoked_function_arn=invoked, function_version=version)
    assert same_version_target(ctx) == expected
