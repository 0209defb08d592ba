"""Listening on a loopback port for the TCP go-betweens of the tests (`Relay`, `TlsProxy`).

What they share: a port that is free the first time and the same after a restart, one
thread that accepts, and a stop that leaves nothing listening. What each does with a
connection is its own.
"""

from __future__ import annotations

import socket
import threading

from tests.support.loopback import LOOPBACK, Startable

_POLL_SECONDS = 0.05
_JOIN_SECONDS = 5.0


class LoopbackListener(Startable):
    """Accepts on `port` from a thread of its own and hands each connection to `_accepted`."""

    def __init__(self, name: str) -> None:
        self.port = 0
        self._name = name
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def _wrap(self, listener: socket.socket) -> socket.socket:
        """The listening socket as connections are accepted from it (TLS, say)."""
        return listener

    def _accepted(self, client: socket.socket) -> None:
        """One accepted connection, on the accepting thread: hand it on quickly."""
        raise NotImplementedError

    def _listen(self) -> None:
        """Listen, on a free port the first time and on the same port afterwards."""
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            plain.bind((LOOPBACK, self.port))
            plain.listen(64)
            listener = self._wrap(plain)
        except BaseException:
            plain.close()
            raise
        listener.settimeout(_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name=f"{self._name}-{self.port}", daemon=True
        )
        self._acceptor.start()

    def _stop_listening(self) -> bool:
        """Close the port once the accepting thread ended; False when it was not listening."""
        listener, self._listener = self._listener, None
        if listener is None:
            return False
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_SECONDS)
            self._acceptor = None
        listener.close()
        return True

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by a stop
            self._accepted(client)


__all__ = ["LoopbackListener"]
