"""Connections to PostgreSQL for the consumer's workers, none of which can hold a worker long.

What can keep a worker waiting on the database, and what bounds it:

- a server that does not take the connection: libpq's `connect_timeout`;
- no connection to be had from the pool (the database is down): the pool's wait, as long;
- a statement the server runs for long (waiting for a lock): `statement_timeout`, after
  which the server cancels it and the connection stays usable;
- an idle connection whose other end is gone (a host restarted, a firewall that forgot
  it): TCP keepalives, so the kernel closes it rather than the next statement waiting
  on it;
- a statement whose answer never comes (a half-open link, a proxy that stopped
  forwarding: the server never had it, so its own timeout cannot help):
  `AnswerDeadline`, which cuts the connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

# An idle connection is probed after 30 s, then every 10 s; 3 probes unanswered and the
# kernel closes it: a dead peer is known within a minute.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# The server cancels a statement past its statement_timeout and says so; the deadline on
# the answer leaves it that much longer before cutting the connection.
ANSWER_MARGIN_SECONDS = 1.0


def connection_settings(connect_seconds: float) -> dict[str, Any]:
    """How every connection is opened: each statement commits on its own, keepalives on."""
    # libpq counts connect_timeout in whole seconds, and takes 2 at least.
    return {"autocommit": True, "connect_timeout": max(2, round(connect_seconds)), **KEEPALIVES}


def settings_of(dsn: str) -> dict[str, Any]:
    """The DSN's settings by name. `ValueError` if it cannot be parsed, without libpq's text,
    which quotes the DSN around the fault, and so may quote the password."""
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ValueError("the DSN cannot be parsed") from None


def connection_pool(
    dsn: str, *, size: int, connect_seconds: float, statement_seconds: float
) -> ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
    """Up to `size` connections (one per worker), opened as the workers need them.

    A statement waits `connect_seconds` at most for a connection. A connection lost is
    replaced in the background for as long; past that the next statement that needs one
    opens it, so once the database is back a connection is made at once rather than after
    a backoff grown during the outage.
    """
    # In the connection's startup packet rather than a SET after it: one round trip
    # fewer, and none after the connect timeout that could wait for ever. Added to the
    # DSN's own options, which this setting would otherwise replace.
    own_options = settings_of(dsn).get("options") or ""
    statement_timeout = f"-c statement_timeout={round(statement_seconds * 1000)}"
    return ConnectionPool(
        dsn,
        kwargs=connection_settings(connect_seconds)
        | {"options": f"{own_options} {statement_timeout}".strip()},
        min_size=1,
        max_size=max(1, size),
        timeout=connect_seconds,
        reconnect_timeout=connect_seconds,
        name="ledger",
        open=True,
    )


class NoAnswer(Exception):
    """The statement's answer did not come within the deadline; its connection was cut."""


@dataclass(eq=False)
class _Watched:
    socket: int
    deadline: float
    cut: bool = False


class AnswerDeadline:
    """Cuts the connection of a statement still waiting for its answer after `seconds`.

    psycopg waits for an answer as long as it takes; one thread watches every statement
    in progress and shuts down the socket of one past its deadline, which wakes its
    worker at once with a closed connection.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._changed = threading.Condition()
        self._watched: set[_Watched] = set()
        self._closed = False
        self._watcher = threading.Thread(target=self._watch, name="ledger-deadline", daemon=True)
        self._watcher.start()

    @contextlib.contextmanager
    def watching(self, db: psycopg.Connection[Any]) -> Iterator[None]:
        """The statements run inside are cut off at the deadline: `NoAnswer`, `db` closed."""
        watched = _Watched(db.pgconn.socket, time.monotonic() + self.seconds)
        with self._changed:
            self._watched.add(watched)
        try:
            yield
        except psycopg.Error:
            if watched.cut:
                raise NoAnswer(f"no answer within {self.seconds:g} s") from None
            raise
        finally:
            with self._changed:
                self._watched.discard(watched)
            if watched.cut:  # even if the answer came just in time: the socket is shut
                db.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._watcher.join(timeout=5)

    def _watch(self) -> None:
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                for late in [w for w in self._watched if w.deadline <= now]:
                    late.cut = True
                    self._watched.discard(late)
                    _shut_down(late.socket)
                # Never longer than `seconds`: a statement that starts meanwhile has its
                # deadline later than that, so it needs no wake-up, which would cost a
                # switch of threads per statement.
                earliest = min((w.deadline for w in self._watched), default=now + self.seconds)
                self._changed.wait(earliest - now)


def _shut_down(fileno: int) -> None:
    """Shut a connection's socket down under libpq: its next wait sees the connection closed.

    On a duplicate of the descriptor, so the descriptor itself stays libpq's to close.
    """
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fileno)) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)


__all__ = ["AnswerDeadline", "NoAnswer", "connection_pool", "connection_settings", "settings_of"]
