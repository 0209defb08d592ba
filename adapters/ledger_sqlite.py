"""The ledger in a SQLite file: the default for one consumer with a volume of its own."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from s3_events_handler.adapters.ledger_sql import SqlLedger, ledger_table
from s3_events_handler.domain.errors import ServiceUnavailable

log = logging.getLogger(__name__)

SCHEMA = ledger_table(step_type="INTEGER", updated_at_type="REAL")
# Now, in seconds since the epoch like time.time(), which the pruning at start compares
# with. (unixepoch('subsec') says it shorter, but needs SQLite 3.42.)
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

# The first bytes of every SQLite database file (an empty file is one too, still empty).
SQLITE_HEADER = b"SQLite format 3\x00"


def inspect_location(path: Path | str) -> str:
    """What opening a ledger at `path` would meet, learnt without opening it (opening creates
    the file and prunes it). Raises `ValueError` saying why opening it would fail."""
    location = Path(path)
    folder = location.absolute().parent
    if not folder.is_dir():
        raise ValueError(f"the folder {folder} does not exist")
    # Besides the file, SQLite writes its journal (-wal, -shm) beside it.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"the folder {folder} is not writable by this user")
    if not location.exists():
        return f"{location} does not exist yet; {folder} is writable, so `consume` can create it"
    if not location.is_file():
        raise ValueError(f"{location} is not a file")
    if not os.access(location, os.R_OK | os.W_OK):
        raise ValueError(f"{location} cannot be read and written by this user")
    with location.open("rb") as database:
        header = database.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise ValueError(f"{location} is not a SQLite database")
    return f"{location} is a SQLite database, readable and writable"


class SqliteLedger(SqlLedger):
    """Each write is committed (WAL, synchronous FULL) before the call returns.

    One connection, shared by the consumer's worker threads one at a time.
    """

    RECALL = "SELECT pid, step FROM s3_events_ledger WHERE identity = ?"
    CLAIM_PID = (
        "INSERT INTO s3_events_ledger (identity, pid, step, updated_at) "
        f"VALUES (?, ?, ?, {_NOW}) "
        "ON CONFLICT (identity) DO UPDATE SET "
        "pid = COALESCE(s3_events_ledger.pid, excluded.pid), "
        "step = MAX(s3_events_ledger.step, excluded.step), "
        "updated_at = excluded.updated_at "
        "RETURNING pid"
    )
    ADVANCE = (
        "INSERT INTO s3_events_ledger (identity, pid, step, updated_at) "
        f"VALUES (?, NULL, ?, {_NOW}) "
        "ON CONFLICT (identity) DO UPDATE SET "
        "step = MAX(s3_events_ledger.step, excluded.step), "
        "updated_at = excluded.updated_at"
    )

    def __init__(self, path: Path | str, *, retention_days: float = 30) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(SCHEMA)
            cutoff = time.time() - retention_days * 86400
            pruned = self._db.execute(
                "DELETE FROM s3_events_ledger WHERE updated_at < ?", (cutoff,)
            ).rowcount
        except sqlite3.Error as error:
            raise ServiceUnavailable(f"ledger {self._path} cannot be opened: {error}") from error
        log.info(
            "ledger at %s (%d entries older than %s days pruned)", path, pruned, retention_days
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; a failing disk is worth a retry later."""
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                raise ServiceUnavailable(f"ledger {self._path}: {error}") from error
