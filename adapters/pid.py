"""PIDs: meemoo's PID service in production and qas, made locally elsewhere (contract §4.2)."""

from __future__ import annotations

import secrets
import socket
import string
from urllib.parse import urlsplit

from s3_events_handler.adapters.http_calls import HttpService
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.ports import PidService
from s3_events_handler.domain.rules import is_valid_pid

PID_SERVICE_ENVIRONMENTS = frozenset({"production", "qas"})
PID_ALPHABET = string.ascii_lowercase + string.digits
PID_LENGTH = 10


def uses_pid_service(app_environment: str) -> bool:
    """Only production and qas mint real PIDs; other environments must not spend them."""
    return app_environment.lower() in PID_SERVICE_ENVIRONMENTS


class PidWebService(HttpService, PidService):
    """The PID service over HTTP; every failure is transient, as the event can wait for a PID.

    A 5xx or a connection error is tried again a couple of times: a PID minted and
    then lost is harmless.
    """

    name = "PID service"
    system = System.PID
    transient_client_errors = range(400, 500)

    def mint(self) -> str:
        what = "a PID request"
        response = self.send("GET", what=what, safe_to_repeat=True)
        answer = self.json(self.succeeded(response, what), what)
        # `[{"id": "k98z0d4w1q", "number": 1}]` -> `k98z0d4w1q`; anything else is no PID.
        first = answer[0] if isinstance(answer, list) and answer else None
        pid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(pid, str) or not is_valid_pid(pid):
            raise self.unavailable(f"gave no valid PID: {self.snippet(str(answer))}")
        return pid


class LocalPids(PidService):
    """PIDs of the real form, drawn at random, for environments that must not use the service.

    36**10 values: a collision between two events is not a practical concern.
    """

    def mint(self) -> str:
        return "".join(secrets.choice(PID_ALPHABET) for _ in range(PID_LENGTH))


def accepts_connections(url: str, *, timeout: float) -> str:
    """Open a TCP connection to `url`'s host and port, then close it; `host:port`, or
    `ServiceUnavailable`. For a check of a service that must not be called: the PID service
    hands out a PID for every request, and HEAD often runs the same handler as GET."""
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
