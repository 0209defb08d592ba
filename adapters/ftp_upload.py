"""Putting a sidecar in place on the transport server (contract §4.4), and reading what
ftplib raises on the way.

Two writers of one sidecar (the same event, delivered twice) may interleave: each deletes
the final file to make room only while its own complete temporary file is there to take
its place, so neither leaves the final name empty for the other.
"""

from __future__ import annotations

import contextlib
import ftplib
import logging
import secrets
import ssl
from collections.abc import Callable, Iterator

from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.model import Sidecar

logger = logging.getLogger(__name__)

NOT_LOGGED_IN = 530  # a server that forgot the session: log in again
_CLOSING = 421  # the server is closing the control connection
_UNAVAILABLE = 550  # no such file (SIZE, RNFR, DELE), or a refused rename (RNTO)
# What an ftplib call raises: a reply it did not expect, or the connection failing.
FAILURES = (ftplib.Error, OSError, EOFError)
# Random bytes in a temporary name, as hex: unique enough among the few writers of one
# sidecar, and short enough for the name to stay within 255 bytes (see MAX_SEGMENT_BYTES).
_TOKEN_BYTES = 4
# Pauses between the tries of one rename: a race between writers settles within a try or
# two; a refusal that lasts is the server's answer (the retry queue does the long waits).
RENAME_PAUSES = (0.05, 0.1, 0.2)


def reply_code(error: ftplib.Error) -> int:
    """The reply code of an ftplib error (0 when the reply has none)."""
    text = str(error)[:3]
    return int(text) if text.isdigit() else 0


class ConnectionLost(Exception):
    """The control connection failed, or the server forgot the session: worth one reconnect."""


def reply(error: BaseException) -> str:
    """The server's reply, or the socket error with its type: one line for a reason."""
    text = str(error)
    if isinstance(error, ftplib.Error) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def temporary_name(sidecar: Sidecar) -> str:
    """`.{name}.xml.{token}.part`: hidden, not `.xml` (MediaHaven ignores it), this upload's own."""
    return f".{sidecar.name}.xml.{secrets.token_hex(_TOKEN_BYTES)}.part"


def put_in_place(
    session: ftplib.FTP,
    temporary: str,
    final: str,
    data: bytes,
    *,
    sleep: Callable[[float], None],
) -> None:
    """STOR `data` as `temporary` in the session's folder, then rename it to `final`.

    Raises what ftplib raised (the caller tells a refusal from a lost connection), or
    `ServiceUnavailable` when the temporary file vanished and no sidecar took its place.
    """
    try:
        _store(session, temporary, data)
        _rename_into_place(session, temporary, final, len(data), sleep)
    except (ftplib.error_perm, ftplib.error_temp) as error:
        if reply_code(error) != NOT_LOGGED_IN:
            # The server answered, so the connection can still remove what this upload
            # wrote: a later upload writes under a new name and would not replace it.
            _remove(session, temporary)
        raise


def _store(session: ftplib.FTP, name: str, data: bytes) -> None:
    """STOR `data` as `name` (the connection is in binary mode already)."""
    with session.transfercmd(f"STOR {name}") as connection:
        connection.sendall(data)
        if isinstance(connection, ssl.SSLSocket):
            connection.unwrap()  # a TLS data channel is closed with a TLS goodbye
    session.voidresp()


def _rename_into_place(
    session: ftplib.FTP, temporary: str, final: str, size: int, sleep: Callable[[float], None]
) -> None:
    """Rename `temporary` (`size` bytes) to `final`; a refusal is looked into and tried
    again a few times, as another writer may rename its copy between any two steps."""
    for pause in (*RENAME_PAUSES, None):
        try:
            session.rename(temporary, final)
            return
        except (ftplib.error_perm, ftplib.error_temp) as error:
            if reply_code(error) in (NOT_LOGGED_IN, _CLOSING):
                raise  # the session is gone: the caller reconnects
            refusal = error
        # Out of tries, nothing is deleted: no try would follow to fill the gap.
        if pause is None or _size(session, temporary) != size:
            break  # or our copy is gone (renamed after all, or removed): `final` tells
        if isinstance(refusal, ftplib.error_perm):
            _make_room(session, final)
        logger.warning(
            "renaming %s to %s was refused (%s); trying again", temporary, final, refusal
        )
        sleep(pause)
    # After the tries: a complete `final` is the same sidecar, placed by another writer.
    if _size(session, final) == size:
        _remove(session, temporary)
        logger.warning("sidecar %s was put in place by another writer meanwhile", final)
        return
    if _size(session, temporary) != size:
        raise ServiceUnavailable(
            f"the temporary file {temporary} vanished before it became {final}",
            system=System.FTP,
        )
    raise refusal


def _make_room(session: ftplib.FTP, final: str) -> None:
    """Delete `final` when the server may have refused to rename over it; only while this
    upload's complete temporary file is there, so the next try fills the gap."""
    if _size(session, final) is None:
        return  # the refusal was about something else: a race, or the server's rule
    try:
        session.delete(final)
    except ftplib.error_perm as error:
        if reply_code(error) != _UNAVAILABLE:
            raise
        return  # another writer deleted it first; the next try renames into the gap
    logger.warning("server refused to rename over %s; deleted it first", final)


def _size(session: ftplib.FTP, name: str) -> int | None:
    """The size of file `name`; None when there is none (SIZE answers 550)."""
    try:
        return session.size(name)
    except ftplib.error_perm as error:
        if reply_code(error) == _UNAVAILABLE:
            return None
        raise


def _remove(session: ftplib.FTP, temporary: str) -> None:
    """Best effort: a refused upload should not leave its `.part` file behind."""
    with contextlib.suppress(*FAILURES):
        session.delete(temporary)
