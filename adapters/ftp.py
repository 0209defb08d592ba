"""The transport server over FTP (ftplib): sidecars land whole, under their final name.

One control connection is kept open and reused between uploads; it is opened on the first
upload and reopened once when it turns out to have died. Opening and logging in, over FTPS
too, is `ftp_connection`'s; the upload itself, with the rules for two writers of one
sidecar (contract §4.4), is `ftp_upload`'s.
"""

from __future__ import annotations

import ftplib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.ftp_connection import (
    ConnectionLost,
    FtpAccount,
    FtpConnection,
    lost_unless_refused,
    reply,
)
from s3_events_handler.adapters.ftp_upload import put_in_place, temporary_name
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


class FtpTransportServer(TransportServer):
    """MediaHaven's transport server over one FTP connection, one upload at a time.

    An FTP control connection carries one command at a time: uploads from several
    threads wait for each other on its lock. `FtpTransportPool` gives each its own.
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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`tls`: explicit FTPS, verified against the system's CA store plus `ca_file`."""
        hostname, port = parse_ftp_host(host)
        self._account = FtpAccount(hostname, port, user, password, timeout, tls, ca_file)
        # Servers sometimes echo what they were sent; no reply quoted in a message shows it.
        self._scrub = Redactor([password]).redact
        self._connection: FtpConnection | None = None
        self._lock = threading.Lock()
        self._sleep = sleep
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"FtpTransportServer({self._account})"

    def upload(self, sidecar: Sidecar) -> None:
        """Write `.{name}.xml.{token}.part`, then rename it: MediaHaven only sees whole sidecars.

        A connection kept from before may have died meanwhile: it is reopened once, and
        the upload written again under the same temporary name, replacing what the dead
        connection may have left.
        """
        data = sidecar_xml.render(sidecar)
        temporary = temporary_name(sidecar)
        with self._lock:
            tries = 1 if self._connection is None else 2
            for tried in range(1, tries + 1):
                try:
                    self._place(sidecar, temporary, data)
                    return
                except ConnectionLost as lost:
                    self._discard()
                    if tried == tries:
                        raise ServiceUnavailable(
                            self._scrub(str(lost)), system=System.FTP
                        ) from lost.__cause__
                    logger.warning(
                        "FTP connection to %s was lost (%s); reconnecting once",
                        self._account.address,
                        self._scrub(str(lost)),
                    )

    def find_folders(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Where each (CP name, folder) destination is on the server; None where it is not.

        Reads only (NLST, CWD), for a check before anything is uploaded. The destination
        table lists CP names lower-cased and the server's folders carry the MAM label's
        own case, so the CP name matches in any case; the folder is the one an upload
        changes to. Raises `ServiceUnavailable` when the server cannot be logged in to or
        listed.
        """
        with self._lock:
            connection = self._connected()
            try:
                top = connection.names("/")
                found: dict[tuple[str, str], str | None] = {}
                for cp_name, folder in wanted:
                    paths = (f"/{name}/{folder}" for name in top if name.lower() == cp_name.lower())
                    found[(cp_name, folder)] = next(filter(connection.is_folder, paths), None)
            except (ConnectionLost, ftplib.error_perm) as error:  # a refusal says it all
                self._discard()
                raise ServiceUnavailable(
                    f"cannot list the folders on FTP server {self._account.address}: "
                    f"{self._scrub(str(error))}",
                    system=System.FTP,
                ) from error
        return found

    def close(self) -> None:
        """Drop the connection; the next upload opens a new one."""
        with self._lock:
            self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _place(self, sidecar: Sidecar, temporary: str, data: bytes) -> None:
        """The upload on this object's connection: `Rejected` when the server refuses it,
        `ConnectionLost` when the connection failed."""
        folder = f"/{sidecar.cp_name}/{sidecar.folder}"
        final = sidecar.filename
        connection = self._connected()
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

    def _connected(self) -> FtpConnection:
        """This object's connection, logged in now if there is none."""
        if self._connection is None:
            self._connection = self._account.log_in()
            self.connections_opened += 1
            account = self._account
            how = " over FTPS" if account.tls else ""
            logger.info("logged in to FTP server %s as %s%s", account.address, account.user, how)
        return self._connection

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except OSError as error:
                logger.debug("closing the FTP connection failed: %s", reply(error))
