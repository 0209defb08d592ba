"""A TCP relay on a loopback port that survives outages, for tests that cut a connection.

`down()` refuses connections and cuts the ones it carried, `up()` listens again on the
same port, `swallowing` accepts and never answers. Without a target it is a server that
accepts and never answers. The fault suite puts one in front of the PID service and the
Organisations API; the end-to-end tests put one between the consumer and the broker.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Self

from tests.support.loopback import LOOPBACK, Startable

POLL_SECONDS = 0.05


class Relay(Startable):
    """A TCP relay on a fixed loopback port to `target_port` (None: to nowhere).

    Up, it forwards both ways. Down, nothing listens on its port (connections are
    refused) and the connections it carried are cut. While `swallowing`, what is
    sent is dropped: connections are accepted and never answered. A relay without
    a target always swallows. `with relay:` is up inside, down after.
    """

    def __init__(self, target_port: int | None = None) -> None:
        self._target = target_port
        self.port = 0
        self.swallowing = target_port is None
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._carried: set[socket.socket] = set()

    def url(self, path: str = "/") -> str:
        if not self.port:
            raise RuntimeError("the relay has not been started")
        return f"http://{LOOPBACK}:{self.port}{path}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def up(self) -> Self:
        """Listen (on a free port the first time, on the same port afterwards)."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((LOOPBACK, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        listener.settimeout(POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name=f"relay-{self.port}", daemon=True
        )
        self._acceptor.start()
        return self

    def down(self) -> None:
        """Stop listening and cut every connection carried so far."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        listener.close()
        with self._lock:
            carried = list(self._carried)
        for sock in carried:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> Self:
        return self.up()

    def stop(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.accepted += 1
            server: socket.socket | None = None
            if self._target is not None and not self.swallowing:
                try:
                    server = socket.create_connection((LOOPBACK, self._target), timeout=5)
                    server.settimeout(None)
                except OSError:
                    client.close()
                    continue
            with self._lock:
                self._carried.update(s for s in (client, server) if s is not None)
            threading.Thread(
                target=self._carry, args=(client, server), name="relay-connection", daemon=True
            ).start()

    def _carry(self, client: socket.socket, server: socket.socket | None) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(client, selectors.EVENT_READ, server)
                if server is not None:
                    selector.register(server, selectors.EVENT_READ, client)
                while True:
                    for key, _events in selector.select():
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        other: socket.socket | None = key.data
                        if other is not None and not self.swallowing:
                            other.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                if sock is not None:
                    with self._lock:
                        self._carried.discard(sock)
                    sock.close()
