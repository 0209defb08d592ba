"""Fake PID service and Organisations API on 127.0.0.1, for tests that talk over real sockets.

Each serves from daemon threads on a free port, so a service under test in
another process can reach it through `.url`. A test can queue canned answers
(a status, a body, a delay); once the queue is empty the fake answers normally.
Every answer can be made to take longer (`latency`), and the connection can be kept
open between requests (`keep_alive`), as the real services do.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackHttpServer

_PID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Canned:
    """One queued answer. `body=None` means the fake's normal answer, after any `delay`.

    A `bytes` body is sent as is (`b"null"` for a JSON null); anything else as JSON.
    """

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    """Sent besides Content-Type and Content-Length (a Location, a Set-Cookie)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def json_answer(value: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(value).encode())


@dataclass
class _State:
    queued: deque[Canned] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)


class StubServer(LoopbackHttpServer):
    """What both fakes share: a queue of canned answers and a record of every request.
    Subclasses say what the normal answer is."""

    def __init__(self, *, latency: float = 0.0, keep_alive: bool = False) -> None:
        """`latency`: seconds added before every answer (see `LoopbackHttpServer`).

        `keep_alive` answers in HTTP/1.1 and keeps the connection; the default, HTTP/1.0,
        closes it after every answer, so a client opens a new one per request.
        """
        self.keep_alive = keep_alive
        super().__init__(_handler_for(self), name=type(self).__name__, latency=latency)
        self._lock = threading.Lock()
        self._state = _State()

    # -- what a subclass provides -------------------------------------------------

    def answer(self, request: RecordedRequest) -> Answer:
        """The normal answer to `request`."""
        raise NotImplementedError

    # -- what a test uses (and `start`, `stop`, `url`, `with`) ---------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._state.requests)

    def queue(self, *answers: Canned) -> None:
        """Answer the next requests with these, in order, before answering normally again."""
        with self._lock:
            self._state.queued.extend(answers)

    # -- serving -------------------------------------------------------------------

    def _respond(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self._state.requests.append(request)
            canned = self._state.queued.popleft() if self._state.queued else None
        if canned is None:
            return self.answer(request)
        if canned.delay:
            self._wait(canned.delay)  # cut short by stop()
        if canned.body is None:
            if canned.status == 200:
                return replace(self.answer(request), headers=canned.headers)
            answer = Answer(canned.status, f"canned {canned.status}".encode(), "text/plain")
        elif isinstance(canned.body, bytes):
            answer = Answer(canned.status, canned.body, "text/plain")
        else:
            answer = json_answer(canned.body, canned.status)
        return replace(answer, headers=canned.headers)


def _handler_for(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if stub.keep_alive else "HTTP/1.0"
        # Headers and body go out in two writes: without this, a kept-alive connection
        # waits for the client's delayed ACK before the body leaves.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=self.rfile.read(length),
            )
            if not stub._wait_latency():
                self.close_connection = True
                return
            answer = stub._respond(request)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


class FakePidService(StubServer):
    """Answers every GET with a fresh valid PID, `[{"id": pid, "number": 1}]`."""

    def __init__(self, *, latency: float = 0.0, keep_alive: bool = False) -> None:
        super().__init__(latency=latency, keep_alive=keep_alive)
        self.minted: list[str] = []

    def answer(self, request: RecordedRequest) -> Answer:
        if request.method != "GET":
            return Answer(405, b"GET only", "text/plain")
        pid = "".join(secrets.choice(_PID_ALPHABET) for _ in range(10))
        with self._lock:
            self.minted.append(pid)
        return json_answer([{"id": pid, "number": 1}])


class FakeOrganisationsApi(StubServer):
    """Answers the GraphQL lookup of `organizations(id: $id) { mam_label }` from a table.

    An OR-id missing from the table gets an empty list; one mapped to None gets a
    null label. A request that is not such a query, or that pastes the id into the
    query instead of passing it as a variable, gets a 400 and is noted in `invalid`.
    """

    def __init__(
        self,
        labels: dict[str, str | None] | None = None,
        *,
        latency: float = 0.0,
        keep_alive: bool = False,
    ) -> None:
        super().__init__(latency=latency, keep_alive=keep_alive)
        self.labels: dict[str, str | None] = dict(labels or {})
        self.variables: list[dict[str, Any]] = []
        self.invalid: list[str] = []

    @property
    def looked_up(self) -> list[str]:
        """The OR-ids asked for, in order."""
        with self._lock:
            return [str(variables["id"]) for variables in self.variables]

    def answer(self, request: RecordedRequest) -> Answer:
        problem, variables = _graphql_lookup(request)
        if problem is not None:
            with self._lock:
                self.invalid.append(problem)
            return json_answer({"errors": [{"message": problem}]}, status=400)
        with self._lock:
            self.variables.append(variables)
        or_id = variables["id"]
        if or_id not in self.labels:
            return json_answer({"data": {"organizations": []}})
        return json_answer({"data": {"organizations": [{"mam_label": self.labels[or_id]}]}})


def _graphql_lookup(request: RecordedRequest) -> tuple[str | None, dict[str, Any]]:
    """(why the request is not a proper lookup, or None; its variables)."""
    if request.method != "POST":
        return f"{request.method} instead of POST", {}
    try:
        body = request.json()
    except ValueError:
        return "body is not JSON", {}
    if not isinstance(body, dict):
        return "body is not a JSON object", {}
    query, variables = body.get("query"), body.get("variables")
    if not isinstance(query, str) or "organizations(id: $id)" not in query:
        return "query does not ask for organizations(id: $id)", {}
    if "mam_label" not in query:
        return "query does not ask for mam_label", {}
    if not isinstance(variables, dict) or not isinstance(variables.get("id"), str):
        return "variables.id is missing or not a string", {}
    if variables["id"] and variables["id"] in query:
        return "the id is pasted into the query", {}
    return None, variables


__all__ = [
    "Answer",
    "Canned",
    "FakeOrganisationsApi",
    "FakePidService",
    "RecordedRequest",
    "StubServer",
]
