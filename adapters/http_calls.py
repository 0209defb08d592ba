"""HTTP calls: the one way every HTTP adapter sends a request and reads its answer
(docs/architecture.md, "Retries and failures").

A request is sent again within the call only where that is safe and may help; a
timeout is not, so one call never takes much longer than the timeout. The long waits
are the retry queue's (contract §6).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

import requests
import requests.adapters
import requests.utils

from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System

log = logging.getLogger(__name__)

# Pauses between the tries of one call to a small JSON service (PID, Organisations).
BACKOFF_SECONDS = (0.25, 0.75)
SNIPPET_LENGTH = 200
# What `HttpService.json` names each shape a caller may ask for.
_JSON_SHAPES: dict[type, str] = {dict: "a JSON object", list: "a JSON array"}


def service_session(url: str, *, connections: int) -> requests.Session:
    """A keep-alive session for the one service at `url`, keeping up to `connections` to it.

    The proxy for `url` and a CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) are read
    from the environment once, here, not on every call (docs/performance.md); ~/.netrc
    never: every service authenticates in the headers its adapter sends.
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


class HttpService:
    """One service over HTTP, the base of every HTTP adapter: where it is, its session and
    timeout, how often a request is sent, and how its answers are read.

    A subclass names its service and system, and the client errors an operator or time
    fixes, for which the event waits rather than being `Rejected`.
    """

    name: str
    system: System  # what every failure of the service says it came from
    transient_client_errors: Container[int] = frozenset()
    # A request `safe_to_repeat` is sent again after each of `pauses`, all within
    # `retry_budget`. With `max_retry_after` set, the service's Retry-After replaces the
    # pause and a 429 is tried again too; a longer one ends the call at once, the wait left
    # to the retry queue. Without it, a 429 ends the call at once: a quick retry would
    # only press a service that asked us to slow down.
    pauses: tuple[float, ...] = BACKOFF_SECONDS
    max_retry_after: float | None = None
    retry_budget = math.inf

    def __init__(
        self,
        *,
        session: requests.Session,
        url: str,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._session = session
        self._timeout = timeout
        self._sleep = sleep

    def secrets(self) -> Iterable[str | None]:
        """What no message may show; asked each time one is written, as tokens change."""
        return ()

    def send(
        self,
        method: str,
        path: str = "",
        *,
        what: str,
        safe_to_repeat: bool,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """The answer to one request for `path` under the service's URL; no answer, a 5xx or
        a 429 is `ServiceUnavailable`, any other status is the caller's to judge.

        A request `safe_to_repeat` is sent again as the class attributes above say.
        """
        headers = {"Accept": "application/json", **(headers or {})}
        waited = 0.0
        for backoff in (*self.pauses, None):
            retry_after = None
            try:
                response = self._session.request(
                    method, self.url + path, headers=headers, timeout=self._timeout, **kwargs
                )
            except requests.Timeout:
                raise self.unavailable(
                    f"timed out: did not answer {what} within {self._timeout:g} s"
                ) from None
            except requests.RequestException as error:
                reason = f"{type(error).__name__}: {self.snippet(str(error))}"
                if isinstance(error, requests.ConnectionError):
                    failed = f"unreachable for {what}: {reason}"
                else:
                    failed = f"call failed ({what}): {reason}"
            else:
                status = response.status_code
                if status < 500 and status != 429:
                    return response
                failed = f"answered {status} to {what}"
                if self.max_retry_after is None:
                    if status == 429:
                        raise self.unavailable(failed)
                else:  # Retry-After in seconds; an HTTP date counts as not given
                    seconds = number_in(response.headers.get("Retry-After"))
                    retry_after = None if seconds is None else max(seconds, 0.0)
            if not safe_to_repeat or backoff is None:
                raise self.unavailable(failed, retry_after=retry_after)
            cap = self.max_retry_after
            if retry_after is not None and cap is not None and retry_after > cap:
                raise self.unavailable(
                    f"{failed}; Retry-After asks {retry_after:g} s, more than the "
                    f"{cap:g} s one call may wait",
                    retry_after=retry_after,
                )
            pause = backoff if retry_after is None else retry_after
            if waited + pause > self.retry_budget:
                raise self.unavailable(f"{failed}; gave up after waiting {waited:g} s")
            log.warning("%s %s; trying again in %.2f s", self.name, failed, pause)
            self._sleep(pause)
            waited += pause
        raise AssertionError("unreachable: the last try returns or raises")

    def succeeded(
        self, response: requests.Response, what: str, *, also_fine: Container[int] = ()
    ) -> requests.Response:
        """`response` when it is a 2xx (or in `also_fine`); otherwise the failure it is:
        `Rejected` for a client error the service does not call transient, quoting what
        it said, else `ServiceUnavailable`."""
        status = response.status_code
        if 200 <= status < 300 or status in also_fine:
            return response
        if not 400 <= status < 500:
            raise self.unavailable(f"answered an unexpected {status} to {what}")
        if status in self.transient_client_errors:
            raise self.unavailable(f"answered {status} to {what}")
        raise Rejected(
            f"{self.name} answered {status} to {what}: {self.snippet(response.text)}",
            system=self.system,
        )

    def json(self, response: requests.Response, what: str, shape: type = object) -> Any:
        """The JSON in the answer, of the `shape` the caller needs (a dict, a list, any);
        anything else is nonsense a later try may not repeat: `ServiceUnavailable`."""
        expected = _JSON_SHAPES.get(shape, "JSON")
        try:
            body = response.json()
        except ValueError:
            found = f"not JSON: {self.snippet(response.text)}"
        else:
            if isinstance(body, shape):
                return body
            found = f"JSON {type(body).__name__}"
        raise self.unavailable(f"answered {what} with something other than {expected}: {found}")

    def unavailable(self, detail: str, *, retry_after: float | None = None) -> ServiceUnavailable:
        """The transient failure `detail` of this service: "{name} {detail}"."""
        return ServiceUnavailable(
            f"{self.name} {detail}", system=self.system, retry_after=retry_after
        )

    def snippet(self, text: str) -> str:
        """What a server or library said, on one line, short, and without our secrets."""
        # Masked before it is cut: a secret cut in two would no longer be recognised.
        text = one_line(text, self.secrets())
        if len(text) > SNIPPET_LENGTH:
            text = text[:SNIPPET_LENGTH] + "…"
        return text or "(empty body)"


def number_in(value: object) -> float | None:
    """A finite number an answer gives, as a number or as text; anything else (a bool, NaN,
    an HTTP date, nonsense) counts as not given."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
