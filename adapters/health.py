"""`/metrics`, `/healthz` and `/readyz` on METRICS_PORT (contract §7; docs/operations.md,
"Health"): prometheus-client's WSGI app and threaded server, on threads of their own so the
consumer and the probes never wait for each other, and bounded so nobody can hold it open.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

# A probe or a scrape sends its whole request as soon as it connects (a few hundred bytes);
# one still short of its request line and headers after this long is closed.
REQUEST_SECONDS = 5.0
# Connections held at once, each on a thread of its own. The probes and a scrape or two
# come at a time; 32 leaves room for their retries and a second Prometheus, and caps what
# any client can cost the process at 32 threads, fewer than its own workers may number.
MAX_CONNECTIONS = 32

# Beyond the longest wait the loop may spend in one call: connecting (socket and
# handshake timeouts) and the odd slow ack, so only a loop that is really stuck fails.
STALL_MARGIN_SECONDS = 30.0


def stall_limit(*, heartbeat: float, grace: float, blocked_timeout: float) -> float:
    """How long the consumer loop may go without coming round before it counts as stuck: the
    longest wait inside one call (a silent broker, the shutdown grace, a resource alarm)."""
    return max(2 * heartbeat, grace, blocked_timeout) + STALL_MARGIN_SECONDS


class Health:
    """What the probes answer, from what telemetry sets here; safe from any thread.

    `stopping` only ever turns true, from the signal handler: not ready from then until
    the exit, as the consumer only finishes what it has in hand.
    """

    def __init__(
        self, stall_limit_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = stall_limit_seconds
        self._clock = clock
        self._last_tick = clock()
        self.consuming = False
        self.stopping = False
        self.ledger_answers = True
        """Whether the ledger's last statement succeeded: without it every event is retried."""

    def tick(self) -> None:
        self._last_tick = self._clock()

    def live(self) -> tuple[bool, str]:
        """False only when the loop has not come round for longer than it may."""
        quiet = self._clock() - self._last_tick
        if quiet > self._limit:
            return False, f"stuck: the consumer loop has not come round for {quiet:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping: finishing the messages in hand"
        if not self.consuming:
            return False, "not consuming: not connected to the broker"
        if not self.ledger_answers:
            return False, "ledger unavailable: its last statement failed; ready when one succeeds"
        alive, why = self.live()
        return (True, "ready") if alive else (False, why)


def status_app(registry: CollectorRegistry, health: Health) -> WSGIApplication:
    """`/metrics` as prometheus-client serves it (text or OpenMetrics, as the scraper asks),
    the probes as one line of text, any other path 404."""
    metrics = make_wsgi_app(registry, disable_compression=True)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/metrics":
            answer: Iterable[bytes] = metrics(environ, start_response)
            return answer
        if path in ("/healthz", "/readyz"):
            ok, text = health.live() if path == "/healthz" else health.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
        else:
            status, text = "404 Not Found", "not found"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{text}\n".encode()]

    return app


class StatusServer(ThreadingWSGIServer):
    """`/metrics`, `/healthz` and `/readyz` on `port` of every interface, from `start` to
    `stop`; port 0: none.

    A thread for each of at most `max_connections` connections; one whose request has not
    arrived whole within `request_seconds` is closed. With every slot taken, a new connection
    takes the slot of the one that has waited longest for its request (a probe sends its
    request at once); only when every slot is answering is a new one closed at once."""

    # A burst of connections waits in the kernel's backlog, costing no thread, instead of
    # having its SYNs dropped (a dropped SYN costs a probe a 1 s retransmit).
    request_queue_size = 1024

    def __init__(
        self,
        *,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        request_seconds: float = REQUEST_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.port = port
        self.request_seconds = request_seconds
        self._max_connections = max_connections
        self._changed = threading.Condition()
        # Every connection that has a thread, oldest first: since when it waits for its
        # request, or None once that has arrived (or the connection was cut and is ending).
        self._held: dict[socket.socket, float | None] = {}
        self._serving = False
        super().__init__(("", port), _StatusHandler, bind_and_activate=False)
        self.set_app(status_app(registry, health))

    def start(self) -> None:
        """Listen; raises OSError when the port cannot be had (in use, not allowed)."""
        if not self.port:
            log.info("metrics and health endpoints off (METRICS_PORT=0)")
            return
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise
        threading.Thread(target=self.serve_forever, name="status-server", daemon=True).start()
        self._serving = True
        log.info("metrics on :%d/metrics, health on /healthz and /readyz", self.port)

    def stop(self) -> None:
        if self._serving:
            self._serving = False
            self.shutdown()  # returns once serve_forever has
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._changed:
            if len(self._held) >= self._max_connections:
                oldest = next(
                    (held for held, since in self._held.items() if since is not None), None
                )
                if oldest is not None:
                    self._cut(oldest)
                    # Its thread finds its input closed and gives its place up at once.
                    self._changed.wait_for(self._has_room, timeout=1.0)
            admitted = self._has_room()
            if admitted:
                self._held[request] = time.monotonic()
        if admitted:
            super().process_request(request, client_address)
        else:
            log.debug("status port: every connection is answering; %s closed", client_address)
            self.shutdown_request(request)

    def request_arrived(self, request: Any) -> None:
        """Its request line and headers are in: the deadline no longer applies."""
        with self._changed:
            if request in self._held:
                self._held[request] = None

    def shutdown_request(self, request: Any) -> None:
        """Its thread is done (or never started): its place is free."""
        with self._changed:
            self._held.pop(request, None)
            self._changed.notify_all()
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between accepts, and twice a second: close the connections past the deadline."""
        too_old = time.monotonic() - self.request_seconds
        with self._changed:
            for request, since in list(self._held.items()):
                if since is not None and since <= too_old:
                    self._cut(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is its own business: at DEBUG, not on stderr."""
        log.debug("status port: %s dropped", client_address, exc_info=True)

    def _has_room(self) -> bool:
        return len(self._held) < self._max_connections

    def _cut(self, request: socket.socket) -> None:
        """Under the lock: end a connection whose request has not arrived; its thread,
        waiting to read, finds the input closed and finishes."""
        self._held[request] = None
        with contextlib.suppress(OSError):  # already gone
            request.shutdown(socket.SHUT_RDWR)


class _StatusHandler(WSGIRequestHandler):
    server: StatusServer

    def setup(self) -> None:
        super().setup()
        # Each read and write on the socket; the server bounds the whole request.
        self.connection.settimeout(self.server.request_seconds)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.request_arrived(self.request)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes come every few seconds: at DEBUG, not on stderr."""
        log.debug("%s %s", self.address_string(), format % args)
