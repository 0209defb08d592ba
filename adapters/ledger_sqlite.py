"""The ledger in a SQLite file: the default for one consumer with a volume of its own."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.model import LedgerEntry, Step

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS s3_events_ledger (
    identity   TEXT PRIMARY KEY,
    pid        TEXT,
    step       INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SqliteLedger:
    """Each write is committed (WAL, synchronous FULL) before the call returns.

    One connection, shared by the consumer's worker threads one at a time.
    """

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

    def recall(self, identity: str) -> LedgerEntry | None:
        rows = self._query("SELECT pid, step FROM s3_events_ledger WHERE identity = ?", (identity,))
        return LedgerEntry(identity, rows[0][0], Step(rows[0][1])) if rows else None

    def claim_pid(self, identity: str, pid: str) -> str:
        rows = self._query(
            "INSERT INTO s3_events_ledger (identity, pid, step, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (identity) DO UPDATE SET "
            "pid = COALESCE(s3_events_ledger.pid, excluded.pid), "
            "step = MAX(s3_events_ledger.step, excluded.step), "
            "updated_at = excluded.updated_at "
            "RETURNING pid",
            (identity, pid, int(Step.PID_CLAIMED), time.time()),
        )
        return str(rows[0][0])

    def advance(self, identity: str, step: Step) -> None:
        self._query(
            "INSERT INTO s3_events_ledger (identity, pid, step, updated_at) VALUES (?, NULL, ?, ?) "
            "ON CONFLICT (identity) DO UPDATE SET "
            "step = MAX(s3_events_ledger.step, excluded.step), "
            "updated_at = excluded.updated_at",
            (identity, int(step), time.time()),
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
