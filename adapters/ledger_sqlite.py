"""The ledger in a SQLite file: the default for one consumer with a volume of its own."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from s3_events_handler.adapters.ledger_sql import Dialect, Parameters, Rows, SqlLedger
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS

SQLITE = Dialect(
    parameter=r":\1",
    # In seconds since the epoch. (unixepoch('subsec') says it shorter, but needs SQLite 3.42.)
    now="((julianday('now') - 2440587.5) * 86400.0)",
    seconds="{}",
    greatest="MAX",
    held="SELECT value FROM json_each(:held)",
    time_type="REAL",
    # Takes the file's write lock at once rather than at the first write.
    schema_lock=("BEGIN IMMEDIATE",),
)

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
    """Each write is committed before the call returns (WAL), so it survives a crash of the
    process. Storing the PID and the relation (`claim_pid`, `advance`) also waits for the
    disk (synchronous FULL): lost in a power cut, a new attempt would mint a second PID or
    post a second relation. Losing the other writes does nothing twice (docs/reliability.md).
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
        self._synced = {self._sql.claim_pid, self._sql.advance}
        # One connection per thread rather than one behind a lock: a thread holding a lock
        # while it waits for the disk would keep every other worker waiting too. SQLite
        # (WAL) lets them read at once and takes their writes in turn.
        self._own = threading.local()
        self._connections: list[sqlite3.Connection] = []  # to close; appending is atomic
        self._prepare(self._connect, retention_days)

    def close(self) -> None:
        """Close every thread's connection; a thread using the ledger afterwards gets an error."""
        super().close()
        connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        """In WAL mode, its commits not waiting for the disk unless asked to; busy with
        another's write, it waits up to `sqlite3.connect`'s 5 s."""
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # 512 KiB of page cache rather than 2 MiB: a connection per worker reads the recent
        # entries, and the kernel caches the file.
        db.execute("PRAGMA cache_size=-512")
        return db

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first statement."""
        db: sqlite3.Connection | None = getattr(self._own, "db", None)
        if db is None:
            db = self._own.db = self._connect()
            self._connections.append(db)
        return db

    def _run(self, sql: str, parameters: Parameters) -> Rows:
        db = self._connection()
        if sql not in self._synced:
            return db.execute(sql, parameters).fetchall()
        db.execute("PRAGMA synchronous=FULL")
        try:
            return db.execute(sql, parameters).fetchall()
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
