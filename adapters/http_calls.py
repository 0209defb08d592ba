"""What the small JSON services (PID, Organisations) share: one request, a couple of tries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from s3_events_handler.domain.errors import ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Pauses between the tries of one call: the retry queue does the long waits.
BACKOFF_SECONDS = (0.25, 0.75)


class JsonServiceClient:
    """What a client of one small JSON service keeps: its session, URL, timeout and pause."""

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


class TryAgain(Exception):
    """A failure worth another try within the same call (5xx, refused connection)."""


def with_retries(call: Callable[[], T], *, service: str, sleep: Callable[[float], None]) -> T:
    """`call`, tried again after each `TryAgain` until the backoff runs out."""
    for pause in (*BACKOFF_SECONDS, None):
        try:
            return call()
        except TryAgain as failure:
            if pause is None:
                raise ServiceUnavailable(str(failure)) from failure
            log.warning("%s failed, trying again: %s", service, failure)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def send(
    session: requests.Session, method: str, url: str, *, service: str, timeout: float, **kwargs: Any
) -> requests.Response:
    """One request; transport failures and 5xx become domain errors.

    A timeout is not tried again, so one call never takes much longer than `timeout`.
    """
    try:
        response = session.request(
            method, url, timeout=timeout, headers={"Accept": "application/json"}, **kwargs
        )
    except requests.Timeout as error:
        raise ServiceUnavailable(f"{service} timed out: {error}") from error
    except requests.ConnectionError as error:
        raise TryAgain(f"{service} unreachable: {error}") from error
    except requests.RequestException as error:
        raise ServiceUnavailable(f"{service} request failed: {error}") from error
    if response.status_code >= 500:
        raise TryAgain(f"{service} answered {response.status_code}")
    return response


def json_of(response: requests.Response, *, service: str) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ServiceUnavailable(f"{service} answered something other than JSON") from error
