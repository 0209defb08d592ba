"""Connections to PostgreSQL for the consumer's workers, none of which can hold a worker long.

What can keep a worker waiting on the database, and what bounds it:

- a server that does not take the connection: libpq's `connect_timeout`;
- no connection to be had from the pool (the database is down): the pool's wait, as long;
- a statement the server runs for long (waiting for a lock): `statement_timeout`, after
  which the server cancels it and the connection stays usable;
- an idle connection whose other end is gone (a host restarted, a firewall that forgot
  it): TCP keepalives, so the kernel closes it rather than the next statement waiting
  on it.
"""

from __future__ import annotations

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


def connection_settings(connect_seconds: float) -> dict[str, Any]:
    """How every connection is opened: each statement commits on its own, keepalives on."""
    # libpq counts connect_timeout in whole seconds, and takes 2 at least.
    return {"autocommit": True, "connect_timeout": max(2, round(connect_seconds)), **KEEPALIVES}


def connection_pool(
    dsn: str, *, size: int, connect_seconds: float, statement_seconds: float
) -> ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
    """Up to `size` connections (one per worker), opened as the workers need them.

    A statement waits `connect_seconds` at most for a connection. A connection lost is
    replaced in the background for as long; past that the next statement that needs one
    opens it, so once the database is back a connection is made at once rather than after
    a backoff grown during the outage.
    """
    timeout_ms = round(statement_seconds * 1000)

    def limit_statements(db: psycopg.Connection[tuple[Any, ...]]) -> None:
        db.execute(f"SET statement_timeout = {timeout_ms}")

    return ConnectionPool(
        dsn,
        kwargs=connection_settings(connect_seconds),
        min_size=1,
        max_size=max(1, size),
        configure=limit_statements,
        timeout=connect_seconds,
        reconnect_timeout=connect_seconds,
        name="ledger",
        open=True,
    )


__all__ = ["connection_pool", "connection_settings"]
