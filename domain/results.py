"""What a use case did, as values a caller can act on, and how an event ended.

Each result names its `kind` (the log line's `result`), its `outcome` and the `stage` its
attempt ended at; `str(result)` is the `done:` log line and the `process` command's summary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from s3_events_handler.domain.model import Stage


class EventOutcome(enum.StrEnum):
    """How an event ended, as the metrics and the log line's `outcome` say (contract §7)."""

    DONE = "done"
    SKIPPED = "skipped"
    """Acked without work: already archived, already handled, nothing to remove."""
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    SPLIT = "split"

    @property
    def action(self) -> str:
        """What became of the message, as the `process` command says it: `done` (a skipped
        event too), `retry`, `dead-letter` or `split`."""
        return _ACTIONS.get(self, self.value)


_ACTIONS = {
    EventOutcome.SKIPPED: "done",
    EventOutcome.RETRIED: "retry",
    EventOutcome.DEAD_LETTERED: "dead-letter",
}


@dataclass(frozen=True, slots=True)
class Sent:
    """The sidecar is on the transport server and the transfer request is out.

    `pid` is the PID in the sidecar: for a collateral, that of its essence.
    """

    kind: ClassVar[str] = "sent"
    outcome: ClassVar[EventOutcome] = EventOutcome.DONE
    stage: ClassVar[Stage] = Stage.DONE

    key: str
    cp_name: str
    folder: str
    sidecar_file: str
    pid: str

    def __str__(self) -> str:
        return f"sent {self.cp_name}/{self.folder}/{self.sidecar_file} for {self.key}"


@dataclass(frozen=True, slots=True)
class AlreadyArchived:
    """MediaHaven already has the object: nothing was sent."""

    kind: ClassVar[str] = "already-archived"
    outcome: ClassVar[EventOutcome] = EventOutcome.SKIPPED
    stage: ClassVar[Stage] = Stage.ARCHIVED_CHECK

    key: str

    def __str__(self) -> str:
        return f"already archived: {self.key}"


@dataclass(frozen=True, slots=True)
class AlreadyHandled:
    """The ledger saw this event through (its transfer request sent, or its records removed):
    nothing was done again. `pid` is None for a removal."""

    kind: ClassVar[str] = "already-handled"
    outcome: ClassVar[EventOutcome] = EventOutcome.SKIPPED
    stage: ClassVar[Stage] = Stage.LEDGER

    key: str
    pid: str | None

    def __str__(self) -> str:
        return f"already handled: {self.key}" + (f" as {self.pid}" if self.pid else "")


@dataclass(frozen=True, slots=True)
class Removed:
    """The essence records and their collaterals were deleted (or were already gone)."""

    kind: ClassVar[str] = "removed"
    outcome: ClassVar[EventOutcome] = EventOutcome.DONE
    stage: ClassVar[Stage] = Stage.DONE

    bucket: str
    key: str
    essences: int
    collaterals: int

    def __str__(self) -> str:
        return (
            f"removed {self.essences} essence(s) and {self.collaterals} collateral(s) "
            f"for {self.bucket}/{self.key}"
        )


@dataclass(frozen=True, slots=True)
class NothingToRemove:
    """No record matches the bucket and key exactly: nothing was deleted."""

    kind: ClassVar[str] = "nothing-to-remove"
    outcome: ClassVar[EventOutcome] = EventOutcome.SKIPPED
    stage: ClassVar[Stage] = Stage.SEARCH

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"nothing to remove for {self.bucket}/{self.key}"


IngestResult = Sent | AlreadyArchived | AlreadyHandled
RemoveResult = Removed | NothingToRemove | AlreadyHandled
Result = IngestResult | RemoveResult
