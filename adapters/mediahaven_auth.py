"""MediaHaven's OAuth2 tokens (contract §4.1): what every API call carries, kept valid.

The first call logs in (password grant). A token is renewed shortly before it
expires and when MediaHaven refuses it (401): refreshed, or asked for anew when
the refresh is refused. Refused credentials are transient: an operator fixes
them and the waiting events go through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import requests

from s3_events_handler.adapters.http_calls import HttpService, number_in
from s3_events_handler.domain.errors import Rejected

log = logging.getLogger(__name__)

PASSWORD_GRANT_PATH = "auth/ropc.php"
REFRESH_GRANT_PATH = "auth/oauth2/token"
# Renew this long before the token expires, so it cannot run out in flight.
EXPIRY_MARGIN_SECONDS = 30.0

# A request sent with the given headers (the Authorization header), answered.
AuthorisedRequest = Callable[[Mapping[str, str]], requests.Response]


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """The API user MediaHaven issues tokens to; secrets are kept out of its repr."""

    client_id: str
    client_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Token:
    access: str
    refresh: str | None
    renew_at: float | None


class _GrantRefused(Exception):
    """The token endpoint refused a grant (4xx): worth a password grant after a refresh."""


class MediaHavenTokens:
    """The API user's credentials and current token; the token is asked for on first use.

    Shared by the consumer's workers: one of them asks for a token or renews it while
    the others wait for it, so a token that expires or is refused is renewed once, not
    once per worker. Its token requests go through `http`, so they are tried again like
    any other idempotent call.
    """

    def __init__(
        self,
        *,
        http: HttpService,
        credentials: ApiCredentials,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._clock = clock
        self._token: _Token | None = None
        self._lock = threading.Lock()  # held while a token is asked for

    def send_authorised(self, send: AuthorisedRequest, what: str) -> requests.Response:
        """`send` with a valid token; when it is refused, renewed and `send` called once more.

        A refusal of a freshly issued token is transient: the API user's rights are
        for an operator to fix, and the event can wait for that.
        """
        token = self._token_for_call()
        response = send(_authorisation(token))
        if response.status_code != 401:
            return response
        log.info("MediaHaven refused the access token for %s; renewing it", what)
        token = self._token_for_call(refused=token)
        response = send(_authorisation(token))
        if response.status_code == 401:
            self._drop_refused(token)
            raise self._http.unavailable(
                f"answered 401 to {what} with a freshly issued token; "
                "check the API user's rights and credentials"
            )
        return response

    def secrets(self) -> list[str | None]:
        """What a server or library may echo back and no message may show."""
        secrets: list[str | None] = [self._credentials.password, self._credentials.client_secret]
        if self._token is not None:
            secrets += [self._token.access, self._token.refresh]
        return secrets

    def _token_for_call(self, refused: _Token | None = None) -> _Token:
        """The current token, unless there is none yet, it is about to expire or it is the
        one MediaHaven `refused`; then one asked for here, unless another thread already did."""
        with self._lock:
            token = self._token
            if token is not None and token is not refused:
                if token.renew_at is None or self._clock() < token.renew_at:
                    return token
                log.info("MediaHaven access token is about to expire; renewing it")
            return self._renew(token or refused)

    def _drop_refused(self, refused: _Token) -> None:
        with self._lock:
            if self._token is refused:
                self._token = None

    def _renew(self, stale: _Token | None) -> _Token:
        """Refresh `stale`, or log in anew when there is nothing to refresh or that fails."""
        self._token = None
        if stale is not None and stale.refresh is not None:
            try:
                return self._grant(
                    REFRESH_GRANT_PATH,
                    {"grant_type": "refresh_token", "refresh_token": stale.refresh},
                    previous_refresh=stale.refresh,
                )
            except _GrantRefused as refused:
                log.info("MediaHaven refused the token refresh (%s); logging in anew", refused)
        return self._password_grant()

    def _password_grant(self) -> _Token:
        try:
            credentials = self._credentials
            return self._grant(
                PASSWORD_GRANT_PATH,
                {
                    "grant_type": "password",
                    "username": credentials.username,
                    "password": credentials.password,
                },
            )
        except _GrantRefused as refused:
            # Transient: an operator fixes the credentials and the waiting events go through.
            raise self._http.unavailable(
                f"refused the API credentials ({refused}); check "
                "MEDIAHAVEN_API_USERNAME, _PASSWD, _CLIENT_ID and _CLIENT_SECRET"
            ) from None

    def _grant(
        self, path: str, grant: Mapping[str, str], previous_refresh: str | None = None
    ) -> _Token:
        """A token for `grant`'s fields, which every grant sends with the client's own."""
        what = f"token request ({path})"
        client = self._credentials
        response = self._http.send(
            "POST",
            path,
            what=what,
            safe_to_repeat=True,
            data={**grant, "client_id": client.client_id, "client_secret": client.client_secret},
        )
        try:
            self._http.succeeded(response, what)
        except Rejected:
            # Not its message: the body is left out, as an OAuth error may echo what was sent.
            raise _GrantRefused(f"HTTP {response.status_code} from {path}") from None
        body = self._http.json(response, what, dict)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise self._http.unavailable(f"{what} answered without an access_token")
        refresh = body.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            # RFC 6749 6: without a new refresh token, the old one stays good.
            refresh = previous_refresh
        self._token = _Token(access, refresh, self._renew_at(body.get("expires_in")))
        return self._token

    def _renew_at(self, expires_in: object) -> float | None:
        seconds = number_in(expires_in)
        if seconds is None or seconds <= 0:
            return None
        # A short-lived token is renewed halfway rather than at once on every call.
        return self._clock() + seconds - min(EXPIRY_MARGIN_SECONDS, seconds / 2)


def _authorisation(token: _Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.access}"}


__all__ = [
    "PASSWORD_GRANT_PATH",
    "REFRESH_GRANT_PATH",
    "ApiCredentials",
    "AuthorisedRequest",
    "MediaHavenTokens",
]
