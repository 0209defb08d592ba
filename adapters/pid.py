"""PIDs: meemoo's PID service in production and qas, made locally elsewhere (SPEC 4.2)."""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

import requests

from domain.errors import ServiceUnavailable
from domain.model import is_valid_pid

log = logging.getLogger(__name__)

PID_SERVICE_ENVIRONMENTS = frozenset({"production", "qas"})
PID_ALPHABET = string.ascii_lowercase + string.digits
PID_LENGTH = 10
# Pauses between the tries of one call: the retry queue does the long waits.
BACKOFF_SECONDS = (0.25, 0.75)


def uses_pid_service(app_environment: str) -> bool:
    """Only production and qas mint real PIDs; other environments must not spend them."""
    return app_environment in PID_SERVICE_ENVIRONMENTS


class _TryAgain(Exception):
    """A failure worth another try within the same call (5xx, refused connection)."""


class PidWebService:
    """The PID service over HTTP; every failure is transient, as the event can wait for a PID.

    A 5xx or a connection error is tried again a couple of times: minting is not
    idempotent, but a PID minted and then lost is harmless. A timeout is not tried
    again, so one call never takes much longer than `timeout`.
    """

    def __init__(
        self,
        *,
        session: requests.Session,
        url: str,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._url = url
        self._timeout = timeout
        self._sleep = sleep

    def mint(self) -> str:
        tries = 0
        while True:
            try:
                return self._mint_once()
            except _TryAgain as failure:
                if tries == len(BACKOFF_SECONDS):
                    raise ServiceUnavailable(str(failure)) from failure
                log.warning("PID service failed, trying again: %s", failure)
                self._sleep(BACKOFF_SECONDS[tries])
                tries += 1

    def _mint_once(self) -> str:
        try:
            response = self._session.get(
                self._url, timeout=self._timeout, headers={"Accept": "application/json"}
            )
        except requests.Timeout as error:
            raise ServiceUnavailable(f"PID service timed out: {error}") from error
        except requests.ConnectionError as error:
            raise _TryAgain(f"PID service unreachable: {error}") from error
        except requests.RequestException as error:
            raise ServiceUnavailable(f"PID service request failed: {error}") from error
        if response.status_code >= 500:
            raise _TryAgain(f"PID service answered {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise ServiceUnavailable(f"PID service answered {response.status_code}")
        try:
            answer = response.json()
        except ValueError as error:
            raise ServiceUnavailable("PID service answered something other than JSON") from error
        return _pid_in(answer)


def _pid_in(answer: Any) -> str:
    """`[{"id": "k98z0d4w1q", "number": 1}]` -> `k98z0d4w1q`; anything else is no PID."""
    first = answer[0] if isinstance(answer, list) and answer else None
    pid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(pid, str) or not is_valid_pid(pid):
        raise ServiceUnavailable(f"PID service gave no valid PID: {str(answer)[:200]!r}")
    return pid


class LocalPids:
    """PIDs of the real form, drawn at random, for environments that must not use the service.

    36**10 values: a collision between two events is not a practical concern.
    """

    def mint(self) -> str:
        return "".join(secrets.choice(PID_ALPHABET) for _ in range(PID_LENGTH))


__all__ = [
    "BACKOFF_SECONDS",
    "PID_SERVICE_ENVIRONMENTS",
    "LocalPids",
    "PidWebService",
    "uses_pid_service",
]
