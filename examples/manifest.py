"""A manifest of every object under a prefix, one JSON Lines object written exactly once, across hops.

Event: ``{"bucket", "prefix", "out_bucket", "out_key"}`` and optional ``"presign_seconds"``. Lists every object
under the prefix in S3's order (``run.s3.keys``: ``ListObjectsV2`` pages, the cursor is the last key seen, as
``StartAfter``) and writes one line per object, in listing order:

    json.dumps({"key": K, "size": S, "etag": E}, ensure_ascii=False, separators=(",", ":")) + "\\n"

with ``E`` the ETag without its quotes, and ``"url"`` (a presigned GET URL valid ``presign_seconds``) after
``"etag"`` only when ``presign_seconds`` is given. Result: ``{"objects": N, "bytes": sum of sizes,
"output": {"bucket", "key", "etag", "bytes"}}``.

Unlike a handler that writes a UUID-named manifest per invocation, a retry or a duplicate delivery cannot
produce a second manifest: the output is one multipart upload whose position is committed with the cursor.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env
from recurse_lambda.s3 import WriterState


class Progress(BaseModel):
    after: str = ""  # the last key listed: the listing resumes after it
    objects: int = 0
    bytes: int = 0
    out: WriterState = WriterState()


@recursive(state=Progress, ledger=ledger_from_env())
def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, Any]]:
    out = run.s3.writer(event["out_bucket"], event["out_key"], state.out)
    presign = event.get("presign_seconds")
    client = run.s3.client
    for batch in run.s3.keys(event["bucket"], event["prefix"], start_after=state.after).batches():
        lines = []
        for obj in batch:
            line: dict[str, Any] = {"key": obj.key, "size": obj.size, "etag": obj.etag}
            if presign is not None:
                line["url"] = client.generate_presigned_url(
                    "get_object", Params={"Bucket": event["bucket"], "Key": obj.key}, ExpiresIn=int(presign)
                )
            lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            state.bytes += obj.size
        out.write("".join(lines).encode("utf-8"))
        state.objects += len(batch)
        state.after = batch.end
        yield  # a safe point: the cursor, the counts and the output's position are committed together
    return {"objects": state.objects, "bytes": state.bytes, "output": out.complete()}
