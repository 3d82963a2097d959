"""The continuation envelope: what one hop hands to the next, as one JSON object under a reserved key.

Layout (format version 1), under ``ENVELOPE_KEY``::

    {"v": 1, "chain_id": str, "hop": int, "started_at": epoch seconds, "code_version": str,
     "progress": {"state": ..., "chunks": int, "pins": {...}}, "event": <the chain's original event>,
     "sig": hex HMAC-SHA256 over the canonical JSON of everything else (only when a signing key is set)}

When the encoded payload would exceed the asynchronous-invoke limit, ``progress`` and ``event`` move to a
:class:`~recurse_lambda.core.ports.SpillStore` (S3 in production) and the envelope carries ``"body_ref": {"bucket", "key", "sha256",
"size"}`` instead; the signature covers the reference and the body's digest, so neither can be swapped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError, EnvelopeError, EnvelopeSignatureError
from .model import Envelope
from .ports import SpillStore
from .state_codec import nonfinite_path

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "ENVELOPE_KEY",
    "FORMAT_VERSION",
    "Envelope",
    "EnvelopeCodec",
    "SpillStore",
    "canonical",
    "is_envelope",
    "signing_key_from",
]

ENVELOPE_KEY = "__recurse_lambda__"
FORMAT_VERSION = 1
# Lambda accepts asynchronous payloads of up to 1 MB; keep headroom for the envelope's own fields.
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000


def canonical(obj: Any) -> bytes:
    """RFC 8259 JSON: a NaN or infinity is refused (the state codec spells a state's as strings)."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError as exc:
        where = nonfinite_path(obj, "payload") or "the payload"
        raise ConfigurationError(
            f"{where} is NaN or infinite, which JSON cannot carry (a hand-off payload must be RFC 8259 JSON)"
        ) from exc


def _sign(key: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def signing_key_from(environ: Mapping[str, str], name: str) -> bytes | None:
    """The signing key in ``environ[name]`` as bytes, or None when the variable is not set.

    A variable that is set but empty (or only whitespace) is a :class:`ConfigurationError`: it is almost always a
    secret that failed to load, and reading it as "no key" would silently turn signing off.
    """
    key = environ.get(name)
    if key is None:
        return None
    if not key.strip():
        raise ConfigurationError(
            f"${name} is set but empty: a signing key that failed to load would silently turn signing off; "
            "set it to the key, or unset it to run unsigned"
        )
    return key.encode()


def is_envelope(event: Any) -> bool:
    return isinstance(event, Mapping) and ENVELOPE_KEY in event


class EnvelopeCodec:
    """Encodes and decodes envelopes: signing, verification and spilling of large bodies."""

    def __init__(
        self,
        *,
        signing_key: bytes | None = None,
        spill: SpillStore | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.signing_key = signing_key
        self.spill = spill
        self.max_payload_bytes = max_payload_bytes

    def encode(self, env: Envelope) -> bytes:
        """The invoke payload for ``env``. Spills the body when it is too large; errors before any invoke."""
        body: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "chain_id": env.chain_id,
            "hop": env.hop,
            "started_at": env.started_at,
            "code_version": env.code_version,
            "progress": env.progress,
            "event": env.event,
            **env.extra,
        }
        payload = self._seal(body)
        if len(payload) <= self.max_payload_bytes:
            return payload
        if self.spill is None:
            raise ConfigurationError(
                f"the continuation for chain {env.chain_id} hop {env.hop} is {len(payload)} bytes, over the "
                f"{self.max_payload_bytes}-byte asynchronous invoke limit, and no spill bucket is configured: "
                "set spill_bucket= (or RECURSE_LAMBDA_SPILL_BUCKET) or keep less in the state"
            )
        spilled = canonical({"progress": body.pop("progress"), "event": body.pop("event")})
        ref = self.spill.put(f"{env.chain_id}/hop-{env.hop:06d}.json", spilled)
        body["body_ref"] = {**ref, "sha256": hashlib.sha256(spilled).hexdigest(), "size": len(spilled)}
        return self._seal(body)

    def _seal(self, body: dict[str, Any]) -> bytes:
        if self.signing_key is not None:
            body = {**body, "sig": _sign(self.signing_key, body)}
        return canonical({ENVELOPE_KEY: body})

    def decode(self, event: Mapping[str, Any]) -> Envelope:
        """Verify and unpack an envelope event; raises :class:`EnvelopeError` before anything is processed."""
        body = event.get(ENVELOPE_KEY)
        if not isinstance(body, dict):
            raise EnvelopeError(f"the {ENVELOPE_KEY!r} entry of the event is not a JSON object")
        if self.signing_key is not None:
            sig = body.get("sig")
            if not isinstance(sig, str):
                raise EnvelopeSignatureError(
                    "the continuation envelope is not signed, but a signing key is configured: rejected"
                )
            unsigned = {k: v for k, v in body.items() if k != "sig"}
            if not hmac.compare_digest(sig, _sign(self.signing_key, unsigned)):
                raise EnvelopeSignatureError(
                    "the continuation envelope's signature does not match the configured signing key: rejected"
                )
        if body.get("v") != FORMAT_VERSION:
            raise EnvelopeError(
                f"unsupported envelope format version {body.get('v')!r} (this library reads {FORMAT_VERSION})"
            )
        try:
            if "body_ref" in body:
                body = {**body, **self._load_spilled(body["body_ref"])}
            return Envelope(
                chain_id=str(body["chain_id"]),
                hop=int(body["hop"]),
                progress=dict(body["progress"]),
                event=body["event"],
                started_at=float(body["started_at"]),
                code_version=str(body.get("code_version", "$LATEST")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"malformed continuation envelope: {exc!r}") from exc

    def _load_spilled(self, ref: Mapping[str, Any]) -> dict[str, Any]:
        if self.spill is None:
            raise ConfigurationError(
                "the envelope points to a spilled body, but no spill store is configured"
            )
        data = self.spill.get(ref)
        if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
            raise EnvelopeError(f"the spilled envelope body at {ref.get('key')!r} does not match its digest")
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise EnvelopeError("the spilled envelope body is not a JSON object")
        return loaded
