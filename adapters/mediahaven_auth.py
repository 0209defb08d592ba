"""MediaHaven's OAuth2 tokens (contract §4.1): what every API call carries, kept valid.

Refused credentials are transient: an operator fixes them and the waiting events go
through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from s3_events_handler.adapters.http_calls import HttpService, number_in

log = logging.getLogger(__name__)

PASSWORD_GRANT_PATH = "auth/ropc.php"
REFRESH_GRANT_PATH = "auth/oauth2/token"
# Renew this long before the token expires, so it cannot run out in flight.
EXPIRY_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Token:
    access: str
    refresh: str | None
    renew_at: float | None

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


class _GrantRefused(Exception):
    """The token endpoint refused a grant (4xx): worth a password grant after a refresh."""


class MediaHavenTokens:
    """The API user's credentials and current token; the token is asked for on first use.

    Shared by the consumer's workers: one of them asks for a token or renews it while
    the others wait for it, so a token that expires or is refused is renewed once, not
    once per worker. Token requests go through `http`, tried again like any other
    idempotent call.
    """

    def __init__(
        self,
        *,
        http: HttpService,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._client = {"client_id": client_id, "client_secret": client_secret}
        self._login = {"grant_type": "password", "username": username, "password": password}
        self._clock = clock
        self._token: _Token | None = None
        self._lock = threading.Lock()  # held while a token is asked for

    def send(self, method: str, path: str, *, what: str, **kwargs: Any) -> requests.Response:
        """`HttpService.send` with a valid token; when it is refused, renewed and sent once more.

        A refusal of a freshly issued token is transient: the API user's rights are
        for an operator to fix, and the event can wait for that.
        """
        token = self._valid_token()
        response = self._http.send(method, path, what=what, headers=token.header(), **kwargs)
        if response.status_code != 401:
            return response
        log.info("MediaHaven refused the access token for %s; renewing it", what)
        token = self._valid_token(refused=token)
        response = self._http.send(method, path, what=what, headers=token.header(), **kwargs)
        if response.status_code == 401:
            with self._lock:
                if self._token is token:
                    self._token = None
            raise self._http.unavailable(
                f"answered 401 to {what} with a freshly issued token; "
                "check the API user's rights and credentials"
            )
        return response

    def secrets(self) -> list[str | None]:
        """What a server or library may echo back and no message may show."""
        token = self._token
        kept = [] if token is None else [token.access, token.refresh]
        return [self._login["password"], self._client["client_secret"], *kept]

    def _valid_token(self, refused: _Token | None = None) -> _Token:
        """The current token, unless there is none yet, it is about to expire or it is the
        one MediaHaven `refused`; then one asked for here, unless another thread already did."""
        with self._lock:
            token = self._token
            if token is not None and token is not refused:
                if token.renew_at is None or self._clock() < token.renew_at:
                    return token
                log.info("MediaHaven access token is about to expire; renewing it")
            self._token = None
            self._token = self._renewed(token or refused)
            return self._token

    def _renewed(self, stale: _Token | None) -> _Token:
        """`stale` refreshed, or a new login when there is nothing to refresh or that fails."""
        if stale is not None and stale.refresh is not None:
            refresh = {"grant_type": "refresh_token", "refresh_token": stale.refresh}
            try:
                return self._grant(REFRESH_GRANT_PATH, refresh, stale.refresh)
            except _GrantRefused as refused:
                log.info("MediaHaven refused the token refresh (%s); logging in anew", refused)
        try:
            return self._grant(PASSWORD_GRANT_PATH, self._login)
        except _GrantRefused as refused:
            raise self._http.unavailable(
                f"refused the API credentials ({refused}); check "
                "MEDIAHAVEN_API_USERNAME, _PASSWD, _CLIENT_ID and _CLIENT_SECRET"
            ) from None

    def _grant(self, path: str, grant: Mapping[str, str], refresh: str | None = None) -> _Token:
        """A token for `grant`; `refresh` is kept when the answer brings no new refresh
        token (RFC 6749 6)."""
        what = f"token request ({path})"
        response = self._http.send(
            "POST", path, what=what, safe_to_repeat=True, data={**grant, **self._client}
        )
        if 400 <= response.status_code < 500:
            # Not the body: an OAuth error may echo what was sent.
            raise _GrantRefused(f"HTTP {response.status_code} from {path}")
        body = self._http.json(self._http.succeeded(response, what), what, dict)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise self._http.unavailable(f"{what} answered without an access_token")
        new_refresh = body.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            refresh = new_refresh
        seconds = number_in(body.get("expires_in"))
        renew_at = None
        if seconds is not None and seconds > 0:
            # A short-lived token is renewed halfway rather than at once on every call.
            renew_at = self._clock() + seconds - min(EXPIRY_MARGIN_SECONDS, seconds / 2)
        return _Token(access, refresh, renew_at)
