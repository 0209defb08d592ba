"""Several FTP connections to the transport server, so uploads from several workers overlap.

An FTP control connection carries one command at a time. The consumer's workers
each take a connection for their upload and put it back after: a connection is
opened when none is free, up to one per worker, and kept for the next upload.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.domain.model import Sidecar
from s3_events_handler.domain.ports import TransportServer


class FtpTransportPool(TransportServer):
    """The `TransportServer` port over up to `size` connections, each used by one upload at a time.

    The connection used last is taken first, so a quiet consumer keeps using the few
    it has and the others age out on the server's side (a dead one is reopened once,
    in the upload, as `FtpTransportServer` does).
    """

    def __init__(self, connect: Callable[[], FtpTransportServer], *, size: int) -> None:
        if size < 1:
            raise ValueError(f"an FTP pool needs room for a connection: {size}")
        self._connect = connect
        self._size = size
        self._free: list[FtpTransportServer] = []
        self._all: list[FtpTransportServer] = []
        self._changed = threading.Condition()

    @property
    def connections_opened(self) -> int:
        """Logins so far, over every connection of the pool."""
        with self._changed:
            return sum(transport.connections_opened for transport in self._all)

    def upload(self, sidecar: Sidecar) -> None:
        with self._connection() as transport:
            transport.upload(sidecar)

    def find_folders(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """`FtpTransportServer.find_folders`, on a connection of the pool."""
        with self._connection() as transport:
            return transport.find_folders(wanted)

    def close(self) -> None:
        """Close the connections not in use (one in use is left to its upload, which may be
        stuck in a call); the pool stays usable, and reconnects when asked to upload."""
        with self._changed:
            free = list(self._free)
        for transport in free:
            transport.close()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[FtpTransportServer]:
        """A connection no other thread uses until it is given back."""
        transport = self._take()
        try:
            yield transport
        finally:
            self._give_back(transport)

    def _take(self) -> FtpTransportServer:
        with self._changed:
            while not self._free and len(self._all) >= self._size:
                self._changed.wait()
            if self._free:
                return self._free.pop()
            transport = self._connect()  # not connected yet: its first upload logs in
            self._all.append(transport)
            return transport

    def _give_back(self, transport: FtpTransportServer) -> None:
        with self._changed:
            self._free.append(transport)
            self._changed.notify()


__all__ = ["FtpTransportPool"]
