"""Integration fixtures: a real S3-compatible server (the JuiceFS gateway) on 127.0.0.1, one per session.

If the gateway cannot start, the fixture errors loudly rather than skipping: a silently skipped integration
tier would hide exactly the failures it exists to catch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from recurse_lambda.local.juicefs import JuiceFSGateway


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint and a factory of boto3 clients for it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    make_client: Callable[[], Any]

    def client(self) -> Any:
        """A new boto3 S3 client (path-style, us-east-1, the server's credentials)."""
        return self.make_client()


@pytest.fixture(scope="session")
def juicefs_s3() -> Iterator[S3Server]:
    """The JuiceFS S3 gateway, started once for the session and stopped after it."""
    with JuiceFSGateway() as gateway:
        yield S3Server(gateway.endpoint_url, gateway.access_key, gateway.secret_key, gateway.client)


@pytest.fixture
def juicefs_bucket(juicefs_s3: S3Server) -> str:
    """A fresh, empty bucket on the gateway for one test."""
    name = f"t-{uuid.uuid4().hex[:24]}"
    juicefs_s3.client().create_bucket(Bucket=name)
    return name
