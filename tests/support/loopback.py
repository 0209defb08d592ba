"""The life cycle the loopback fakes share: started for a test, stopped without leftovers.

`LoopbackHttpServer` serves HTTP on 127.0.0.1, on a free port, from daemon threads, with
the request handler class it is given; the fakes subclass it. `Startable` is the
`with` block: start on the way in, stop on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"
_POLL_SECONDS = 0.01


def free_port() -> int:
    """A loopback port nothing listens on just now, for a process to listen on next."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class Startable:
    """Something a test starts and stops; `with thing:` does both."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    """Keeps its connections so `stop()` can cut keep-alive ones still open."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout test) is not worth a traceback; a fake's bug is."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class LoopbackHttpServer(Startable):
    """An HTTP server on 127.0.0.1 answering with `handler`, started and stopped at will.

    `stop()` leaves nothing behind: the port refuses connections, connections still
    open (kept alive) are cut, and answers held back in `_wait` wake up. It may be
    started again afterwards, on another free port.

    `latency` (seconds) is added before every answer, as a distant service would take:
    each request waits its own, so concurrent requests overlap as they would over a network.
    """

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, name: str, latency: float = 0.0
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency cannot be negative: {latency}")
        self._handler = handler
        self._name = name
        self.latency = latency
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The port it listens on; still known after `stop()`, when it refuses connections."""
        if self._port is None:
            raise RuntimeError(f"{self._name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT/`."""
        return f"http://{LOOPBACK}:{self.port}/"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self._name} is already running")
        self._stopping.clear()
        server = _Server((LOOPBACK, 0), self._handler)
        self._server, self._port = server, server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name=self._name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (a stopped server stays stopped; stopping it again does nothing)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _wait(self, seconds: float) -> bool:
        """Sleep, but wake when the server stops; True when it did not stop."""
        return not self._stopping.wait(seconds)

    def _wait_latency(self) -> bool:
        """The added latency of one answer (see the class); True when the server did not stop."""
        return self._wait(self.latency) if self.latency > 0 else True


__all__ = ["LOOPBACK", "LoopbackHttpServer", "Startable"]
