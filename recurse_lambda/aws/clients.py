"""The one place that makes boto3 clients, and the client configuration applied to every one of them.

A :class:`ClientCache` keeps one client per service and endpoint (and region), creates it on first use under a
lock, and gives it :func:`client_config`: standard-mode retries, short connect and bounded read timeouts, and a
connection pool sized for the service (S3: :data:`S3_POOL`, so that the adaptive ``RangeFetcher`` can keep its
10 ranged GETs and a writer its 10 part uploads in flight, with connections to spare). The region comes from the environment
(``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else the AWS configuration). An endpoint not given explicitly is
left to boto3, which honours ``AWS_ENDPOINT_URL_<SERVICE>`` and ``AWS_ENDPOINT_URL`` itself; the cache keys on
those variables too, so a changed endpoint gets its own client.

Creating a client opens no connection: connections are made by the first request. Importing this module
imports neither boto3 nor botocore; the first client does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_ATTEMPTS",
    "READ_TIMEOUT",
    "S3_POOL",
    "ClientCache",
    "client",
    "client_config",
    "getter",
    "region_from_environment",
]

#: S3's connection pool: the RangeFetcher's ceiling of 10 GETs in flight, an S3Writer's 10 part uploads (a
#: function may read and write at once), plus two for everything else.
S3_POOL = 22
#: Seconds to wait for a connection (botocore's default, 60 s, is longer than most Lambda timeouts).
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for a response's next bytes (botocore's default).
READ_TIMEOUT = 60.0
#: Attempts per request, the first included, in standard retry mode (botocore's default for that mode).
MAX_ATTEMPTS = 3

_POOLS = {"s3": S3_POOL}
# boto3's default session is not safe to create clients from in several threads at once: one lock for all.
_CREATE = threading.Lock()

Key = tuple[str, str | None, str | None]


def region_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """``AWS_REGION`` (what Lambda sets), else ``AWS_DEFAULT_REGION``; None leaves it to the AWS configuration."""
    env = os.environ if environ is None else environ
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


_SERVICE_IDS = {"events": "EVENTBRIDGE"}  # where boto3's service id differs from the client's name


def _endpoint_variable(service: str) -> str:
    return "AWS_ENDPOINT_URL_" + _SERVICE_IDS.get(service, service.upper().replace("-", "_"))


def client_config(service: str, environ: Mapping[str, str] | None = None) -> Any:
    """The ``botocore.config.Config`` every client of ``service`` gets.

    Retries are standard mode with :data:`MAX_ATTEMPTS` attempts, unless ``AWS_RETRY_MODE`` or
    ``AWS_MAX_ATTEMPTS`` say otherwise (botocore reads those; an explicit setting here would hide them).
    """
    from botocore.config import Config

    env = os.environ if environ is None else environ
    retries: dict[str, Any] = {}
    if not env.get("AWS_RETRY_MODE"):
        retries["mode"] = "standard"
    if not env.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = MAX_ATTEMPTS  # the first attempt included
    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    if retries:
        options["retries"] = retries
    if service in _POOLS:
        options["max_pool_connections"] = _POOLS[service]
    return Config(**options)


class ClientCache:
    """boto3 clients, one per (service, region, endpoint), made on first use and then reused (thread-safe).

    ``region`` and ``endpoints`` (service → URL) fix what the environment would otherwise say; a service
    without an endpoint here uses boto3's own resolution (``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``,
    then AWS). Calling the cache with a service name returns its client, so it serves as a client factory.
    """

    def __init__(
        self, *, region: str | None = None, endpoints: Mapping[str, str | None] | None = None
    ) -> None:
        self.region = region
        self.endpoints = dict(endpoints or {})
        self._clients: dict[Key, Any] = {}

    def _key(self, service: str) -> tuple[Key, str | None, str | None]:
        env = os.environ
        region = self.region or region_from_environment(env)
        explicit = self.endpoints.get(service)
        effective = explicit or env.get(_endpoint_variable(service)) or env.get("AWS_ENDPOINT_URL")
        return (service, region, effective), region, explicit

    def get(self, service: str) -> Any:
        """The client for ``service``, created now if this cache has none for its current endpoint."""
        key, region, explicit = self._key(service)
        found = self._clients.get(key)
        if found is None:
            with _CREATE:
                found = self._clients.get(key)
                if found is None:
                    import boto3  # here, so that importing the library imports no boto3

                    found = self._clients[key] = boto3.client(
                        service, region_name=region, endpoint_url=explicit, config=client_config(service)
                    )
        return found

    __call__ = get

    def getter(self, service: str) -> Callable[[], Any]:
        """A zero-argument function returning the client for ``service`` (created at its first call)."""
        return lambda: self.get(service)

    def created(self) -> list[str]:
        """The services this cache holds clients for (in creation order)."""
        return [key[0] for key in self._clients]

    def clear(self) -> None:
        """Forget every client (they are garbage-collected once nothing else holds them)."""
        with _CREATE:
            self._clients.clear()


#: The process's cache: what the library uses when it is not given a client.
shared = ClientCache()


def client(service: str) -> Any:
    """The process's client for ``service`` (see :data:`shared`)."""
    return shared.get(service)


def getter(service: str) -> Callable[[], Any]:
    """A zero-argument getter of the process's client for ``service``, which looks up :data:`shared` at each
    call (so a test may swap it)."""
    return lambda: client(service)
