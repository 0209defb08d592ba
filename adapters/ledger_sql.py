"""What the SQLite and PostgreSQL ledgers share: the `Ledger` port over a handful of
statements, the tables made and pruned at start, a failure told as `ServiceUnavailable`,
and the heartbeat that keeps this consumer's claims alive."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from s3_events_handler.adapters.ledger_statements import Dialect, Parameters, Statements
from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import ClaimedElsewhere, ServiceUnavailable, System
from s3_events_handler.domain.model import (
    CLAIM_LEASE_SECONDS,
    EventKind,
    LedgerEntry,
    Step,
    identity_prefix,
)
from s3_events_handler.domain.ports import TransfersSent

log = logging.getLogger(__name__)


class SqlLedger(ConsumerLedger, TransfersSent, ABC):
    """The `Ledger` port; each database writes the statements in its own dialect.

    A claim is a lease row (holder, expiry) compared with the database's clock, so it
    works alike in SQLite and PostgreSQL, needs no connection or transaction held for
    the attempt, and outlives a lost connection (see docs/architecture.md). The claims
    this object holds are renewed by a heartbeat thread every third of the lease.
    """

    _failures: ClassVar[tuple[type[Exception], ...]]
    """What the database's driver raises, each told as `ServiceUnavailable`."""

    def __init__(
        self, dialect: Dialect, where: str, *, lease_seconds: float = CLAIM_LEASE_SECONDS
    ) -> None:
        self._dialect = dialect
        self._sql = Statements.of(dialect)
        self.where = where
        """The ledger as its failures name it."""
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        """Who holds a claim: unique to this object, and telling an operator which pod it is."""
        self.lease_seconds = lease_seconds
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._closing = threading.Event()

    def recall(self, identity: str) -> LedgerEntry | None:
        rows = self._query(self._sql.recall, {"identity": identity})
        return LedgerEntry(identity, rows[0][0], Step(rows[0][1])) if rows else None

    def transfer_requested(self, bucket: str, key: str) -> bool:
        # Every identity that begins with the prefix, and no other, sorts from the prefix up
        # to the prefix with its last character (a comma) raised by one: a range the
        # primary key's index answers.
        first = identity_prefix(EventKind.CREATED, bucket, key)
        past = first[:-1] + chr(ord(first[-1]) + 1)
        return bool(self._query(self._sql.transfer_requested, {"first": first, "past": past}))

    def claim(self, identity: str) -> LedgerEntry | None:
        rows = self._query(self._sql.claim, self._about(identity))
        pid, step, holder = rows[0][0], Step(rows[0][1]), rows[0][2]
        if step.finished:
            return LedgerEntry(identity, pid, step)
        if holder != self.owner:
            raise ClaimedElsewhere(f"the event is being handled by {holder}")
        with self._held_lock:
            self._held.add(identity)
            if self._heartbeat is None:  # a ledger that never claims needs none
                self._heartbeat = threading.Thread(
                    target=self._beat, name="ledger-heartbeat", daemon=True
                )
                self._heartbeat.start()
        if pid is None and step == Step.NOTHING_DONE:
            return None
        return LedgerEntry(identity, pid, step)

    def claim_pid(self, identity: str, pid: str) -> str:
        rows = self._held_query(self._sql.claim_pid, identity, pid=pid)
        return str(rows[0][0])

    def advance(self, identity: str, step: Step) -> None:
        self._held_query(self._sql.advance, identity, step=int(step))

    def release(self, identity: str, step: Step | None = None) -> None:
        with self._held_lock:
            self._held.discard(identity)  # first: a release that fails lets the lease lapse
        rows = self._query(
            self._sql.release, self._about(identity, step=int(step or Step.NOTHING_DONE))
        )
        if rows and rows[0][0] not in (None, self.owner):
            log.warning(
                "the claim on %s had passed to %s before it was released", identity, rows[0][0]
            )

    def begin_delivery(self, digest: str) -> int:
        rows = self._query(self._sql.begin_delivery, {"digest": digest})
        return int(rows[0][0]) - 1

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        statement = self._sql.end_delivery if handled else self._sql.take_back_delivery
        self._query(statement, {"digest": digest})

    def close(self) -> None:
        """Stop renewing claims. Those still held lapse with their lease: the attempts behind
        them may still be going on, so they are not let go of here."""
        self._closing.set()

    def _about(self, identity: str, **values: object) -> dict[str, object]:
        return {"identity": identity, "owner": self.owner, "lease": self.lease_seconds, **values}

    def _held_query(self, sql: str, identity: str, **values: object) -> list[tuple[Any, ...]]:
        """A statement that only the claim's holder may run; renews the lease."""
        rows = self._query(sql, self._about(identity, **values))
        if not rows:
            with self._held_lock:
                self._held.discard(identity)
            raise ClaimedElsewhere(
                "this consumer's claim lapsed and the event is being handled by another"
            )
        return rows

    def _beat(self) -> None:
        """Renew the lease of every claim this object holds, in one statement."""
        while not self._closing.wait(self.lease_seconds / 3):
            with self._held_lock:
                held = sorted(self._held)
            if not held:
                continue
            renewal = {"owner": self.owner, "lease": self.lease_seconds, "held": json.dumps(held)}
            try:
                self._query(self._sql.renew, renewal)
            except ServiceUnavailable as error:
                log.warning("claims not renewed, they lapse unless renewed in time: %s", error)

    def _prepare(self, connect: Callable[[], Any], retention_days: float) -> None:
        """Create the tables, give the table of events the claim's columns if it lacks them,
        and prune the entries older than `retention_days`, on a connection of its own.

        Only at start, so that a reconnect never forgets an event still being retried; the
        tables are made under a lock, so consumers starting together take turns.
        """
        dialect, age = self._dialect, {"age": retention_days * 86400}
        try:
            with contextlib.closing(connect()) as db:
                for statement in (*dialect.schema_lock, *dialect.tables()):
                    db.execute(statement)
                columns = db.execute("SELECT * FROM s3_events_ledger LIMIT 0").description
                present = {column[0] for column in columns}
                for column, kind in dialect.claim_columns().items():
                    if column not in present:
                        db.execute(f"ALTER TABLE s3_events_ledger ADD COLUMN {column} {kind}")
                db.execute("COMMIT")
                db.execute(self._sql.prune_deliveries, age)
                pruned = db.execute(self._sql.prune_events, age).rowcount
        except self._failures as error:
            raise ServiceUnavailable(
                f"{self.where} cannot be opened: {one_line(str(error))}", system=System.LEDGER
            ) from None
        log.info("%s: %d entries older than %s days pruned", self.where, pruned, retention_days)

    def _query(self, sql: str, parameters: Parameters) -> list[tuple[Any, ...]]:
        """The rows of one statement, committed by the time it returns; a failure is
        `ServiceUnavailable`."""
        try:
            return self._run(sql, parameters)
        except self._failures as error:
            raise ServiceUnavailable(
                f"{self.where}: {one_line(str(error))}", system=System.LEDGER
            ) from None

    @abstractmethod
    def _run(self, sql: str, parameters: Parameters) -> list[tuple[Any, ...]]:
        """The rows of one statement, committed by the time it returns. Whether the commit
        waits for the disk is each adapter's rule."""


__all__ = ["SqlLedger"]
