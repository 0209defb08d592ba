"""What the SQLite and PostgreSQL ledgers share: the `Ledger` port over a handful of
statements, and the heartbeat that keeps this consumer's claims alive."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.domain.errors import ClaimedElsewhere, ServiceUnavailable
from s3_events_handler.domain.model import (
    CLAIM_LEASE_SECONDS,
    REPEATABLE_STEPS,
    LedgerEntry,
    Step,
)

log = logging.getLogger(__name__)

Parameters = Mapping[str, object]

# The claim's two columns, added to a table made before there were claims.
CLAIM_COLUMNS = ("claimed_by", "claimed_until")


def ledger_table(*, step_type: str, time_type: str, updated_at_default: str = "") -> str:
    """The ledger's one table; the databases differ only in column types."""
    return (
        "CREATE TABLE IF NOT EXISTS s3_events_ledger ("
        "identity TEXT PRIMARY KEY, "
        "pid TEXT, "
        f"step {step_type} NOT NULL, "
        f"updated_at {time_type} NOT NULL{updated_at_default}, "
        "claimed_by TEXT, "
        f"claimed_until {time_type})"
    )


def claim_statements(
    *,
    placeholder: Callable[[str], str],
    now: str,
    lease: str,
    greatest: str,
    held_identities: str,
) -> dict[str, str]:
    """The claim's statements in one dialect.

    `placeholder` names a parameter (`:name` or `%(name)s`); `now` is the database's
    clock, `lease` the lease as added to it (with `{lease}` where the seconds go),
    `greatest` the two-argument maximum, `held_identities` a subquery giving the
    identities in the JSON list parameter `{held}`. Every statement returns rows, so a
    caller learns from them what happened.
    """
    takeable = (
        f"s3_events_ledger.step < {int(Step.TRANSFER_REQUESTED)} "
        "AND (s3_events_ledger.claimed_by IS NULL "
        "OR s3_events_ledger.claimed_by = excluded.claimed_by "
        f"OR s3_events_ledger.claimed_until <= {now})"
    )
    held = "identity = {identity} AND claimed_by = {owner}"
    renewed = f"claimed_until = {now} + {lease}, updated_at = {now}"
    statements = {
        # Taken unless finished or held live by another; the row says which.
        "CLAIM": (
            "INSERT INTO s3_events_ledger "
            "(identity, pid, step, updated_at, claimed_by, claimed_until) "
            f"VALUES ({{identity}}, NULL, 0, {now}, {{owner}}, {now} + {lease}) "
            "ON CONFLICT (identity) DO UPDATE SET "
            f"claimed_by = CASE WHEN {takeable} "
            "THEN excluded.claimed_by ELSE s3_events_ledger.claimed_by END, "
            f"claimed_until = CASE WHEN {takeable} "
            "THEN excluded.claimed_until ELSE s3_events_ledger.claimed_until END, "
            f"updated_at = {now} "
            "RETURNING pid, step, claimed_by"
        ),
        # The first PID stays; only the holder stores one.
        "CLAIM_PID": (
            "UPDATE s3_events_ledger SET pid = COALESCE(pid, {pid}), "
            f"step = {greatest}(step, {int(Step.PID_CLAIMED)}), {renewed} "
            f"WHERE {held} RETURNING pid"
        ),
        "ADVANCE": (
            f"UPDATE s3_events_ledger SET step = {greatest}(step, {{step}}), {renewed} "
            f"WHERE {held} RETURNING step"
        ),
        # The step is recorded whoever holds the claim: it was done. The claim is let go
        # only if it is still this consumer's.
        "RELEASE": (
            f"UPDATE s3_events_ledger SET step = {greatest}(step, {{step}}), "
            "claimed_until = CASE WHEN claimed_by = {owner} THEN NULL ELSE claimed_until END, "
            "claimed_by = CASE WHEN claimed_by = {owner} THEN NULL ELSE claimed_by END, "
            f"updated_at = {now} "
            "WHERE identity = {identity} RETURNING claimed_by"
        ),
        "RENEW": (
            f"UPDATE s3_events_ledger SET {renewed} "
            f"WHERE claimed_by = {{owner}} AND identity IN ({held_identities}) RETURNING identity"
        ),
    }
    names = ("identity", "owner", "pid", "step", "lease", "held")
    return {
        name: sql.format(**{name: placeholder(name) for name in names})
        for name, sql in statements.items()
    }


def deliveries_table(*, time_type: str) -> str:
    """The messages in hand, by their body's digest, and how many of their deliveries began
    and never ended (`UnfinishedDeliveries`)."""
    return (
        "CREATE TABLE IF NOT EXISTS s3_events_deliveries ("
        "digest TEXT PRIMARY KEY, "
        "unfinished INTEGER NOT NULL, "
        f"updated_at {time_type} NOT NULL)"
    )


def delivery_statements(*, placeholder: Callable[[str], str], now: str) -> dict[str, str]:
    """`BEGIN_DELIVERY` counts a delivery in and returns the count with it; `END_DELIVERY`
    forgets the message; `TAKE_BACK_DELIVERY` counts one delivery back out."""
    digest = placeholder("digest")
    return {
        "BEGIN_DELIVERY": (
            "INSERT INTO s3_events_deliveries (digest, unfinished, updated_at) "
            f"VALUES ({digest}, 1, {now}) ON CONFLICT (digest) DO UPDATE SET "
            f"unfinished = s3_events_deliveries.unfinished + 1, updated_at = {now} "
            "RETURNING unfinished"
        ),
        "END_DELIVERY": f"DELETE FROM s3_events_deliveries WHERE digest = {digest}",
        "TAKE_BACK_DELIVERY": (
            f"UPDATE s3_events_deliveries SET unfinished = unfinished - 1, updated_at = {now} "
            f"WHERE digest = {digest} AND unfinished > 0"
        ),
    }


def consumer_name() -> str:
    """Who holds a claim: unique to this process, and telling an operator which pod it is."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class SqlLedger(ConsumerLedger, ABC):
    """The `Ledger` port; each database writes the statements in its own dialect.

    `RECALL` takes (identity) and gives (pid, step); the others are `claim_statements`.
    A claim is a lease row (holder, expiry) compared with the database's clock, so it
    works alike in SQLite and PostgreSQL, needs no connection or transaction held for
    the attempt, and outlives a lost connection (see docs/architecture.md). The claims
    this object holds are renewed by a heartbeat thread every third of the lease.
    """

    RECALL: ClassVar[str]
    CLAIM: ClassVar[str]
    CLAIM_PID: ClassVar[str]
    ADVANCE: ClassVar[str]
    RELEASE: ClassVar[str]
    RENEW: ClassVar[str]
    BEGIN_DELIVERY: ClassVar[str]
    END_DELIVERY: ClassVar[str]
    TAKE_BACK_DELIVERY: ClassVar[str]

    def __init__(self, *, lease_seconds: float = CLAIM_LEASE_SECONDS) -> None:
        self.owner = consumer_name()
        self.lease_seconds = lease_seconds
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._closing = threading.Event()

    def recall(self, identity: str) -> LedgerEntry | None:
        rows = self._query(self.RECALL, {"identity": identity})
        return LedgerEntry(identity, rows[0][0], Step(rows[0][1])) if rows else None

    def claim(self, identity: str) -> LedgerEntry | None:
        # Losing a claim in a power cut is harmless: every consumer on this ledger is
        # started again, and a new attempt resumes from the steps recorded.
        rows = self._query(self.CLAIM, self._about(identity), durable=False)
        pid, step, holder = rows[0][0], Step(rows[0][1]), rows[0][2]
        if step.finished:
            return LedgerEntry(identity, pid, step)
        if holder != self.owner:
            raise ClaimedElsewhere(f"the event is being handled by {holder}")
        with self._held_lock:
            self._held.add(identity)
        self._keep_claims_alive()
        if pid is None and step == Step.RECEIVED:
            return None
        return LedgerEntry(identity, pid, step)

    def claim_pid(self, identity: str, pid: str) -> str:
        rows = self._held_query(self.CLAIM_PID, identity, pid=pid)
        return str(rows[0][0])

    def advance(self, identity: str, step: Step) -> None:
        self._held_query(self.ADVANCE, identity, step=int(step))

    def release(self, identity: str, step: Step | None = None) -> None:
        with self._held_lock:
            self._held.discard(identity)  # first: a release that fails lets the lease lapse
        rows = self._query(
            self.RELEASE,
            self._about(identity, step=int(step or Step.RECEIVED)),
            durable=step is not None and step not in REPEATABLE_STEPS,
        )
        if rows and rows[0][0] not in (None, self.owner):
            log.warning(
                "the claim on %s had passed to %s before it was released", identity, rows[0][0]
            )

    def begin_delivery(self, digest: str) -> int:
        # Not waiting for the disk: the count must outlive the process, not a power cut.
        rows = self._query(self.BEGIN_DELIVERY, {"digest": digest}, durable=False)
        return int(rows[0][0]) - 1

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        statement = self.END_DELIVERY if handled else self.TAKE_BACK_DELIVERY
        self._query(statement, {"digest": digest}, durable=False)

    def close(self) -> None:
        """Stop renewing claims. Those still held lapse with their lease: the attempts behind
        them may still be going on, so they are not let go of here."""
        self._closing.set()

    def renew_claims(self) -> int:
        """Renew the lease of every claim this consumer holds; how many were renewed."""
        with self._held_lock:
            held = sorted(self._held)
        if not held:
            return 0
        rows = self._query(
            self.RENEW,
            {"owner": self.owner, "lease": self.lease_seconds, "held": json.dumps(held)},
            durable=False,
        )
        return len(rows)

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

    def _keep_claims_alive(self) -> None:
        """Start the heartbeat with the first claim: a ledger that never claims needs none."""
        if self._heartbeat is not None or self._closing.is_set():
            return
        with self._held_lock:
            if self._heartbeat is not None:
                return
            self._heartbeat = threading.Thread(
                target=self._beat, name="ledger-heartbeat", daemon=True
            )
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._closing.wait(self.lease_seconds / 3):
            try:
                self.renew_claims()
            except ServiceUnavailable as error:
                log.warning("claims not renewed, they lapse unless renewed in time: %s", error)

    @abstractmethod
    def _query(
        self, sql: str, parameters: Parameters, *, durable: bool = True
    ) -> list[tuple[Any, ...]]:
        """The rows of one statement; a failure is `ServiceUnavailable`.

        `durable=False`: a write whose loss in a power cut is harmless (the database may
        commit it without waiting for the disk).
        """


__all__ = [
    "CLAIM_COLUMNS",
    "SqlLedger",
    "claim_statements",
    "consumer_name",
    "deliveries_table",
    "delivery_statements",
    "ledger_table",
]
