"""The `Ledger` port over SQL, shared by SQLite and PostgreSQL: the statements, written once
with what differs between the two databases in a `Dialect`; the tables, made and pruned at
start; and the heartbeat that renews this consumer's claims. Why a claim is a lease row is
in docs/architecture.md ("The claim")."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

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

log = logging.getLogger(__name__)

Parameters = Mapping[str, object]
Rows = list[tuple[Any, ...]]


def unavailable(where: str, error: Exception) -> ServiceUnavailable:
    """A database's failure as the ledger tells it: one line, naming the ledger."""
    return ServiceUnavailable(f"{where}: {one_line(str(error))}", system=System.LEDGER)


class Dialect(NamedTuple):
    """What differs between SQLite and PostgreSQL, as SQL text."""

    parameter: str
    """A named parameter, `\\1` where its name goes (a replacement of `re.sub`)."""
    now: str
    """The database's clock."""
    seconds: str
    """A span of `{}` seconds, to add to `now` or take from it."""
    greatest: str
    held: str
    """A subquery of the identities in the JSON list `:held`."""
    time_type: str
    schema_lock: tuple[str, ...]
    """Begins the transaction that creates the tables, with a lock that makes consumers
    starting together take turns."""
    binary_order: str = ""
    """What makes text compare byte by byte, as the ranges of identities need."""


class Statements(NamedTuple):
    """Every statement the ledger runs, each returning rows that say what happened."""

    claim: str
    """Taken unless finished or held live by another; the row says which."""
    claim_pid: str
    """The first PID stays; only the holder stores one."""
    advance: str
    release: str
    """The step is recorded whoever holds the claim (it was done); the claim let go of only
    if it is still this consumer's."""
    renew: str
    begin_delivery: str
    end_delivery: str
    take_back_delivery: str
    transfer_requested: str
    prune_events: str
    prune_deliveries: str

    @classmethod
    def of(cls, sql: Dialect) -> Statements:
        """Written with `:name` parameters, then rewritten in the dialect's own."""
        lease = f"{sql.now} + {sql.seconds.format(':lease')}"
        older = f"updated_at < {sql.now} - {sql.seconds.format(':age')}"
        takeable = (
            f"s3_events_ledger.step < {int(Step.TRANSFER_REQUESTED)} "
            "AND (s3_events_ledger.claimed_by IS NULL "
            "OR s3_events_ledger.claimed_by = excluded.claimed_by "
            f"OR s3_events_ledger.claimed_until <= {sql.now})"
        )
        held = "identity = :identity AND claimed_by = :owner"
        renewed = f"claimed_until = {lease}, updated_at = {sql.now}"
        later_step = f"step = {sql.greatest}(step, :step)"
        identity = f"identity{sql.binary_order}"
        statements = cls(
            claim=(
                "INSERT INTO s3_events_ledger "
                "(identity, pid, step, updated_at, claimed_by, claimed_until) "
                f"VALUES (:identity, NULL, 0, {sql.now}, :owner, {lease}) "
                "ON CONFLICT (identity) DO UPDATE SET "
                f"claimed_by = CASE WHEN {takeable} "
                "THEN excluded.claimed_by ELSE s3_events_ledger.claimed_by END, "
                f"claimed_until = CASE WHEN {takeable} "
                "THEN excluded.claimed_until ELSE s3_events_ledger.claimed_until END, "
                f"updated_at = {sql.now} "
                "RETURNING pid, step, claimed_by"
            ),
            claim_pid=(
                "UPDATE s3_events_ledger SET pid = COALESCE(pid, :pid), "
                f"step = {sql.greatest}(step, {int(Step.PID_CLAIMED)}), {renewed} "
                f"WHERE {held} RETURNING pid"
            ),
            advance=(
                f"UPDATE s3_events_ledger SET {later_step}, {renewed} WHERE {held} RETURNING step"
            ),
            release=(
                f"UPDATE s3_events_ledger SET {later_step}, "
                "claimed_until = CASE WHEN claimed_by = :owner THEN NULL ELSE claimed_until END, "
                "claimed_by = CASE WHEN claimed_by = :owner THEN NULL ELSE claimed_by END, "
                f"updated_at = {sql.now} WHERE identity = :identity RETURNING claimed_by"
            ),
            renew=(
                f"UPDATE s3_events_ledger SET {renewed} WHERE claimed_by = :owner "
                f"AND identity IN ({sql.held}) RETURNING identity"
            ),
            begin_delivery=(
                "INSERT INTO s3_events_deliveries (digest, unfinished, updated_at) "
                f"VALUES (:digest, 1, {sql.now}) ON CONFLICT (digest) DO UPDATE SET "
                f"unfinished = s3_events_deliveries.unfinished + 1, updated_at = {sql.now} "
                "RETURNING unfinished"
            ),
            end_delivery="DELETE FROM s3_events_deliveries WHERE digest = :digest RETURNING digest",
            take_back_delivery=(
                "UPDATE s3_events_deliveries SET unfinished = unfinished - 1, "
                f"updated_at = {sql.now} WHERE digest = :digest AND unfinished > 0 "
                "RETURNING digest"
            ),
            transfer_requested=(
                f"SELECT 1 FROM s3_events_ledger WHERE {identity} >= :first "
                f"AND {identity} < :past AND step = {int(Step.TRANSFER_REQUESTED)} LIMIT 1"
            ),
            prune_events=f"DELETE FROM s3_events_ledger WHERE {older}",
            prune_deliveries=f"DELETE FROM s3_events_deliveries WHERE {older}",
        )
        return cls(*(re.sub(r":(\w+)", sql.parameter, s) for s in statements))


class SqlLedger(ConsumerLedger, ABC):
    """The `Ledger` port; each database runs the statements its own way (`_run`).

    A claim is a lease row (holder, expiry) compared with the database's clock; the claims
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

    def transfer_requested(self, bucket: str, key: str) -> bool:
        # Every identity that begins with the prefix, and no other, sorts from the prefix up
        # to the prefix with its last character (a comma) raised by one: a range the
        # primary key's index answers.
        first = identity_prefix(EventKind.CREATED, bucket, key)
        past = first[:-1] + chr(ord(first[-1]) + 1)
        return bool(self._query(self._sql.transfer_requested, {"first": first, "past": past}))

    def claim(self, identity: str) -> LedgerEntry | None:
        [(pid, step, holder)] = self._query(self._sql.claim, self._about(identity))
        entry = LedgerEntry(identity, pid, Step(step))
        if entry.step.finished:
            return entry
        if holder != self.owner:
            raise ClaimedElsewhere(f"the event is being handled by {holder}")
        with self._held_lock:
            self._held.add(identity)
            if self._heartbeat is None:  # a ledger that never claims needs none
                self._heartbeat = threading.Thread(
                    target=self._beat, name="ledger-heartbeat", daemon=True
                )
                self._heartbeat.start()
        return None if pid is None and entry.step == Step.NOTHING_DONE else entry

    def claim_pid(self, identity: str, pid: str) -> str:
        return str(self._held_query(self._sql.claim_pid, identity, pid=pid))

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
        [(unfinished,)] = self._query(self._sql.begin_delivery, {"digest": digest})
        return int(unfinished) - 1

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        statement = self._sql.end_delivery if handled else self._sql.take_back_delivery
        self._query(statement, {"digest": digest})

    def close(self) -> None:
        """Stop renewing claims. Those still held lapse with their lease: the attempts behind
        them may still be going on, so they are not let go of here."""
        self._closing.set()

    def _about(self, identity: str, **values: object) -> dict[str, object]:
        return {"identity": identity, "owner": self.owner, "lease": self.lease_seconds, **values}

    def _held_query(self, sql: str, identity: str, **values: object) -> object:
        """A statement only the claim's holder may run, which renews the lease; its one value."""
        rows = self._query(sql, self._about(identity, **values))
        if not rows:
            with self._held_lock:
                self._held.discard(identity)
            raise ClaimedElsewhere(
                "this consumer's claim lapsed and the event is being handled by another"
            )
        return rows[0][0]

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
        """Create the tables (the claim's columns added to a table made before there were
        claims) and prune the entries older than `retention_days`, on a connection of its own.

        Only at start, so that a reconnect never forgets an event still being retried.
        """
        time, age = self._dialect.time_type, {"age": retention_days * 86400}
        failures: tuple[type[Exception], ...] = (*self._failures, ValueError)  # a path, a DSN
        try:
            with contextlib.closing(connect()) as db:
                for statement in (
                    *self._dialect.schema_lock,
                    "CREATE TABLE IF NOT EXISTS s3_events_ledger (identity TEXT PRIMARY KEY, "
                    f"pid TEXT, step INTEGER NOT NULL, updated_at {time} NOT NULL)",
                    "CREATE TABLE IF NOT EXISTS s3_events_deliveries (digest TEXT PRIMARY KEY, "
                    f"unfinished INTEGER NOT NULL, updated_at {time} NOT NULL)",
                ):
                    db.execute(statement)
                columns = db.execute("SELECT * FROM s3_events_ledger LIMIT 0").description
                present = {column[0] for column in columns}
                for column, kind in {"claimed_by": "TEXT", "claimed_until": time}.items():
                    if column not in present:
                        db.execute(f"ALTER TABLE s3_events_ledger ADD COLUMN {column} {kind}")
                db.execute("COMMIT")
                db.execute(self._sql.prune_deliveries, age)
                pruned = db.execute(self._sql.prune_events, age).rowcount
        except failures as error:
            raise unavailable(f"{self.where} cannot be opened", error) from None
        log.info("%s: %d entries older than %s days pruned", self.where, pruned, retention_days)

    def _query(self, sql: str, parameters: Parameters) -> Rows:
        try:
            return self._run(sql, parameters)
        except self._failures as error:
            raise unavailable(self.where, error) from None

    @abstractmethod
    def _run(self, sql: str, parameters: Parameters) -> Rows:
        """The rows of one statement, committed by the time it returns. Whether the commit
        waits for the disk is each adapter's rule."""
