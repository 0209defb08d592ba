"""The ledger in PostgreSQL: for several consumers side by side sharing one memory."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from s3_events_handler.adapters.ledger_sql import SqlLedger
from s3_events_handler.adapters.ledger_statements import Dialect, Parameters
from s3_events_handler.adapters.postgres_pool import (
    ANSWER_MARGIN_SECONDS,
    AnswerDeadline,
    NoAnswer,
    connection_pool,
    connection_settings,
    settings_of,
)
from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS

POSTGRES = Dialect(
    placeholder=lambda name: f"%({name})s",
    now="now()",
    seconds="make_interval(secs => {})",
    greatest="GREATEST",
    held_identities="SELECT jsonb_array_elements_text({held}::jsonb)",
    time_type="TIMESTAMPTZ",
    # The database's collation may sort by language rules, where a prefix's matches need
    # not lie in one range; the ledger is asked this only for objects not archived.
    binary_order=' COLLATE "C"',
    schema_lock=("BEGIN", "SELECT pg_advisory_xact_lock(hashtext('s3_events_ledger'))"),
)


class PostgresLedger(SqlLedger):
    """Each statement commits on its own; concurrent claims of one event agree on one PID.

    Opening it connects, creates the table and prunes old entries once, so an unreachable
    database stops the start rather than the first event; the statements then run on a
    pool of up to `connections` (one per worker), so a slow statement holds up only its
    own worker. Each is bounded (`postgres_pool`): `timeout` to connect or to get a
    connection, `statement_timeout` on the server, and that plus a second for the answer
    to arrive. A connection found closed is replaced, without pruning, so a reconnect
    never forgets an event still being retried. The start's own statements have the
    connect timeout but no statement timeout: a first prune of a large table may take long.
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
        try:
            settings_of(dsn)
        except ValueError as error:
            raise ServiceUnavailable(f"ledger database: {error}", system=System.LEDGER) from None
        self._prepare(lambda: psycopg.connect(dsn, **connection_settings(timeout)), retention_days)
        self._pool = connection_pool(
            dsn, size=connections, connect_seconds=timeout, statement_seconds=statement_timeout
        )
        self._deadline = AnswerDeadline(statement_timeout + ANSWER_MARGIN_SECONDS)

    def close(self) -> None:
        super().close()
        self._pool.close()
        self._deadline.close()

    def _run(self, sql: str, parameters: Parameters) -> list[tuple[Any, ...]]:
        """One statement on a connection of the pool. Every commit waits for the server's
        disk (`synchronous_commit`, on by default).

        A connection found closed (the server restarted, or ended the session) is
        replaced, with the other idle ones, most likely closed too, and the statement is
        tried once more. One that got no answer is not: it has had its time.
        """
        for last_try in (False, True):
            try:
                db = self._pool.getconn()
            except PoolTimeout:
                raise PoolTimeout(f"no connection within {self._pool.timeout:g} s") from None
            try:
                with self._deadline.watching(db):
                    cursor = db.execute(sql, parameters)
                    return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                if last_try or not db.closed:
                    raise
                self._pool.drain()
            finally:
                self._pool.putconn(db)
        raise AssertionError("unreachable")  # pragma: no cover


def inspect_database(dsn: str, *, timeout: float = 10) -> str:
    """Whether the ledger database answers and has its table, learnt with one SELECT: opening
    the ledger creates the table and prunes it.

    Raises `ValueError` for a DSN that cannot be parsed, `ServiceUnavailable` when the
    database does not answer.
    """
    where = settings_of(dsn)
    name = f"{where.get('dbname') or 'the default database'} on {where.get('host') or 'localhost'}"
    try:
        with psycopg.connect(dsn, **connection_settings(timeout)) as db:
            row = db.execute("SELECT to_regclass('s3_events_ledger') IS NOT NULL").fetchone()
    except psycopg.Error as error:
        raise ServiceUnavailable(
            f"ledger database {name}: {one_line(str(error))}", system=System.LEDGER
        ) from None
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
