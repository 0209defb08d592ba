"""The transport server over FTP (ftplib): sidecars land whole, under their final name.

Each upload in progress has a control connection of its own (one carries one command at
a time), kept for the next upload and reopened once when it turns out to have died. With
`tls` it is explicit FTPS (contract §7): `AUTH TLS` before logging in, then `PROT P`.
"""

from __future__ import annotations

import contextlib
import ftplib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.ftp_upload import (
    FAILURES,
    ConnectionLost,
    lost_unless_refused,
    put_in_place,
    reply,
    temporary_name,
)
from s3_events_handler.adapters.tls import client_context, unverified, verification_failure
from s3_events_handler.application.reasons import Redactor
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System
from s3_events_handler.domain.model import Sidecar
from s3_events_handler.domain.ports import TransportServer

logger = logging.getLogger(__name__)

DEFAULT_PORT = 21
_SCHEME = "ftp://"


def parse_ftp_host(value: str) -> tuple[str, int]:
    """`ftp://host[:port]` or `host[:port]` (trailing `/` allowed) -> (host, port).

    The configured value is also the transfer request's `host`, so it is kept
    as operators write it and only taken apart here.
    """
    text = value.strip()
    if text[: len(_SCHEME)].lower() == _SCHEME:
        text = text[len(_SCHEME) :]
    elif "://" in text:
        raise ValueError(f"FTP host must be ftp://host[:port] or host[:port]: {value!r}")
    text = text.removesuffix("/")
    if not text or any(char in text for char in "/@?#\\ "):
        raise ValueError(f"FTP host must be ftp://host[:port] or host[:port]: {value!r}")
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"FTP host has an invalid port: {value!r}") from None
    if not parts.hostname or port == 0 or text.endswith(":"):
        raise ValueError(f"FTP host must be ftp://host[:port] or host[:port]: {value!r}")
    return parts.hostname, DEFAULT_PORT if port is None else port


@dataclass(eq=False)
class _Connection:
    """A logged-in control connection, in binary mode, and the folder it is in."""

    session: ftplib.FTP
    folder: str | None = None

    def change_to(self, folder: str) -> None:
        """CWD `folder`, unless the connection is there already: most uploads share one.
        A refusal is the server's reply (`ftplib.error_perm`)."""
        if self.folder != folder:
            self.folder = None
            with lost_unless_refused(f"FTP CWD {folder}"):
                self.session.cwd(folder)
            self.folder = folder

    def is_folder(self, path: str) -> bool:
        try:
            self.change_to(path)
        except ftplib.error_perm:
            return False
        return True


class FtpTransportServer(TransportServer):
    """MediaHaven's transport server over up to `connections` FTP connections, each used by
    one upload at a time and opened on the first upload that finds none free.

    `tls`: explicit FTPS, verified against the system's CA store plus `ca_file`.
    """

    def __init__(
        self,
        *,
        host: str,
        user: str,
        password: str,
        timeout: float,
        tls: bool = False,
        ca_file: str = "",
        connections: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if connections < 1:
            raise ValueError(f"an FTP transport server needs room for a connection: {connections}")
        self._hostname, self._port = parse_ftp_host(host)
        self.address = f"{self._hostname}:{self._port}"
        self._user = user
        self._password = password
        self._timeout = timeout
        self._tls = tls
        self._ca_file = ca_file
        self._sleep = sleep
        # Servers sometimes echo what they were sent; no reply quoted in a message shows it.
        self._scrub = Redactor([password]).redact
        self._turns = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()  # over the two below
        self._free: list[_Connection] = []  # the one used last is taken first
        self.connections_opened = 0

    def upload(self, sidecar: Sidecar) -> None:
        """Write `.{name}.xml.{token}.part`, then rename it: MediaHaven only sees whole sidecars.

        A connection kept from before may have died meanwhile: it is reopened once, and
        the upload written again under the same temporary name, replacing what the dead
        connection may have left.
        """
        data = sidecar_xml.render(sidecar)
        temporary = temporary_name(sidecar)
        with self._turns:
            connection = self._kept()
            tries = 1 if connection is None else 2
            for tried in range(1, tries + 1):
                connection = connection or self._log_in()
                try:
                    self._place(connection, sidecar, temporary, data)
                    return
                except ConnectionLost as lost:
                    self._close(connection)
                    connection = None
                    if tried == tries:
                        raise ServiceUnavailable(
                            self._scrub(str(lost)), system=System.FTP
                        ) from lost.__cause__
                    logger.warning(
                        "FTP connection to %s was lost (%s); reconnecting once",
                        self.address,
                        self._scrub(str(lost)),
                    )
                finally:
                    self._keep(connection)

    def find_folders(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Where each (CP name, folder) destination is on the server, None where it is not:
        a check that only reads (NLST, CWD). The CP name matches in any case, as the table
        lists it lower-cased and the server's folders carry the MAM label's own case."""
        found: dict[tuple[str, str], str | None] = {}
        with self._turns:
            connection = self._kept() or self._log_in()
            try:
                with lost_unless_refused("FTP NLST /"):
                    # Some servers answer with paths, others with names.
                    top = [entry.rsplit("/", 1)[-1] for entry in connection.session.nlst("/")]
                for cp_name, folder in wanted:
                    paths = (f"/{name}/{folder}" for name in top if name.lower() == cp_name.lower())
                    found[(cp_name, folder)] = next(filter(connection.is_folder, paths), None)
            except (ConnectionLost, ftplib.error_perm) as error:  # a refusal says it all
                self._close(connection)
                raise ServiceUnavailable(
                    f"cannot list the folders on FTP server {self.address}: "
                    f"{self._scrub(str(error))}",
                    system=System.FTP,
                ) from error
            self._keep(connection)
        return found

    def close(self) -> None:
        """Close the connections not in use (one in use is left to its upload, which may be
        stuck in a call); the next upload opens a new one."""
        with self._lock:
            free, self._free = self._free, []
        for connection in free:
            self._close(connection)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _place(
        self, connection: _Connection, sidecar: Sidecar, temporary: str, data: bytes
    ) -> None:
        """The upload on `connection`: `Rejected` when the server refuses it,
        `ConnectionLost` when the connection failed."""
        folder = f"/{sidecar.cp_name}/{sidecar.folder}"
        final = sidecar.filename
        try:
            connection.change_to(folder)
        except ftplib.error_perm as error:
            raise Rejected(
                f"no folder {folder} on the transport server, or no access: "
                f"{self._scrub(reply(error))}",
                system=System.FTP,
            ) from error
        try:
            with lost_unless_refused(f"FTP upload of {folder}/{final}"):
                put_in_place(connection.session, temporary, final, data, sleep=self._sleep)
        except ftplib.error_perm as error:
            raise Rejected(
                f"transport server refused {folder}/{final}: {self._scrub(reply(error))}",
                system=System.FTP,
            ) from error
        logger.debug("uploaded sidecar %s/%s (%d bytes)", folder, final, len(data))

    def _kept(self) -> _Connection | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def _keep(self, connection: _Connection | None) -> None:
        if connection is not None:  # None: closed for good
            with self._lock:
                self._free.append(connection)

    def _close(self, connection: _Connection) -> None:
        """Close the sockets without a goodbye: a server that stopped answering holds up nothing."""
        try:
            connection.session.close()
        except OSError as error:
            logger.debug("closing the FTP connection failed: %s", reply(error))

    def _log_in(self) -> _Connection:
        """A new connection, logged in and in binary mode; `ServiceUnavailable` saying why not.

        The TLS context is made for each connection, so a CA file fixed in place is used
        from the next connection on.
        """
        how = " over FTPS" if self._tls else ""
        if not self._tls:
            session = ftplib.FTP(timeout=self._timeout)
        else:
            try:
                context = client_context(self._ca_file)
            except OSError as error:
                raise ServiceUnavailable(
                    f"MEDIAHAVEN_FTP_CA_FILE={self._ca_file!r} cannot be used for FTPS: "
                    f"{error.strerror or error}",
                    system=System.FTP,
                ) from error
            session = ftplib.FTP_TLS(context=context, timeout=self._timeout)
        try:
            session.connect(self._hostname, self._port)
            session.login(self._user, self._password)  # FTP_TLS: AUTH TLS first
            if isinstance(session, ftplib.FTP_TLS):
                session.prot_p()  # the data channel encrypted too
            with contextlib.suppress(ftplib.Error):  # paths in UTF-8 where the server asks
                session.sendcmd("OPTS UTF8 ON")
            # Binary once per connection, where ftplib's `storbinary` asks before every file.
            session.voidcmd("TYPE I")
        except FAILURES as error:
            session.close()
            failure = verification_failure(error)
            if failure is None:
                why = (
                    f"cannot log in to FTP server {self.address}{how} as {self._user!r}: "
                    f"{self._scrub(reply(error))}"
                )
            else:
                names = ("MEDIAHAVEN_FTP_TLS", "MEDIAHAVEN_FTP_CA_FILE")
                refused = unverified(f"FTP server {self.address}", names, self._ca_file, failure)
                why = f"{refused}; events are retried, and go through once the CA is fixed"
            raise ServiceUnavailable(why, system=System.FTP) from error
        with self._lock:
            self.connections_opened += 1
        logger.info("logged in to FTP server %s as %s%s", self.address, self._user, how)
        return _Connection(session)
