"""PIDs: meemoo's PID service in production and qas, made locally elsewhere (contract §4.2)."""

from __future__ import annotations

import secrets
import socket
import string
from typing import Any
from urllib.parse import urlsplit

from s3_events_handler.adapters.http_calls import JsonServiceClient, json_of
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.ports import PidService
from s3_events_handler.domain.rules import is_valid_pid

PID_SERVICE_ENVIRONMENTS = frozenset({"production", "qas"})
PID_ALPHABET = string.ascii_lowercase + string.digits
PID_LENGTH = 10
SERVICE = "PID service"


def uses_pid_service(app_environment: str) -> bool:
    """Only production and qas mint real PIDs; other environments must not spend them."""
    return app_environment.lower() in PID_SERVICE_ENVIRONMENTS


class PidWebService(JsonServiceClient, PidService):
    """The PID service over HTTP; every failure is transient, as the event can wait for a PID.

    A 5xx or a connection error is tried again a couple of times: minting is not
    idempotent, but a PID minted and then lost is harmless. A timeout is not tried
    again, so one call never takes much longer than `timeout`.
    """

    NAME = SERVICE
    SYSTEM = System.PID

    def mint(self) -> str:
        response = self._ask("GET", what="a PID request")
        if not 200 <= response.status_code < 300:
            raise ServiceUnavailable(
                f"{SERVICE} answered {response.status_code}", system=System.PID
            )
        return _pid_in(json_of(response, service=SERVICE, system=System.PID))


def _pid_in(answer: Any) -> str:
    """`[{"id": "k98z0d4w1q", "number": 1}]` -> `k98z0d4w1q`; anything else is no PID."""
    first = answer[0] if isinstance(answer, list) and answer else None
    pid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(pid, str) or not is_valid_pid(pid):
        raise ServiceUnavailable(
            f"PID service gave no valid PID: {str(answer)[:200]!r}", system=System.PID
        )
    return pid


class LocalPids(PidService):
    """PIDs of the real form, drawn at random, for environments that must not use the service.

    36**10 values: a collision between two events is not a practical concern.
    """

    def mint(self) -> str:
        return "".join(secrets.choice(PID_ALPHABET) for _ in range(PID_LENGTH))


def accepts_connections(url: str, *, timeout: float) -> str:
    """Open a TCP connection to `url`'s host and port, then close it; `host:port`.

    For a service that must not be called to be checked: the PID service hands out a new
    PID for every request, and HEAD runs the same handler as GET in many frameworks.
    Raises `ServiceUnavailable` when nothing accepts the connection.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ServiceUnavailable(f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise ServiceUnavailable(f"{url!r} names no host")
    where = f"{parts.hostname}:{port}"
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise ServiceUnavailable(f"nothing accepts connections at {where}: {error}") from error
    return where


__all__ = [
    "PID_SERVICE_ENVIRONMENTS",
    "LocalPids",
    "PidWebService",
    "accepts_connections",
    "uses_pid_service",
]
