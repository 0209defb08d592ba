"""A fake MediaHaven REST API v2 on 127.0.0.1, spoken to over real sockets.

It is strict where the real API is (OAuth2 grants, bearer tokens, the query
syntax, multipart updates) so that an adapter passing against it speaks the
API; and it can misbehave on demand (faults, expired or revoked tokens, a
search engine's sloppy matching) so that tests can show how the adapter and
the use cases cope. Everything goes over HTTP: the client may live in another
process.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.loopback import LoopbackHttpServer

RECORDS_PATH = "/mediahaven-rest-api/v2/records"
PASSWORD_GRANT_PATH = "/auth/ropc.php"
REFRESH_GRANT_PATH = "/auth/oauth2/token"

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Fault:
    """A canned answer: `status` after `delay` seconds; `status=None` answers normally after it."""

    status: int | None = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0

    @classmethod
    def too_many_requests(cls, retry_after: float | str) -> Fault:
        return cls(429, headers={"Retry-After": str(retry_after)})

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls(None, delay=delay)


@dataclass(frozen=True, slots=True)
class Deletion:
    fragment_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RelationUpdate:
    fragment_id: str
    metadata: bytes
    metadata_content_type: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    target: str  # path and query string, as sent (still percent-encoded)
    at: float = field(default_factory=time.monotonic)
    """When it came in (`time.monotonic()`), before any latency or fault delayed the answer."""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


@dataclass(frozen=True, slots=True)
class _Grant:
    refresh_token: str
    expires_at: float


class QuerySyntaxError(ValueError):
    pass


_TERM_START = re.compile(r'([A-Za-z0-9_.]+):"')


def parse_query(q: str) -> list[list[tuple[str, str]]]:
    """`+(k1:"v1" k2:"v2") +(k3:"v3")` -> [[(k1, v1), (k2, v2)], [(k3, v3)]]; strict."""
    groups: list[list[tuple[str, str]]] = []
    i = 0
    while True:
        while i < len(q) and q[i] == " ":
            i += 1
        if i == len(q):
            break
        if not q.startswith("+(", i):
            raise QuerySyntaxError(f"expected '+(' at {i} in {q!r}")
        i += 2
        group: list[tuple[str, str]] = []
        while True:
            while i < len(q) and q[i] == " ":
                i += 1
            if q.startswith(")", i):
                i += 1
                break
            match = _TERM_START.match(q, i)
            if match is None:
                raise QuerySyntaxError(f'expected field:"value" or ")" at {i} in {q!r}')
            i = match.end()
            value: list[str] = []
            while True:
                if i >= len(q):
                    raise QuerySyntaxError(f"unterminated value in {q!r}")
                char = q[i]
                if char == "\\":
                    if i + 1 >= len(q):
                        raise QuerySyntaxError(f"dangling backslash in {q!r}")
                    value.append(q[i + 1])
                    i += 2
                elif char == '"':
                    i += 1
                    break
                else:
                    value.append(char)
                    i += 1
            group.append((match.group(1), "".join(value)))
            if i < len(q) and q[i] not in " )":
                raise QuerySyntaxError(f"expected a space or ')' after a value at {i} in {q!r}")
        if not group:
            raise QuerySyntaxError(f"empty group in {q!r}")
        groups.append(group)
    if not groups:
        raise QuerySyntaxError("empty query")
    return groups


class FakeMediaHaven(LoopbackHttpServer):
    """MediaHaven's token endpoints and v2 records API, with what happened kept for asserts.

    State may be read and changed from the test while the server runs; reads of the
    lists are best taken after the client call returned.
    """

    def __init__(
        self,
        *,
        client_id: str = "s3-events-handler",
        client_secret: str = "client-s3cr3t-7f3a",
        username: str = "api-user",
        password: str = "passw0rd-9d1c",
        expires_in: int = 3600,
        max_page_size: int = 1000,
        sloppy: bool = False,
        latency: float = 0.0,
    ) -> None:
        """`latency`: seconds added before every answer (see `LoopbackHttpServer`)."""
        super().__init__(_handler_for(self), name="fake-mediahaven", latency=latency)
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.expires_in = expires_in
        self.max_page_size = max_page_size
        self.sloppy = sloppy
        # Every bearer token is refused, even one just issued (rights taken away).
        self.refuse_tokens = False
        self.records: list[JSON] = []
        self.deleted: list[Deletion] = []
        self.relations: list[RelationUpdate] = []
        self.searches: list[str] = []
        self.requests: list[SeenRequest] = []
        self.token_requests = 0
        self.refresh_requests = 0
        self._tokens: dict[str, _Grant] = {}
        self._refresh_tokens: set[str] = set()
        self._issued_access: list[str] = []
        self._issued_refresh: list[str] = []
        self._faults: list[tuple[str | None, str, Fault]] = []
        self._lock = threading.RLock()

    # -- where it listens (`start`, `stop`, `with`: see LoopbackHttpServer) ------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, as MEDIAHAVEN_API_HOST takes it; only while running."""
        if not self.running:
            raise RuntimeError("not started")
        return self.url.removesuffix("/")

    # -- arranging ------------------------------------------------------------------------

    def add_record(
        self,
        fragment_id: str,
        *,
        is_fragment: bool = False,
        pid: str | None = None,
        local_id: str | None = None,
        key: str | None = None,
        bucket: str | None = None,
        md5: str | None = None,
    ) -> JSON:
        """A record in the API's JSON shape; fields left `None` are absent, as in MediaHaven."""
        dynamic = {
            name: value
            for name, value in (
                ("PID", pid),
                ("dc_identifier_localid", local_id),
                ("s3_object_key", key),
                ("s3_bucket", bucket),
            )
            if value is not None
        }
        record: JSON = {
            "Internal": {"FragmentId": fragment_id, "IsFragment": is_fragment},
            "Dynamic": dynamic,
        }
        if md5 is not None:
            record["Technical"] = {"Md5": md5}
        with self._lock:
            self.records.append(record)
        return record

    def fail_next(self, path: str, *faults: Fault, method: str | None = None) -> None:
        """Answer the next requests whose path starts with `path` with `faults`, in order."""
        with self._lock:
            self._faults.extend((method, path, fault) for fault in faults)

    def expire_tokens(self) -> None:
        """Every access token issued so far runs out now; refresh tokens stay good."""
        with self._lock:
            self._tokens = {
                token: _Grant(grant.refresh_token, 0.0) for token, grant in self._tokens.items()
            }

    def revoke_tokens(self) -> None:
        """Every access and refresh token issued so far is forgotten."""
        with self._lock:
            self._tokens.clear()
            self._refresh_tokens.clear()

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, in order, valid or not."""
        with self._lock:
            return list(self._issued_access)

    @property
    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued_refresh)

    def requests_to(self, path: str, method: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [
                seen
                for seen in self.requests
                if seen.path.startswith(path) and method in (None, seen.method)
            ]

    # -- serving (called on the server's threads) -----------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, (fault_method, prefix, fault) in enumerate(self._faults):
                if path.startswith(prefix) and fault_method in (None, method):
                    del self._faults[index]
                    return fault
        return None

    def _issue(self) -> JSON:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._tokens[access] = _Grant(refresh, time.monotonic() + self.expires_in)
        self._refresh_tokens.add(refresh)
        self._issued_access.append(access)
        self._issued_refresh.append(refresh)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.expires_in,
            "token_type": "Bearer",
        }

    def _grant(self, path: str, form: Mapping[str, str]) -> tuple[int, JSON]:
        with self._lock:
            self.token_requests += 1
            if form.get("client_id") != self.client_id or (
                form.get("client_secret") != self.client_secret
            ):
                return 401, {"error": "invalid_client"}
            if path == PASSWORD_GRANT_PATH:
                if form.get("grant_type") != "password":
                    return 400, {"error": "unsupported_grant_type"}
                if form.get("username") != self.username or form.get("password") != self.password:
                    return 400, {"error": "invalid_grant"}
                return 200, self._issue()
            self.refresh_requests += 1
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}
            refresh = form.get("refresh_token", "")
            if refresh not in self._refresh_tokens:
                return 400, {"error": "invalid_grant"}
            self._refresh_tokens.discard(refresh)
            self._tokens = {t: g for t, g in self._tokens.items() if g.refresh_token != refresh}
            return 200, self._issue()

    def _authorised(self, header: str | None) -> bool:
        if header is None or not header.startswith("Bearer "):
            return False
        with self._lock:
            grant = self._tokens.get(header.removeprefix("Bearer "))
            return (
                not self.refuse_tokens and grant is not None and grant.expires_at > time.monotonic()
            )

    def _search(self, params: Mapping[str, list[str]]) -> tuple[int, JSON]:
        q = params.get("q", [""])[0]
        with self._lock:
            self.searches.append(q)
        try:
            groups = parse_query(q)
            start = int(params.get("startIndex", ["0"])[0])
            size = int(params.get("nrOfResults", ["25"])[0])
        except ValueError as exc:
            return 400, {"Message": f"invalid search: {exc}"}
        if start < 0 or size < 0:
            return 400, {"Message": "startIndex and nrOfResults must not be negative"}
        with self._lock:
            found = [r for r in self.records if self._matches(r, groups)]
        page = found[start : start + min(size, self.max_page_size)]
        return 200, {
            "TotalNrOfResults": len(found),
            "NrOfResults": len(page),
            "StartIndex": start,
            "Results": page,
        }

    def _matches(self, record: JSON, groups: list[list[tuple[str, str]]]) -> bool:
        def value_of(name: str) -> object:
            section, key = ("Technical", "Md5") if name == "md5" else ("Dynamic", name)
            fields = record.get(section)
            return fields.get(key) if isinstance(fields, dict) else None

        def equal(actual: object, wanted: str) -> bool:
            if not isinstance(actual, str):
                return False
            if self.sloppy:
                return actual.lower().startswith(wanted.lower())
            return actual == wanted

        return all(any(equal(value_of(name), value) for name, value in group) for group in groups)

    def _find(self, fragment_id: str) -> JSON | None:
        for record in self.records:
            internal = record.get("Internal")
            if isinstance(internal, dict) and internal.get("FragmentId") == fragment_id:
                return record
        return None

    def _update(self, fragment_id: str, content_type: str, body: bytes) -> tuple[int, JSON | None]:
        try:
            parts = parse_multipart(content_type, body)
        except ValueError as exc:
            return 400, {"Message": f"invalid multipart body: {exc}"}
        metadata = parts.get("metadata")
        if metadata is None:
            return 400, {"Message": "no metadata part"}
        reason = parts.get("reason")
        with self._lock:
            if self._find(fragment_id) is None:
                return 404, {"Message": f"no record {fragment_id}"}
            self.relations.append(
                RelationUpdate(
                    fragment_id=fragment_id,
                    metadata=metadata.content,
                    metadata_content_type=metadata.content_type,
                    reason=reason.content.decode() if reason is not None else None,
                )
            )
        return 204, None

    def _delete(self, fragment_id: str, body: bytes) -> tuple[int, JSON | None]:
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return 400, {"Message": "body is not JSON"}
        reason = payload.get("Reason") if isinstance(payload, dict) else None
        with self._lock:
            record = self._find(fragment_id)
            if record is None:
                return 404, {"Message": f"no record {fragment_id}"}
            self.records.remove(record)
            self.deleted.append(Deletion(fragment_id, reason))
        return 204, None


@dataclass(frozen=True, slots=True)
class Part:
    content: bytes
    content_type: str | None
    filename: str | None


_DISPOSITION_PARAM = re.compile(r';\s*([a-zA-Z*]+)="((?:[^"\\]|\\.)*)"')


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """multipart/form-data by its boundary, byte-exact (no line-ending rewriting)."""
    match = re.match(r'multipart/form-data;.*boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError(f"not multipart/form-data: {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("no closing boundary")
    parts: dict[str, Part] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("a part is not framed by CRLF")
        head, separator, content = chunk[2:-2].partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("a part has no header/content separator")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        params = dict(_DISPOSITION_PARAM.findall(headers.get("content-disposition", "")))
        if "name" not in params:
            raise ValueError("a part has no name")
        parts[params["name"]] = Part(content, headers.get("content-type"), params.get("filename"))
    return parts


def _handler_for(fake: FakeMediaHaven) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "FakeMediaHaven/2"

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = urlsplit(self.path)
            with fake._lock:
                fake.requests.append(SeenRequest(self.command, self.path))
            if not fake._wait_latency():
                self.close_connection = True
                return
            fault = fake._take_fault(self.command, target.path)
            if fault is not None:
                if fault.delay and not fake._wait(fault.delay):
                    self.close_connection = True
                    return
                if fault.status is not None:
                    self._send_raw(fault.status, fault.body, dict(fault.headers))
                    return
            try:
                status, payload, extra = self._route(target.path, target.query, body)
            except Exception as exc:  # the fake must answer, not hang the client
                status, payload, extra = 500, {"Message": f"fake failed: {exc!r}"}, {}
            self._send_json(status, payload, extra)

        def _route(
            self, path: str, query: str, body: bytes
        ) -> tuple[int, JSON | None, dict[str, str]]:
            if path in (PASSWORD_GRANT_PATH, REFRESH_GRANT_PATH):
                if self.command != "POST":
                    return 405, {"error": "method_not_allowed"}, {}
                form = {
                    name: values[0]
                    for name, values in parse_qs(body.decode(), keep_blank_values=True).items()
                }
                status, payload = fake._grant(path, form)
                return status, payload, {}
            if path != RECORDS_PATH and not path.startswith(RECORDS_PATH + "/"):
                return 404, {"Message": f"no such endpoint {path}"}, {}
            if not fake._authorised(self.headers.get("Authorization")):
                return 401, {"error": "invalid_token"}, {"WWW-Authenticate": "Bearer"}
            if path == RECORDS_PATH:
                if self.command != "GET":
                    return 405, {"Message": "method not allowed"}, {}
                if "application/json" not in self.headers.get("Accept", ""):
                    return 406, {"Message": "only application/json is served here"}, {}
                status, payload = fake._search(parse_qs(query, keep_blank_values=True))
                return status, payload, {}
            segment = path.removeprefix(RECORDS_PATH + "/")
            if not segment or "/" in segment:
                return 404, {"Message": f"no such endpoint {path}"}, {}
            fragment_id = unquote(segment)
            if self.command == "POST":
                status, maybe = fake._update(
                    fragment_id, self.headers.get("Content-Type", ""), body
                )
                return status, maybe, {}
            if self.command == "DELETE":
                status, maybe = fake._delete(fragment_id, body)
                return status, maybe, {}
            return 405, {"Message": "method not allowed"}, {}

        def _send_json(self, status: int, payload: JSON | None, headers: dict[str, str]) -> None:
            if payload is None or status == HTTPStatus.NO_CONTENT:
                self._send_raw(status, b"", headers)
                return
            body = json.dumps(payload).encode()
            self._send_raw(status, body, {"Content-Type": "application/json", **headers})

        def _send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if status != HTTPStatus.NO_CONTENT:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and status != HTTPStatus.NO_CONTENT:
                    self.wfile.write(body)
            except OSError:
                self.close_connection = True

    return Handler


__all__ = [
    "Deletion",
    "FakeMediaHaven",
    "Fault",
    "Part",
    "QuerySyntaxError",
    "RelationUpdate",
    "SeenRequest",
    "parse_multipart",
    "parse_query",
]
