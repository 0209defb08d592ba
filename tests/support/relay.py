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

from tests.support.loopback import LOOPBACK
from tests.support.tcp_listener import LoopbackListener


class Relay(LoopbackListener):
    """A TCP relay on a fixed loopback port to `target_port` (None: to nowhere).

    Up, it forwards both ways. Down, nothing listens on its port (connections are
    refused) and the connections it carried are cut. While `swallowing`, what is
    sent is dropped: connections are accepted and never answered. A relay without
    a target always swallows. `with relay:` is up inside, down after.
    """

    def __init__(self, target_port: int | None = None) -> None:
        super().__init__("relay")
        self._target = target_port
        self.swallowing = target_port is None
        self.accepted = 0
        self._lock = threading.Lock()
        self._carried: set[socket.socket] = set()

    def url(self, path: str = "/") -> str:
        if not self.port:
            raise RuntimeError("the relay has not been started")
        return f"http://{LOOPBACK}:{self.port}{path}"

    def up(self) -> Self:
        """Listen (on a free port the first time, on the same port afterwards)."""
        if not self.listening:
            self._listen()
        return self

    def down(self) -> None:
        """Stop listening and cut every connection carried so far."""
        if not self._stop_listening():
            return
        with self._lock:
            carried = list(self._carried)
        for sock in carried:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> Self:
        return self.up()

    def stop(self) -> None:
        self.down()

    def _accepted(self, client: socket.socket) -> None:
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
                return
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
