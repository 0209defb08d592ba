"""The ledger in PostgreSQL: for several consumers side by side sharing one memory."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from s3_events_handler.adapters.ledger_sql import Dialect, Parameters, SqlLedger, Statements
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS

log = logging.getLogger(__name__)

POSTGRES = Dialect(
    placeholder=lambda name: f"%({name})s",
    now="now()",
    lease="make_interval(secs => {lease})",
    greatest="GREATEST",
    held_identities="SELECT jsonb_array_elements_text({held}::jsonb)",
    step_type="SMALLINT",
    time_type="TIMESTAMPTZ",
    updated_at_default=" DEFAULT now()",
)
_STATEMENTS = Statements.of(POSTGRES)
# A table made before there were claims gets their columns.
ADD_CLAIM_COLUMNS = (
    "ALTER TABLE s3_events_ledger "
    "ADD COLUMN IF NOT EXISTS claimed_by TEXT, "
    "ADD COLUMN IF NOT EXISTS claimed_until TIMESTAMPTZ"
)


class PostgresLedger(SqlLedger):
    """Each statement commits on its own; concurrent claims of one event agree on one PID.

    Opening it connects, so an unreachable database stops the start rather than the first
    event, and prunes old entries once; a connection that died is opened again once, without
    pruning, so a reconnect never forgets an event still being retried.
    """

    def __init__(
        self,
        dsn: str,
        *,
        retention_days: float = 30,
        timeout: float = 10,
        lease_seconds: float = CLAIM_LEASE_SECONDS,
    ) -> None:
        super().__init__(_STATEMENTS, lease_seconds=lease_seconds)
        self._dsn = dsn
        self._timeout = timeout
        self._lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            # libpq's parse error quotes the text around the fault, which may be the password.
            raise ServiceUnavailable("ledger database: the DSN cannot be parsed") from None
        try:
            self._db = self._connect()
            pruned = self._db.execute(
                "DELETE FROM s3_events_ledger WHERE updated_at < now() - make_interval(secs => %s)",
                (retention_days * 86400,),
            ).rowcount
            self._db.execute(
                "DELETE FROM s3_events_deliveries "
                "WHERE updated_at < now() - make_interval(secs => %s)",
                (retention_days * 86400,),
            )
        except psycopg.Error as error:
            self._discard()
            raise ServiceUnavailable(f"ledger database: {_one_line(error)}") from None
        log.info(
            "ledger in PostgreSQL; %d entries older than %s days pruned", pruned, retention_days
        )

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> psycopg.Connection[Any]:
        db = psycopg.connect(self._dsn, autocommit=True, connect_timeout=int(self._timeout))
        with db.transaction():
            # Consumers starting together would race on CREATE TABLE IF NOT EXISTS.
            db.execute("SELECT pg_advisory_xact_lock(hashtext('s3_events_ledger'))")
            events, deliveries = POSTGRES.tables()
            db.execute(events)
            db.execute(ADD_CLAIM_COLUMNS)
            db.execute(deliveries)
        return db

    def _query(
        self, sql: str, parameters: Parameters, *, durable: bool = True
    ) -> list[tuple[Any, ...]]:
        """One statement; a dead connection is reopened once, anything else waits for a retry.

        Every commit waits for the disk: `durable` makes no difference here."""
        with self._lock:
            for last_try in (False, True):
                try:
                    if self._db is None or self._db.closed:
                        self._db = self._connect()
                    cursor = self._db.execute(sql, parameters)
                    return cursor.fetchall() if cursor.description else []
                except psycopg.OperationalError as error:
                    self._discard()
                    if last_try:
                        raise ServiceUnavailable(f"ledger database: {_one_line(error)}") from None
                except psycopg.Error as error:
                    raise ServiceUnavailable(f"ledger database: {_one_line(error)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except psycopg.Error:
                log.debug("closing a dead ledger connection failed")
            self._db = None


def inspect_database(dsn: str, *, timeout: float = 10) -> str:
    """Whether the ledger database answers and has its table, learnt with one SELECT: opening
    the ledger creates the table and prunes it.

    Raises `ValueError` for a DSN that cannot be parsed, `ServiceUnavailable` when the
    database does not answer.
    """
    try:
        where = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ValueError("the DSN cannot be parsed") from None  # its text may hold the password
    name = f"{where.get('dbname') or 'the default database'} on {where.get('host') or 'localhost'}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=int(timeout)) as db:
            row = db.execute("SELECT to_regclass('s3_events_ledger') IS NOT NULL").fetchone()
    except psycopg.Error as error:
        raise ServiceUnavailable(f"ledger database {name}: {_one_line(error)}") from None
    if row is not None and row[0]:
        return f"{name} answers and has the table s3_events_ledger"
    return f"{name} answers; the table s3_events_ledger is not there yet, `consume` creates it"


def password_in(dsn: str) -> str | None:
    """The password a DSN carries, so the logs can mask it."""
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(password) if password else None


def _one_line(error: BaseException) -> str:
    """psycopg's messages span lines; the DSN (and its password) is never part of them."""
    return " ".join(str(error).split())
