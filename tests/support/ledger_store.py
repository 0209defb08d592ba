"""What a ledger's store holds of an event, read from the store itself rather than through a
ledger: a test's look at what was written, which no consumer needs to ask."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import psycopg

from s3_events_handler.domain.model import LedgerEntry, Step

READ = "SELECT pid, step FROM s3_events_ledger WHERE identity = {}"


def recorded(store: Path | str, identity: str) -> LedgerEntry | None:
    """The event's entry in a SQLite file (a `Path`) or a PostgreSQL database (a DSN); None
    when it has none."""
    if isinstance(store, Path):
        with contextlib.closing(sqlite3.connect(store)) as db:
            row = db.execute(READ.format("?"), (identity,)).fetchone()
    else:
        with psycopg.connect(store) as pg:
            row = pg.execute(READ.format("%s"), (identity,)).fetchone()
    return None if row is None else LedgerEntry(identity, row[0], Step(row[1]))
