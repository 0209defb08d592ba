"""The ledger's statements and tables, written once for SQLite and PostgreSQL: a `Dialect`
says what differs between the two, `Statements.of` writes them in it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from s3_events_handler.domain.model import Step

Parameters = Mapping[str, object]
# The parameters the statements take, by name.
_NAMES = ("identity", "owner", "lease", "pid", "step", "held", "digest", "first", "past", "age")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the two databases, as SQL text."""

    placeholder: Callable[[str], str]
    """A named parameter: `:name` or `%(name)s`."""
    now: str
    """The database's clock."""
    seconds: str
    """A span of time to add to `now` or take from it, `{}` where its seconds go."""
    greatest: str
    """The two-argument maximum."""
    held_identities: str
    """A subquery of the identities in the JSON list parameter `{held}`."""
    time_type: str
    schema_lock: tuple[str, ...]
    """Begins the transaction that creates the tables, with a lock that makes consumers
    starting together take turns."""
    binary_order: str = ""
    """What makes text compare byte by byte, as the ranges of identities need."""

    def tables(self) -> tuple[str, str]:
        """The ledger's table of events, its claim's columns apart (`claim_columns`), and its
        table of messages in hand."""
        events = (
            "CREATE TABLE IF NOT EXISTS s3_events_ledger ("
            "identity TEXT PRIMARY KEY, "
            "pid TEXT, "
            "step INTEGER NOT NULL, "
            f"updated_at {self.time_type} NOT NULL)"
        )
        deliveries = (
            "CREATE TABLE IF NOT EXISTS s3_events_deliveries ("
            "digest TEXT PRIMARY KEY, "
            "unfinished INTEGER NOT NULL, "
            f"updated_at {self.time_type} NOT NULL)"
        )
        return events, deliveries

    def claim_columns(self) -> dict[str, str]:
        """The claim's columns and their types, added to the table of events when it lacks
        them: a new table, or one made before there were claims."""
        return {"claimed_by": "TEXT", "claimed_until": self.time_type}


class Statements(NamedTuple):
    """Every statement the ledger runs; each returns rows, so a caller learns from them what
    happened. Parameters by name: identity, owner, lease, pid, step, held, digest."""

    recall: str
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
    """Counts a delivery of a message in; gives the count with it."""
    end_delivery: str
    take_back_delivery: str
    """Counts one delivery back out."""
    transfer_requested: str
    """A row of an ingest that got its transfer request sent, among the identities from
    `{first}` up to but not including `{past}`."""
    prune_events: str
    """Entries not touched for `{age}` seconds go."""
    prune_deliveries: str

    @classmethod
    def of(cls, dialect: Dialect) -> Statements:
        now, greatest = dialect.now, dialect.greatest
        lease = f"{now} + {dialect.seconds.format('{lease}')}"
        older = f"updated_at < {now} - {dialect.seconds.format('{age}')}"
        takeable = (
            f"s3_events_ledger.step < {int(Step.TRANSFER_REQUESTED)} "
            "AND (s3_events_ledger.claimed_by IS NULL "
            "OR s3_events_ledger.claimed_by = excluded.claimed_by "
            f"OR s3_events_ledger.claimed_until <= {now})"
        )
        held = "identity = {identity} AND claimed_by = {owner}"
        renewed = f"claimed_until = {lease}, updated_at = {now}"
        templates = cls(
            recall="SELECT pid, step FROM s3_events_ledger WHERE identity = {identity}",
            claim=(
                "INSERT INTO s3_events_ledger "
                "(identity, pid, step, updated_at, claimed_by, claimed_until) "
                f"VALUES ({{identity}}, NULL, 0, {now}, {{owner}}, {lease}) "
                "ON CONFLICT (identity) DO UPDATE SET "
                f"claimed_by = CASE WHEN {takeable} "
                "THEN excluded.claimed_by ELSE s3_events_ledger.claimed_by END, "
                f"claimed_until = CASE WHEN {takeable} "
                "THEN excluded.claimed_until ELSE s3_events_ledger.claimed_until END, "
                f"updated_at = {now} "
                "RETURNING pid, step, claimed_by"
            ),
            claim_pid=(
                "UPDATE s3_events_ledger SET pid = COALESCE(pid, {pid}), "
                f"step = {greatest}(step, {int(Step.PID_CLAIMED)}), {renewed} "
                f"WHERE {held} RETURNING pid"
            ),
            advance=(
                f"UPDATE s3_events_ledger SET step = {greatest}(step, {{step}}), {renewed} "
                f"WHERE {held} RETURNING step"
            ),
            release=(
                f"UPDATE s3_events_ledger SET step = {greatest}(step, {{step}}), "
                "claimed_until = CASE WHEN claimed_by = {owner} THEN NULL "
                "ELSE claimed_until END, "
                "claimed_by = CASE WHEN claimed_by = {owner} THEN NULL ELSE claimed_by END, "
                f"updated_at = {now} "
                "WHERE identity = {identity} RETURNING claimed_by"
            ),
            renew=(
                f"UPDATE s3_events_ledger SET {renewed} WHERE claimed_by = {{owner}} "
                f"AND identity IN ({dialect.held_identities}) RETURNING identity"
            ),
            begin_delivery=(
                "INSERT INTO s3_events_deliveries (digest, unfinished, updated_at) "
                f"VALUES ({{digest}}, 1, {now}) ON CONFLICT (digest) DO UPDATE SET "
                f"unfinished = s3_events_deliveries.unfinished + 1, updated_at = {now} "
                "RETURNING unfinished"
            ),
            end_delivery=(
                "DELETE FROM s3_events_deliveries WHERE digest = {digest} RETURNING digest"
            ),
            take_back_delivery=(
                f"UPDATE s3_events_deliveries SET unfinished = unfinished - 1, "
                f"updated_at = {now} WHERE digest = {{digest}} AND unfinished > 0 "
                "RETURNING digest"
            ),
            transfer_requested=(
                f"SELECT 1 FROM s3_events_ledger WHERE identity{dialect.binary_order} >= {{first}} "
                f"AND identity{dialect.binary_order} < {{past}} "
                f"AND step = {int(Step.TRANSFER_REQUESTED)} LIMIT 1"
            ),
            prune_events=f"DELETE FROM s3_events_ledger WHERE {older}",
            prune_deliveries=f"DELETE FROM s3_events_deliveries WHERE {older}",
        )
        placeholders = {name: dialect.placeholder(name) for name in _NAMES}
        return cls(*(template.format(**placeholders) for template in templates))
