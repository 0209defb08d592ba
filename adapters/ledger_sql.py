"""What the SQLite and PostgreSQL ledgers share: the `Ledger` port over three statements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from s3_events_handler.domain.model import LedgerEntry, Step
from s3_events_handler.domain.ports import Ledger


def ledger_table(*, step_type: str, updated_at_type: str) -> str:
    """The ledger's one table; the databases differ only in two column types."""
    return (
        "CREATE TABLE IF NOT EXISTS s3_events_ledger ("
        "identity TEXT PRIMARY KEY, "
        "pid TEXT, "
        f"step {step_type} NOT NULL, "
        f"updated_at {updated_at_type} NOT NULL)"
    )


class SqlLedger(Ledger, ABC):
    """The `Ledger` port; each database writes the three statements in its own dialect.

    `RECALL` takes (identity) and gives (pid, step); `CLAIM_PID` takes (identity,
    pid, step), keeps the first PID and the later step, and gives the PID kept;
    `ADVANCE` takes (identity, step) and keeps the later step.
    """

    RECALL: ClassVar[str]
    CLAIM_PID: ClassVar[str]
    ADVANCE: ClassVar[str]

    def recall(self, identity: str) -> LedgerEntry | None:
        rows = self._query(self.RECALL, (identity,))
        return LedgerEntry(identity, rows[0][0], Step(rows[0][1])) if rows else None

    def claim_pid(self, identity: str, pid: str) -> str:
        rows = self._query(self.CLAIM_PID, (identity, pid, int(Step.PID_CLAIMED)))
        return str(rows[0][0])

    def advance(self, identity: str, step: Step) -> None:
        self._query(self.ADVANCE, (identity, int(step)))

    @abstractmethod
    def _query(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """The rows of one statement; a failure is `ServiceUnavailable`."""


__all__ = ["SqlLedger", "ledger_table"]
