"""Liveness, readiness and the metrics, served over HTTP on METRICS_PORT (SPEC 7).

`GET /metrics` is the Prometheus exposition of the process's registry; `GET /healthz`
says whether the consumer loop still comes round, `GET /readyz` whether it is
connected and consuming, its ledger answers and no stop was asked for. A small
`http.server` on daemon threads: a scrape or a probe never waits for the consumer, and
the consumer never waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

# Beyond the longest wait the loop may spend in one call: connecting (socket and
# handshake timeouts) and the odd slow ack, so only a loop that is really stuck fails.
STALL_MARGIN_SECONDS = 30.0


def stall_limit(*, heartbeat: float, grace: float, blocked_timeout: float) -> float:
    """How long the consumer loop may go without coming round before it counts as stuck.

    It legitimately waits that long inside one call: up to two heartbeats for a broker
    that went silent, the shutdown grace for the message in hand, and the blocked-
    connection timeout for a broker that holds back publishers (a resource alarm) —
    restarting then would not help, and every replica would restart at once.
    """
    return max(2 * heartbeat, grace, blocked_timeout) + STALL_MARGIN_SECONDS


class Health:
    """What the probes answer, from what the consumer reports; safe from any thread."""

    def __init__(
        self, stall_limit_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = stall_limit_seconds
        self._clock = clock
        self._last_tick = clock()
        self._consuming = False
        self._stopping = False
        self._ledger_answers = True

    def tick(self) -> None:
        self._last_tick = self._clock()

    def consuming(self, yes: bool) -> None:
        self._consuming = yes

    def ledger_answers(self, yes: bool) -> None:
        """Whether the ledger's last statement succeeded: without it every event is retried."""
        self._ledger_answers = yes

    def stopping(self) -> None:
        """Not ready from now until the exit: the consumer only finishes what it has in hand.

        Only sets a flag: it is called from the signal handler.
        """
        self._stopping = True

    def live(self) -> tuple[bool, str]:
        """False only when the loop has not come round for longer than it may."""
        quiet = self._clock() - self._last_tick
        if quiet > self._limit:
            return False, f"stuck: the consumer loop has not come round for {quiet:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "stopping: finishing the messages in hand"
        if not self._consuming:
            return False, "not consuming: not connected to the broker"
        if not self._ledger_answers:
            return False, "ledger unavailable: its last statement failed; ready when one succeeds"
        alive, why = self.live()
        return (True, "ready") if alive else (False, why)


class StatusServer:
    """`/metrics`, `/healthz` and `/readyz` on `port` of every interface; port 0: none."""

    def __init__(self, *, port: int, registry: CollectorRegistry, health: Health) -> None:
        self.port = port
        self._registry = registry
        self._health = health
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; raises OSError when the port cannot be had (in use, not allowed)."""
        if not self.port:
            log.info("metrics and health endpoints off (METRICS_PORT=0)")
            return
        server = _HttpServer(("", self.port), self._registry, self._health)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="status-server", daemon=True
        )
        self._thread.start()
        log.info("metrics on :%d/metrics, health on /healthz and /readyz", self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: Health
    ) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _StatusHandler)


class _StatusHandler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encode, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._answer(HTTPStatus.OK, encode(self.server.registry), content_type)
        elif path in ("/healthz", "/readyz"):
            health = self.server.health
            ok, text = health.live() if path == "/healthz" else health.ready()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._answer(status, f"{text}\n".encode(), "text/plain; charset=utf-8")
        else:
            self._answer(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _answer(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes come every few seconds: at DEBUG, not on stderr."""
        log.debug("%s %s", self.address_string(), format % args)
