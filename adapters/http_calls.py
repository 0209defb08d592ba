"""HTTP calls and their few quick tries: the one retry mechanism of every HTTP adapter.

A request is sent again after a short pause when another try may help (a refused or
broken connection, a 5xx, a 429 from a service whose Retry-After is read) and the
caller says it is safe to repeat. A timeout is not tried again, so one call never
takes much longer than the timeout. The long waits are the retry queue's (contract §6).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
import requests.adapters
import requests.utils

from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import ServiceUnavailable, System

log = logging.getLogger(__name__)

# Pauses between the tries of one call to a small JSON service (PID, Organisations).
BACKOFF_SECONDS = (0.25, 0.75)
SNIPPET_LENGTH = 200


def service_session(url: str, *, connections: int) -> requests.Session:
    """A keep-alive session for the one service at `url`, keeping up to `connections` to it.

    What requests would otherwise look up in the environment on every call, it reads
    once, here: the proxy for `url` (or none, as NO_PROXY says) and a CA bundle
    (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). ~/.netrc is never read: every service
    authenticates in the headers its adapter sends.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    # One connection per worker, kept: beyond the pool's size each call would open its own.
    pool = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=connections)
    session.mount("http://", pool)
    session.mount("https://", pool)
    session.headers["User-Agent"] = "s3-events-handler"
    return session


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """How one call sends its request again, within a time budget, before it fails.

    `pauses` come before the 2nd, 3rd, ... try. With `max_retry_after` set, the
    service's Retry-After is read: it replaces the pause, a 429 is tried again too,
    and a Retry-After longer than `max_retry_after` ends the call at once, the wait
    left to the retry queue. Without it, a 429 ends the call at once: a quick retry
    would only press a service that asked us to slow down. `budget` bounds all pauses
    of one call together.
    """

    pauses: tuple[float, ...]
    max_retry_after: float | None = None
    budget: float = math.inf


class _TryAgain(Exception):
    """A failure another try of the same request may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HttpService:
    """One service over HTTP: its session, timeout and resend policy.

    `secrets` is asked for what no message may show each time one is written, as
    secrets such as access tokens change. Headers go on each request, never on the
    session, which may be shared with adapters for other hosts.
    """

    def __init__(
        self,
        *,
        session: requests.Session,
        name: str,
        system: System,
        timeout: float,
        resend: ResendPolicy,
        sleep: Callable[[float], None] = time.sleep,
        secrets: Callable[[], Iterable[str | None]] = tuple,
    ) -> None:
        self.name = name
        self.system = system  # what every failure of the service says it came from
        self._session = session
        self._timeout = timeout
        self._resend = resend
        self._sleep = sleep
        self._secrets = secrets

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        safe_to_repeat: bool,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """The answer to one request; no answer, a 5xx or a 429 is `ServiceUnavailable`.

        A request `safe_to_repeat` is sent again after a failure another try may fix,
        as often as the policy allows.
        """
        pauses = self._resend.pauses
        waited = 0.0
        for attempt in range(len(pauses) + 1):
            try:
                return self._send_once(method, url, what, headers, kwargs)
            except _TryAgain as failure:
                if not safe_to_repeat or attempt == len(pauses):
                    raise ServiceUnavailable(
                        failure.reason, system=self.system, retry_after=failure.retry_after
                    ) from None
                pause = self._pause(failure, pauses[attempt], waited)
                log.warning("%s; trying again in %.2f s", failure.reason, pause)
                self._sleep(pause)
                waited += pause
        raise AssertionError("unreachable: the last try returns or raises")

    def snippet(self, text: str) -> str:
        """What a server or library said, on one line, short, and without our secrets."""
        # Masked before it is cut: a secret cut in two would no longer be recognised.
        text = one_line(text, self._secrets())
        if len(text) > SNIPPET_LENGTH:
            text = text[:SNIPPET_LENGTH] + "…"
        return text or "(empty body)"

    def json_object(self, response: requests.Response, what: str) -> dict[str, Any]:
        """The answer's JSON object; anything else is nonsense a later try may not repeat."""
        try:
            body = response.json()
        except ValueError:
            raise ServiceUnavailable(
                f"{self.name} answered {what} with something that is not JSON: "
                f"{self.snippet(response.text)}",
                system=self.system,
            ) from None
        if not isinstance(body, dict):
            raise ServiceUnavailable(
                f"{self.name} answered {what} with JSON that is not an object", system=self.system
            )
        return body

    def _send_once(
        self,
        method: str,
        url: str,
        what: str,
        headers: Mapping[str, str] | None,
        kwargs: Mapping[str, Any],
    ) -> requests.Response:
        try:
            # The session's settings (proxies, CA bundle) were fixed by `service_session`,
            # with `trust_env` off: this reads nothing from the environment.
            response = self._session.request(
                method, url, headers=headers, timeout=self._timeout, **kwargs
            )
        except requests.Timeout:
            raise ServiceUnavailable(
                f"{self.name} timed out: did not answer {what} within {self._timeout:g} s",
                system=self.system,
            ) from None
        except requests.RequestException as error:
            reason = f"{type(error).__name__}: {self.snippet(str(error))}"
            if isinstance(error, requests.ConnectionError):
                raise _TryAgain(f"{self.name} unreachable for {what}: {reason}") from None
            raise _TryAgain(f"{self.name}: {what} failed: {reason}") from None
        status = response.status_code
        if status < 500 and status != 429:
            return response
        failed = f"{self.name} answered {status} to {what}"
        reads_retry_after = self._resend.max_retry_after is not None
        if status == 429 and not reads_retry_after:
            raise ServiceUnavailable(failed, system=self.system)
        retry_after = (
            _retry_after(response.headers.get("Retry-After")) if reads_retry_after else None
        )
        raise _TryAgain(failed, retry_after)

    def _pause(self, failure: _TryAgain, backoff: float, waited: float) -> float:
        """The pause before the next try; `ServiceUnavailable` when it does not fit this call."""
        pause = backoff
        if failure.retry_after is not None:
            pause = failure.retry_after
            cap = self._resend.max_retry_after
            if cap is not None and pause > cap:
                raise ServiceUnavailable(
                    f"{failure.reason}; Retry-After asks {pause:g} s, more than the "
                    f"{cap:g} s one call may wait",
                    system=self.system,
                    retry_after=pause,
                ) from None
        if waited + pause > self._resend.budget:
            raise ServiceUnavailable(
                f"{failure.reason}; gave up after waiting {waited:g} s", system=self.system
            ) from None
        return pause


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; an HTTP date or nonsense counts as not given."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


class JsonServiceClient:
    """A client of one small JSON service (PID, Organisations) at one URL."""

    NAME: ClassVar[str]  # the service, as messages name it
    SYSTEM: ClassVar[System]  # the service, as its failures are counted

    def __init__(
        self,
        *,
        session: requests.Session,
        url: str,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = url
        self._http = HttpService(
            session=session,
            name=self.NAME,
            system=self.SYSTEM,
            timeout=timeout,
            resend=ResendPolicy(pauses=BACKOFF_SECONDS),
            sleep=sleep,
        )

    def _ask(self, method: str, *, what: str, **kwargs: Any) -> requests.Response:
        """One call, sent again after a 5xx or a connection error.

        Every call of these services is safe to repeat: a lookup changes nothing, and
        a PID minted and then lost is harmless.
        """
        return self._http.send(
            method,
            self._url,
            what=what,
            safe_to_repeat=True,
            headers={"Accept": "application/json"},
            **kwargs,
        )


def json_of(response: requests.Response, *, service: str, system: System) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ServiceUnavailable(
            f"{service} answered something other than JSON", system=system
        ) from error


__all__ = [
    "BACKOFF_SECONDS",
    "HttpService",
    "JsonServiceClient",
    "ResendPolicy",
    "json_of",
    "service_session",
]
