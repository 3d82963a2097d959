"""examples/line_count.py's chain with faults injected on purpose, for the end-to-end tier.

The event names the hops that misbehave, once each (a marker file in ``$FAULT_DIR`` remembers that a hop's fault
happened, so its retry runs normally): ``hang`` hops sleep past the deadline (the local Lambda kills the worker
with SIGKILL), ``crash`` hops exit the process, ``error`` hops raise. Each fault strikes after the hop's first
batch, in the middle of uncommitted work, so the result is right only if that work is not counted twice.

``pace`` (seconds, default 0) is waited after each batch: a floor under the chain's work that does not depend on
the machine's speed, so a chain at a given timeout needs several hops on any machine (and the faulty hops exist).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import boto3
from pydantic import BaseModel

from recurse_lambda import Run, recursive
from recurse_lambda.aws import ledger_from_env

# Primed at init, as the library will do itself on Lambda (issue 13): a cold worker otherwise pays for boto3's
# import and service models inside its first invocation, and at a short timeout that alone can time it out.
for _service in ("s3", "dynamodb", "lambda"):
    boto3.client(_service)


class Progress(BaseModel):
    offset: int = 0
    lines: int = 0
    checksum: int = 0


def fault(event: dict[str, Any], hop: int) -> str | None:
    for kind in ("hang", "crash", "error"):
        if hop in event.get(kind, ()):
            marker = Path(os.environ["FAULT_DIR"]) / f"{kind}-{hop}"
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                return None
            return kind
    return None


@recursive(state=Progress, ledger=ledger_from_env())
def handler(event: dict[str, Any], state: Progress, run: Run) -> Generator[None, None, dict[str, int]]:
    reader = run.s3.lines(event["bucket"], event["key"], start=state.offset, encoding=None)
    first = True
    pace = float(event.get("pace", 0.0))
    for batch in reader.batches(20_000):
        state.checksum = (state.checksum + sum(map(zlib.crc32, batch.records))) % 2**64
        state.lines += len(batch.records)
        state.offset = batch.end
        if first:  # uncommitted work in hand: the hop's start (its committed cursor) is the last safe point
            first = False
            kind = fault(event, run.hop)
            if kind == "hang":
                time.sleep(3600)
            elif kind == "crash":
                os._exit(17)
            elif kind == "error":
                raise RuntimeError(f"injected error in hop {run.hop}")
        time.sleep(pace)  # sleeping, not computing: the floor holds under load without adding to it
        yield
    size = run.s3.open(event["bucket"], event["key"]).size
    return {"lines": state.lines, "bytes": size, "checksum": state.checksum}
