"""One control connection to the transport server, through ftplib: opened and logged in,
every socket operation bounded by a timeout.

With `tls` it is explicit FTPS (contract §7): `AUTH TLS` before logging in, then `PROT P`,
so the password and the sidecars only cross the network encrypted. A certificate that
cannot be verified is a transient failure naming the settings: the events wait in the
retry queues until an operator fixes the CA, then go through.
"""

from __future__ import annotations

import contextlib
import ftplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

from s3_events_handler.adapters.tls import client_context, unverified, verification_failure
from s3_events_handler.application.reasons import Redactor
from s3_events_handler.domain.errors import ServiceUnavailable, System

NOT_LOGGED_IN = 530  # a server that forgot the session: log in again
FAILURES = (ftplib.Error, OSError, EOFError)
"""What an ftplib call raises: a reply it did not expect, or the connection failing."""


class ConnectionLost(Exception):
    """The control connection failed, or the server forgot the session: worth one reconnect."""


def reply(error: BaseException) -> str:
    """The server's reply, or the socket error with its type: one line for a reason."""
    text = str(error)
    if isinstance(error, ftplib.Error) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def reply_code(error: ftplib.Error) -> int:
    """The reply code of an ftplib error (0 when the reply has none)."""
    text = str(error)[:3]
    return int(text) if text.isdigit() else 0


@contextlib.contextmanager
def lost_unless_refused(doing: str) -> Iterator[None]:
    """Let a refusal (a 5xx reply) through; anything else means the connection is gone:
    `ConnectionLost`, saying what it was `doing`."""
    try:
        yield
    except ftplib.error_perm as error:
        if reply_code(error) != NOT_LOGGED_IN:
            raise
        raise ConnectionLost(f"FTP session expired: {reply(error)}") from error
    except FAILURES as error:
        raise ConnectionLost(f"{doing} failed: {reply(error)}") from error


class FtpConnection:
    """A logged-in control connection, in binary mode, and the folder it is in."""

    def __init__(self, session: ftplib.FTP) -> None:
        self.session = session
        self._folder: str | None = None

    def change_to(self, folder: str) -> None:
        """CWD `folder`, unless the connection is there already: most uploads share one.
        A refusal is the server's reply (`ftplib.error_perm`)."""
        if self._folder == folder:
            return
        self._folder = None
        with lost_unless_refused(f"FTP CWD {folder}"):
            self.session.cwd(folder)
        self._folder = folder

    def names(self, folder: str) -> list[str]:
        """The names in `folder` (NLST: some servers answer with paths, others with names)."""
        with lost_unless_refused(f"FTP NLST {folder}"):
            return [entry.rsplit("/", 1)[-1] for entry in self.session.nlst(folder)]

    def is_folder(self, path: str) -> bool:
        """Whether the connection can change to `path`, as an upload there does."""
        try:
            self.change_to(path)
        except ftplib.error_perm:
            return False
        return True

    def close(self) -> None:
        """Close the sockets without a goodbye: a server that stopped answering holds up nothing."""
        self.session.close()


@dataclass(frozen=True, slots=True)
class FtpAccount:
    """Where the transport server is and whom to log in as."""

    hostname: str
    port: int
    user: str
    password: str = field(repr=False)
    timeout: float
    tls: bool = False
    ca_file: str = ""
    """With `tls`: CA certificates trusted besides the system's store."""

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    def __str__(self) -> str:
        scheme = "ftps (explicit)" if self.tls else "ftp"
        return f"{scheme} {self.address}, user={self.user!r}"

    def log_in(self) -> FtpConnection:
        """A new connection, logged in and in binary mode; `ServiceUnavailable` saying why not.

        The TLS context is made for each connection, so a CA file fixed in place is used
        from the next connection on.
        """
        session = (
            ftplib.FTP_TLS(context=self._tls_context(), timeout=self.timeout)
            if self.tls
            else ftplib.FTP(timeout=self.timeout)
        )
        try:
            session.connect(self.hostname, self.port)
            session.login(self.user, self.password)  # FTP_TLS: AUTH TLS first
            if isinstance(session, ftplib.FTP_TLS):
                session.prot_p()  # the data channel encrypted too
            with contextlib.suppress(ftplib.Error):  # paths in UTF-8 where the server asks
                session.sendcmd("OPTS UTF8 ON")
            # Binary once per connection, where ftplib's `storbinary` asks before every file.
            session.voidcmd("TYPE I")
        except FAILURES as error:
            session.close()
            raise ServiceUnavailable(self._login_failure(error), system=System.FTP) from error
        return FtpConnection(session)

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return client_context(self.ca_file)
        except OSError as error:
            raise ServiceUnavailable(
                f"MEDIAHAVEN_FTP_CA_FILE={self.ca_file!r} cannot be used for FTPS: "
                f"{error.strerror or error}",
                system=System.FTP,
            ) from error

    def _login_failure(self, error: BaseException) -> str:
        """Why the connection could not be opened; a certificate names the settings to fix."""
        failure = verification_failure(error)
        if failure is None:
            # Servers sometimes echo what they were sent; no reason quoted shows the password.
            said = Redactor([self.password]).redact(reply(error))
            how = " over FTPS" if self.tls else ""
            return f"cannot log in to FTP server {self.address}{how} as {self.user!r}: {said}"
        names = ("MEDIAHAVEN_FTP_TLS", "MEDIAHAVEN_FTP_CA_FILE")
        refused = unverified(f"FTP server {self.address}", names, self.ca_file, failure)
        return f"{refused}; events are retried, and go through once the CA is fixed"
