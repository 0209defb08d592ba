"""A TLS-terminating TCP proxy on 127.0.0.1, for AMQPS tests against the shared broker.

The broker on 127.0.0.1:5672 speaks plain AMQP and is shared by every test and
developer, so it is not reconfigured: the service's AMQPS connection ends here, in a
TLS server socket with a test certificate, and the bytes inside go on to the broker
unchanged. One thread accepts, one thread per connection shakes hands and then
forwards both ways; `stop()` ends them all and leaves nothing listening.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path

from tests.support.loopback import LOOPBACK
from tests.support.tcp_listener import LoopbackListener

_POLL_SECONDS = 0.05
_BUFFER = 64 * 1024
_HANDSHAKE_SECONDS = 5.0
_JOIN_SECONDS = 5.0


class TlsProxy(LoopbackListener):
    """TLS with `server_pem` (private key and certificate chain) outside, `upstream` inside.

    `handshakes` counts the clients that accepted the certificate, `refused` those
    whose handshake failed (a client that does not trust it, or one speaking plain
    AMQP to a TLS port).
    """

    def __init__(self, server_pem: Path, upstream: tuple[str, int]) -> None:
        super().__init__("tls-proxy")
        self.server_pem = server_pem
        self.upstream = upstream
        self._lock = threading.Lock()
        self._handshakes = 0
        self._refused = 0
        self._links: set[threading.Thread] = set()
        self._upstreams: set[socket.socket] = set()

    @property
    def address(self) -> tuple[str, int]:
        if not self.port:
            raise RuntimeError("the TLS proxy has not been started")
        return LOOPBACK, self.port

    @property
    def handshakes(self) -> int:
        with self._lock:
            return self._handshakes

    @property
    def refused(self) -> int:
        with self._lock:
            return self._refused

    def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a restart)."""
        if self.listening:
            raise RuntimeError("the TLS proxy is already running")
        self._listen()

    def stop(self) -> None:
        """Stop listening and cut every forwarded connection; returns once all threads ended."""
        if not self._stop_listening():
            return
        with self._lock:
            links, upstreams = list(self._links), list(self._upstreams)
        for upstream in upstreams:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
        for link in links:
            link.join(_JOIN_SECONDS)
        if any(link.is_alive() for link in links):
            raise RuntimeError("a TLS proxy connection did not stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wrap(self, listener: socket.socket) -> socket.socket:
        """Handshakes happen on each connection's own thread, so a slow or hostile client
        never holds up the next one."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.server_pem))
        return context.wrap_socket(listener, server_side=True, do_handshake_on_connect=False)

    def _accepted(self, client: socket.socket) -> None:
        assert isinstance(client, ssl.SSLSocket)  # accepted from the wrapped listener
        link = threading.Thread(
            target=self._link, args=(client,), name=f"tls-proxy-link-{self.port}", daemon=True
        )
        with self._lock:
            self._links.add(link)
        link.start()

    def _link(self, client: ssl.SSLSocket) -> None:
        try:
            with client:
                client.settimeout(_HANDSHAKE_SECONDS)
                try:
                    client.do_handshake()
                except OSError:  # ssl.SSLError included: the client refused, or spoke plain
                    self._count(refused=True)
                    return
                self._count(refused=False)
                with socket.create_connection(self.upstream, timeout=_HANDSHAKE_SECONDS) as up:
                    with self._lock:
                        self._upstreams.add(up)
                    try:
                        self._forward(client, up)
                    finally:
                        with self._lock:
                            self._upstreams.discard(up)
        except OSError:
            pass  # either side went away: the other is closed with it
        finally:
            with self._lock:
                self._links.discard(threading.current_thread())

    def _forward(self, client: ssl.SSLSocket, upstream: socket.socket) -> None:
        """Copy bytes both ways until one side closes or the proxy stops.

        One thread does both directions: an SSL socket must not be read and written from
        two threads at once. Bytes OpenSSL already decrypted but not yet handed out
        (`pending()`) are read before waiting on the sockets again.
        """
        while not self._stopping.is_set():
            readable: list[socket.socket]
            if client.pending():
                readable = [client]
            else:
                readable, _, _ = select.select([client, upstream], [], [], _POLL_SECONDS)
            for source in readable:
                target = upstream if source is client else client
                data = source.recv(_BUFFER)
                if not data:
                    return
                target.sendall(data)

    def _count(self, *, refused: bool) -> None:
        with self._lock:
            if refused:
                self._refused += 1
            else:
                self._handshakes += 1
