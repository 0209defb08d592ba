"""The ledger in PostgreSQL: for several consumers side by side sharing one memory.

Every wait on the database is bounded, so none holds a worker long: to connect, to get a
connection, the statement on the server, and the answer (docs/reliability.md, "A lost
ledger connection")."""

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
from psycopg_pool import ConnectionPool, PoolTimeout

from s3_events_handler.adapters.ledger_sql import Dialect, Parameters, Rows, SqlLedger, unavailable
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS

POSTGRES = Dialect(
    parameter=r"%(\1)s",
    now="now()",
    seconds="make_interval(secs => {})",
    greatest="GREATEST",
    held="SELECT jsonb_array_elements_text(CAST(:held AS jsonb))",
    time_type="TIMESTAMPTZ",
    schema_lock=("BEGIN", "SELECT pg_advisory_xact_lock(hashtext('s3_events_ledger'))"),
    # The database's collation may sort by language rules, where a prefix's matches need
    # not lie in one range; the ledger is asked this only for objects not archived.
    binary_order=' COLLATE "C"',
)


class NoAnswer(Exception):
    """The statement's answer did not come within the deadline; its connection was cut."""


class PostgresLedger(SqlLedger):
    """Each statement commits on its own, waiting for the server's disk (`synchronous_commit`,
    on by default), on a pool of up to `connections` (one per worker): a slow statement
    holds up its own worker only.

    Opening it connects, so an unreachable database stops the start rather than the first
    event; the start's statements have no statement timeout, as a first prune of a large
    table may take long.
    """

    _failures = (psycopg.Error, NoAnswer)

    def __init__(
        self,
        dsn: str,
        *,
        retention_days: float = 30,
        timeout: float = 10,
        statement_timeout: float = 5,
        connections: int = 16,
        lease_seconds: float = CLAIM_LEASE_SECONDS,
    ) -> None:
        super().__init__(POSTGRES, "ledger database", lease_seconds=lease_seconds)
        self._prepare(
            lambda: psycopg.connect(dsn, **connection_settings(dsn, timeout)), retention_days
        )
        # A connection lost is replaced in the background for no longer than the connect
        # timeout; past that the next statement opens one, so once the database is back a
        # connection is made at once rather than after a backoff grown during the outage.
        self._pool = ConnectionPool(
            dsn,
            kwargs=connection_settings(dsn, timeout, statement_timeout),
            min_size=1,
            max_size=max(1, connections),
            timeout=timeout,
            reconnect_timeout=timeout,
            name="ledger",
            open=True,
        )
        # The server cancels a statement past its statement_timeout and says so; the deadline
        # on the answer leaves it a second longer before cutting the connection.
        self._deadline = AnswerDeadline(statement_timeout + 1)

    def close(self) -> None:
        super().close()
        self._pool.close()
        self._deadline.close()

    def _run(self, sql: str, parameters: Parameters) -> Rows:
        """A connection found closed (the server restarted, or ended the session) is
        replaced, with the other idle ones, most likely closed too, and the statement tried
        once more. One that got no answer is not: it has had its time."""
        for last_try in (False, True):
            try:
                db = self._pool.getconn()
            except PoolTimeout:
                raise PoolTimeout(f"no connection within {self._pool.timeout:g} s") from None
            try:
                with self._deadline.watching(db):
                    return db.execute(sql, parameters).fetchall()
            except psycopg.OperationalError:
                if last_try or not db.closed:
                    raise
                self._pool.drain()
            finally:
                self._pool.putconn(db)
        raise AssertionError("unreachable")  # pragma: no cover


def settings_of(dsn: str) -> dict[str, Any]:
    """The DSN's settings by name. `ValueError` if it cannot be parsed, without libpq's text,
    which quotes the DSN around the fault, and so may quote the password."""
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ValueError("the DSN cannot be parsed") from None


def connection_settings(
    dsn: str, connect_seconds: float, statement_seconds: float | None = None
) -> dict[str, Any]:
    """How every connection is opened: each statement commits on its own; keepalives probe an
    idle connection after 30 s, then every 10 s, and 3 unanswered close it; the statement
    timeout, when given, goes in the startup packet (no round trip after the connect
    timeout that could wait for ever), added to the DSN's own options."""
    options = settings_of(dsn).get("options") or ""
    if statement_seconds is not None:
        options = f"{options} -c statement_timeout={round(statement_seconds * 1000)}".strip()
    return {
        "autocommit": True,
        "connect_timeout": max(2, round(connect_seconds)),  # whole seconds, 2 at least
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        **({"options": options} if options else {}),
    }


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
    On a duplicate of the descriptor, which stays libpq's to close."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fileno)) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)


def inspect_database(dsn: str, *, timeout: float = 10) -> str:
    """Whether the ledger database answers and has its table, learnt with one SELECT: opening
    the ledger creates the table and prunes it.

    Raises `ValueError` for a DSN that cannot be parsed, `ServiceUnavailable` when the
    database does not answer.
    """
    where = settings_of(dsn)
    name = f"{where.get('dbname') or 'the default database'} on {where.get('host') or 'localhost'}"
    try:
        with psycopg.connect(dsn, **connection_settings(dsn, timeout)) as db:
            row = db.execute("SELECT to_regclass('s3_events_ledger') IS NOT NULL").fetchone()
    except psycopg.Error as error:
        raise unavailable(f"ledger database {name}", error) from None
    if row is not None and row[0]:
        return f"{name} answers and has the table s3_events_ledger"
    return f"{name} answers; the table s3_events_ledger is not there yet, `consume` creates it"


def password_in(dsn: str) -> str | None:
    """The password a DSN carries, so the logs can mask it."""
    try:
        password = settings_of(dsn).get("password")
    except ValueError:
        return None
    return str(password) if password else None
