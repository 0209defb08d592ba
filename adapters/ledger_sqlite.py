"""The ledger in a SQLite file: the default for one consumer with a volume of its own."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from s3_events_handler.adapters.ledger_sql import SqlLedger
from s3_events_handler.adapters.ledger_statements import Dialect, Parameters, Statements
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS

SQLITE = Dialect(
    placeholder=lambda name: f":{name}",
    # In seconds since the epoch. (unixepoch('subsec') says it shorter, but needs SQLite 3.42.)
    now="((julianday('now') - 2440587.5) * 86400.0)",
    seconds="{}",
    greatest="MAX",
    held_identities="SELECT value FROM json_each({held})",
    time_type="REAL",
    # Takes the file's write lock at once rather than at the first write.
    schema_lock=("BEGIN IMMEDIATE",),
)
_STATEMENTS = Statements.of(SQLITE)
# The writes that wait for the disk: the steps a new attempt must not do again (SqliteLedger).
_SYNCED = frozenset({_STATEMENTS.claim_pid, _STATEMENTS.advance})

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
    """Each write is committed before the call returns (WAL); the PID and the relation are
    also on disk by then.

    Every commit survives a crash of the process. Storing the PID and the relation
    (`claim_pid`, `advance`) also waits for the disk (synchronous FULL), so they survive a
    power cut: lost, a new attempt would mint a second PID or post a second relation. The
    other writes do not wait, as losing them in a power cut does nothing twice: a claim
    lost only lapses; the step `release` records is an event's last, which a new attempt
    repeats as it was done (the same sidecar, the transfer request with the same PID and
    `message_id`, deletes finding the records gone); the crash count must outlive the
    process, not the machine. They reach the disk with the next write that waits.
    """

    _failures = (sqlite3.Error,)

    def __init__(
        self,
        path: Path | str,
        *,
        retention_days: float = 30,
        lease_seconds: float = CLAIM_LEASE_SECONDS,
    ) -> None:
        super().__init__(SQLITE, f"ledger {path}", lease_seconds=lease_seconds)
        self._path = str(path)
        self._own = threading.local()  # each thread's connection
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._prepare(self._connect, retention_days)

    def close(self) -> None:
        """Close every thread's connection; a thread using the ledger afterwards gets an error."""
        super().close()
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode whose commits do not wait for the disk unless asked to;
        one busy with another's write waits for it up to `sqlite3.connect`'s 5 s."""
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A page cache of 512 KiB each rather than 2 MiB: there is a connection per
        # worker, the entries read are the recent ones, and the kernel caches the file.
        db.execute("PRAGMA cache_size=-512")
        return db

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first statement.

        One per thread rather than one behind a lock: a thread holding a lock while it
        waits for the disk, and then for the interpreter, would keep every other worker
        waiting too. SQLite (WAL) lets them read at once and takes their writes in turn.
        """
        db: sqlite3.Connection | None = getattr(self._own, "db", None)
        if db is None:
            db = self._own.db = self._connect()
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _run(self, sql: str, parameters: Parameters) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; a failing disk is worth a retry later."""
        db = self._connection()
        if sql not in _SYNCED:
            return db.execute(sql, parameters).fetchall()
        # The commit waits for the disk, then the connection's other commits go without
        # waiting again: two statements without I/O.
        db.execute("PRAGMA synchronous=FULL")
        try:
            return db.execute(sql, parameters).fetchall()
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
