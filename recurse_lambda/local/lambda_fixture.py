"""Pytest fixtures for end-to-end tests through the local Lambda (docs/local-lambda.md). Import them into a
``conftest.py``: ``from recurse_lambda.local.lambda_fixture import emulation, ledger_endpoint, local_lambda``.

- ``ledger_endpoint``: a DynamoDB on loopback for the session (dynalite if node is there, else moto's server).
- ``local_lambda``: a factory of started :class:`~recurse_lambda.local.lambda_runtime.LocalLambda`, all stopped
  after the test.
- ``emulation``: a factory of started :class:`~recurse_lambda.local.lambda_services.Emulation` (S3, a fresh
  ledger table in the session's DynamoDB, and the local Lambda: what ``recurse-lambda emulate`` runs), all
  stopped after the test.

The servers themselves are in :mod:`recurse_lambda.local.lambda_services` (re-exported here).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .lambda_runtime import LocalLambda
from .lambda_services import (
    Dynalite,
    Emulation,
    MotoDynamoDB,
    create_ledger_table,
    dynamodb_client,
    ledger_server,
)

__all__ = [
    "Dynalite",
    "MotoDynamoDB",
    "create_ledger_table",
    "dynamodb_client",
    "emulation",
    "ledger_endpoint",
    "ledger_server",
    "local_lambda",
]


@pytest.fixture(scope="session")
def ledger_endpoint() -> Iterator[str]:
    """The endpoint of a DynamoDB on loopback for the session: dynalite if node is there, else moto's server."""
    server = ledger_server()
    server.start()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture
def local_lambda() -> Iterator[Callable[..., LocalLambda]]:
    """A factory: ``local_lambda("module.handler", task_root, timeout=1.0, ...)`` returns a started
    :class:`LocalLambda`; every one is stopped when the test ends."""
    started: list[LocalLambda] = []

    def make(handler: str, task_root: str | os.PathLike[str], **options: Any) -> LocalLambda:
        fn = LocalLambda(handler, task_root, **options).start()
        started.append(fn)
        return fn

    try:
        yield make
    finally:
        for fn in reversed(started):
            with contextlib.suppress(Exception):
                fn.stop()


@pytest.fixture
def emulation(ledger_endpoint: str) -> Iterator[Callable[..., Emulation]]:
    """A factory: ``emulation("line_count.handler", "examples", timeout=1.0)`` returns a started
    :class:`Emulation` whose ledger table is in the session's DynamoDB; ``.put(bucket, key, data)`` stores input,
    ``.run(event)`` runs a chain to its end and returns its ledger record. Every one is stopped after the test."""
    started: list[Emulation] = []

    def make(handler: str, task_root: str | os.PathLike[str], **options: Any) -> Emulation:
        options.setdefault("ledger_endpoint", ledger_endpoint)
        em = Emulation(handler, task_root, **options).start()
        started.append(em)
        return em

    try:
        yield make
    finally:
        for em in reversed(started):
            with contextlib.suppress(Exception):
                em.stop()
