"""The transport server over FTP (ftputil): sidecars land whole, under their final name.

One control connection is kept open and reused between uploads; it is opened
on the first upload and re-opened once when it turns out to have died.

Two consumers may write the same sidecar at the same instant (the same event,
delivered twice). Each upload writes under a temporary name of its own, and
deletes the final file to make room only while its own complete temporary file
is there to take its place, so no writer leaves the final name empty for another.

With `tls` set it is explicit FTPS (contract §7): `AUTH TLS` before logging in, then
`PROT P`, so the password and the sidecars only cross the network encrypted. A
certificate that cannot be verified is a transient failure naming the settings: the
events wait in the retry queues until an operator fixes the CA, then go through.
"""

from __future__ import annotations

import contextlib
import ftplib
import logging
import secrets
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.tls import client_context, describe_failure, verification_failure
from s3_events_handler.application.reasons import Redactor
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System
from s3_events_handler.domain.model import Sidecar
from s3_events_handler.domain.ports import TransportServer

with warnings.catch_warnings():
    # ftputil warns on import about its default path encoding; we always pass one.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ftputil
    import ftputil.error
    import ftputil.session

logger = logging.getLogger(__name__)

DEFAULT_PORT = 21
_SCHEME = "ftp://"
_NOT_LOGGED_IN = 530  # a server that forgot the session: log in again
_CLOSING = 421  # the server is closing the control connection
_UNAVAILABLE = 550  # no such file (SIZE, RNFR, DELE), or a refused rename (RNTO)
# Random bytes in a temporary name, as hex: unique enough among the few writers of one
# sidecar, and short enough for the name to stay within 255 bytes (see MAX_SEGMENT_BYTES).
_TOKEN_BYTES = 4
# Pauses between the tries of one rename: a race between writers settles within a try or
# two; a refusal that lasts is the server's answer (the retry queue does the long waits).
RENAME_PAUSES = (0.05, 0.1, 0.2)


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


class _ConnectionLost(Exception):
    """The control connection failed mid-upload: worth one reconnect."""


def _code(error: ftplib.Error) -> int:
    """The reply code of an ftplib error (0 when the reply has none)."""
    text = str(error)[:3]
    return int(text) if text.isdigit() else 0


def _temporary_name(sidecar: Sidecar) -> str:
    """`.{name}.xml.{token}.part`: hidden, not `.xml` (MediaHaven ignores it), this upload's own."""
    return f".{sidecar.name}.xml.{secrets.token_hex(_TOKEN_BYTES)}.part"


def _reply(error: BaseException) -> str:
    """The server's reply (or the socket error) without ftputil's debugging suffix."""
    if isinstance(error, ftputil.error.FTPError):
        if error.strerror:
            return str(error.strerror)
        if error.__cause__ is not None:
            return _reply(error.__cause__)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _timed_ftp(timeout: float, context: ssl.SSLContext | None = None) -> type[ftplib.FTP]:
    """An ftplib class bounding every socket operation (connect, commands, data) by `timeout`;
    with a `context`, FTP_TLS verifying the server with it (ftplib's own default does not)."""

    class TimedFTP(ftplib.FTP):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("timeout", timeout)
            super().__init__(*args, **kwargs)

        # ftputil drops a session that failed to connect or log in: close its socket now.
        def connect(
            self,
            host: str = "",
            port: int = 0,
            timeout: float = -999,
            source_address: tuple[str, int] | None = None,
        ) -> str:
            try:
                return super().connect(host, port, timeout, source_address)
            except BaseException:
                self.close()
                raise

        # `rest`: FTP_TLS's `secure`, for the subclass below.
        def login(self, user: str = "", passwd: str = "", acct: str = "", *rest: Any) -> str:
            try:
                return super().login(user, passwd, acct, *rest)
            except BaseException:
                self.close()
                raise

    if context is None:
        return TimedFTP

    class TimedFTPS(TimedFTP, ftplib.FTP_TLS):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("context", context)
            super().__init__(*args, **kwargs)

    return TimedFTPS


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
        self._hostname, self._port = parse_ftp_host(host)
        self._user = user
        self._password = password
        # Servers sometimes echo what they were sent; no reply quoted in a message shows it.
        self._scrub = Redactor([password]).redact
        self._timeout = timeout
        self._tls = tls
        self._ca_file = ca_file
        self._host: Any = None  # ftputil.FTPHost once connected
        self._session: ftplib.FTP | None = None
        self._folder: str | None = None  # the connection's working directory, once changed
        self._binary = False  # the connection's transfer type is binary (TYPE I)
        self._lock = threading.Lock()
        self._sleep = sleep
        self.connections_opened = 0

    def __repr__(self) -> str:
        scheme = "ftps (explicit)" if self._tls else "ftp"
        return f"FtpTransportServer({scheme} {self._hostname}:{self._port}, user={self._user!r})"

    def upload(self, sidecar: Sidecar) -> None:
        """Write `.{name}.xml.{token}.part`, then rename it: MediaHaven only sees whole sidecars.

        The reconnect writes under the same temporary name, so it replaces what the
        dead connection may have left.
        """
        data = sidecar_xml.render(sidecar)
        temporary = _temporary_name(sidecar)
        with self._lock:
            reused = self._host is not None
            try:
                self._place(sidecar, temporary, data)
            except _ConnectionLost as lost:
                self._discard()
                if not reused:
                    raise ServiceUnavailable(
                        self._scrub(str(lost)), system=System.FTP
                    ) from lost.__cause__
                logger.warning(
                    "FTP connection to %s:%d was lost (%s); reconnecting once",
                    self._hostname,
                    self._port,
                    self._scrub(str(lost)),
                )
                try:
                    self._place(sidecar, temporary, data)
                except _ConnectionLost as again:
                    self._discard()
                    raise ServiceUnavailable(
                        self._scrub(str(again)), system=System.FTP
                    ) from again.__cause__

    def find_folders(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Where each (CP name, folder) destination is on the server; None where it is not.

        Reads only (LIST), for a check before anything is uploaded. The destination table
        lists CP names lower-cased and the server's folders carry the MAM label's own case,
        so the CP name matches in any case, the folder exactly. Raises `ServiceUnavailable`
        when the server cannot be logged in to or listed.
        """
        with self._lock:
            host, _session = self._connection()
            try:
                top = host.listdir("/")
                found: dict[tuple[str, str], str | None] = {}
                for cp_name, folder in wanted:
                    paths = (f"/{name}/{folder}" for name in top if name.lower() == cp_name.lower())
                    found[(cp_name, folder)] = next(filter(host.path.isdir, paths), None)
            except (ftputil.error.FTPError, OSError, EOFError) as error:
                self._discard()
                raise ServiceUnavailable(
                    f"cannot list the folders on FTP server {self._hostname}:{self._port}: "
                    f"{self._scrub(_reply(error))}",
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
        folder = f"/{sidecar.cp_name}/{sidecar.folder}"
        final = sidecar.filename
        host, session = self._connection()
        self._change_to(host, folder)
        try:
            with ftputil.error.ftplib_error_to_ftp_os_error:
                self._store(session, temporary, data)
                self._rename_into_place(session, temporary, final, len(data))
        except ftputil.error.PermanentError as error:
            if error.errno == _NOT_LOGGED_IN:
                raise _ConnectionLost(f"FTP session expired: {_reply(error)}") from error
            self._remove_temporary(session, temporary)
            raise Rejected(
                f"transport server refused {folder}/{final}: {self._scrub(_reply(error))}",
                system=System.FTP,
            ) from error
        except ftputil.error.TemporaryError as error:
            # The server answered, so the connection can still remove what this upload
            # wrote: a later upload writes under a new name and would not replace it.
            self._remove_temporary(session, temporary)
            raise _ConnectionLost(
                f"FTP upload of {folder}/{final} failed: {_reply(error)}"
            ) from error
        except (ftputil.error.FTPOSError, OSError, EOFError) as error:
            raise _ConnectionLost(
                f"FTP upload of {folder}/{final} failed: {_reply(error)}"
            ) from error
        logger.debug("uploaded sidecar %s/%s (%d bytes)", folder, final, len(data))

    def _store(self, session: ftplib.FTP, name: str, data: bytes) -> None:
        """STOR `data` as `name`, in binary mode: set once per connection, where ftplib's
        `storbinary` asks for it before every file (a round trip each time)."""
        if not self._binary:
            session.voidcmd("TYPE I")
            self._binary = True
        with session.transfercmd(f"STOR {name}") as connection:
            connection.sendall(data)
            if isinstance(connection, ssl.SSLSocket):
                connection.unwrap()  # a TLS data channel is closed with a TLS goodbye
        session.voidresp()

    def _change_to(self, host: Any, folder: str) -> None:
        """CWD `folder`, unless the connection is there already: most uploads share one."""
        if self._folder == folder:
            return
        try:
            host.chdir(folder)
        except ftputil.error.PermanentError as error:
            if error.errno == _NOT_LOGGED_IN:
                raise _ConnectionLost(f"FTP session expired: {_reply(error)}") from error
            raise Rejected(
                f"no folder {folder} on the transport server, or no access: "
                f"{self._scrub(_reply(error))}",
                system=System.FTP,
            ) from error
        except (ftputil.error.FTPOSError, OSError, EOFError) as error:
            raise _ConnectionLost(f"FTP CWD {folder} failed: {_reply(error)}") from error
        self._folder = folder

    def _rename_into_place(
        self, session: ftplib.FTP, temporary: str, final: str, size: int
    ) -> None:
        """Rename `temporary` (`size` bytes) to `final`, however other writers interleave.

        Another writer of the same sidecar may rename its own copy (the same bytes)
        between any two of these steps, so a refusal is looked into and tried again a
        few times. Raises the last refusal when it lasts and the sidecar is not there.
        """
        for pause in (*RENAME_PAUSES, None):
            try:
                session.rename(temporary, final)
                return
            except (ftplib.error_perm, ftplib.error_temp) as error:
                if _code(error) in (_NOT_LOGGED_IN, _CLOSING):
                    raise  # the session is gone: the caller reconnects
                refusal = error
            # Out of tries, nothing is deleted: no try would follow to fill the gap.
            if pause is None or self._size(session, temporary) != size:
                break  # or our copy is gone (renamed after all, or removed): `final` tells
            if isinstance(refusal, ftplib.error_perm):
                self._make_room(session, final)
            logger.warning(
                "renaming %s to %s was refused (%s); trying again",
                temporary,
                final,
                self._scrub(_reply(refusal)),
            )
            self._sleep(pause)
        self._take_the_sidecar_in_place(session, temporary, final, size, refusal)

    def _make_room(self, session: ftplib.FTP, final: str) -> None:
        """Delete `final` when the server may have refused to rename over it.

        Only called while this upload's complete temporary file is there, so whatever
        is deleted is replaced by the next try, whoever else is writing.
        """
        if self._size(session, final) is None:
            return  # the refusal was about something else: a race, or the server's rule
        try:
            session.delete(final)
        except ftplib.error_perm as error:
            if _code(error) != _UNAVAILABLE:
                raise
            return  # another writer deleted it first; the next try renames into the gap
        logger.warning("server refused to rename over %s; deleted it first", final)

    def _take_the_sidecar_in_place(
        self,
        session: ftplib.FTP,
        temporary: str,
        final: str,
        size: int,
        refusal: ftplib.Error,
    ) -> None:
        """After the tries: a complete `final` is the same sidecar, placed by another writer."""
        if self._size(session, final) == size:
            self._remove_temporary(session, temporary)
            logger.warning("sidecar %s was put in place by another writer meanwhile", final)
            return
        if self._size(session, temporary) != size:
            raise ServiceUnavailable(
                f"the temporary file {temporary} vanished before it became {final}",
                system=System.FTP,
            )
        raise refusal

    @staticmethod
    def _size(session: ftplib.FTP, name: str) -> int | None:
        """The size of file `name`; None when there is none (SIZE answers 550)."""
        try:
            return session.size(name)
        except ftplib.error_perm as error:
            if _code(error) == _UNAVAILABLE:
                return None
            raise

    @staticmethod
    def _remove_temporary(session: ftplib.FTP, temporary: str) -> None:
        """Best effort: a refused upload should not leave its `.part` file behind."""
        with contextlib.suppress(ftplib.Error, OSError, EOFError):
            session.delete(temporary)

    def _connection(self) -> tuple[Any, ftplib.FTP]:
        if self._host is None or self._session is None:
            self._open()
        assert self._session is not None
        return self._host, self._session

    def _session_class(self) -> Callable[..., ftplib.FTP]:
        """Made at each connection: with TLS, the CA file is read again, so one fixed in place
        is used from the next connection on."""
        context = None
        if self._tls:
            try:
                context = client_context(self._ca_file)
            except OSError as error:
                raise ServiceUnavailable(
                    f"MEDIAHAVEN_FTP_CA_FILE={self._ca_file!r} cannot be used for FTPS: "
                    f"{error.strerror or error}",
                    system=System.FTP,
                ) from error
        session_class: Callable[..., ftplib.FTP] = ftputil.session.session_factory(
            base_class=_timed_ftp(self._timeout, context),
            port=self._port,
            use_passive_mode=True,
            encrypt_data_channel=self._tls,  # PROT P after the login: the data channel too
            encoding="UTF-8",
        )
        return session_class

    def _open(self) -> None:
        session_class = self._session_class()

        def capture_session(*args: Any) -> ftplib.FTP:
            # Uploads STOR on this control connection rather than in an ftputil child
            # session, so one login serves every upload.
            session = session_class(*args)
            self._session = session
            return session

        try:
            self._host = ftputil.FTPHost(
                self._hostname, self._user, self._password, session_factory=capture_session
            )
        except (ftputil.error.FTPError, OSError, EOFError) as error:
            self._discard()
            raise ServiceUnavailable(self._login_failure(error), system=System.FTP) from error
        self.connections_opened += 1
        logger.info(
            "logged in to FTP server %s:%d as %s%s",
            self._hostname,
            self._port,
            self._user,
            " over FTPS" if self._tls else "",
        )

    def _login_failure(self, error: BaseException) -> str:
        """Why the connection could not be opened; a certificate names the settings to fix."""
        failure = verification_failure(error)
        if failure is None:
            how = " over FTPS" if self._tls else ""
            return (
                f"cannot log in to FTP server {self._hostname}:{self._port}{how} as "
                f"{self._user!r}: {self._scrub(_reply(error))}"
            )
        ca_file = (
            f"MEDIAHAVEN_FTP_CA_FILE={self._ca_file!r}"
            if self._ca_file
            else "no MEDIAHAVEN_FTP_CA_FILE, the system's CA store only"
        )
        return (
            f"the certificate of FTP server {self._hostname}:{self._port} cannot be verified "
            f"(MEDIAHAVEN_FTP_TLS=true, {ca_file}): {describe_failure(failure)}; "
            "events are retried, and go through once the CA is fixed"
        )

    def _discard(self) -> None:
        host, session = self._host, self._session
        self._host = self._session = None
        self._folder = None
        self._binary = False
        try:
            if host is not None:
                host.close()
            elif session is not None:
                session.close()
        except (ftputil.error.FTPError, OSError, EOFError) as error:
            logger.debug("closing the FTP connection failed: %s", _reply(error))
