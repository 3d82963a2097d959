"""examples/line_count.py's handler, unchanged, with the clients it needs created at import, in the init phase.

This is what the library will do itself when it runs in Lambda (``AWS_LAMBDA_RUNTIME_API`` set): prime the
clients at init (issue 13, item 3), so the first hop of a fresh worker no longer pays for boto3's import and its
service models out of its own time. Until then, this module shows that priming is enough for a 1 s timeout.
The worker's ``PYTHONPATH`` holds examples/ (``LocalLambda(..., python_path=[EXAMPLES])``).
"""

from __future__ import annotations

import importlib

import boto3
from line_count import handler

__all__ = ["handler"]

_world = handler.aws_world()  # the production world, as the first invocation would build it
for _service in ("s3", "lambda"):
    _world.warm.client(_service)  # the clients the chain's world uses (hand-off, reads)
boto3.client(
    "dynamodb"
)  # the ledger's client: its service model is now loaded, its creation costs milliseconds
importlib.import_module("recurse_lambda.s3")  # what run.s3 imports on first use
