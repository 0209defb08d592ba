"""What a use case did, as values a caller can act on without reading prose.

Each result also reads as one line (`str(result)`): the wording of the `done:`
log line and of the `process` command's summary, which operators know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Sent:
    """The sidecar is on the transport server and the transfer request is out.

    `pid` is the PID in the sidecar: for a collateral, that of its essence.
    """

    kind: ClassVar[str] = "sent"

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

    key: str

    def __str__(self) -> str:
        return f"already archived: {self.key}"


@dataclass(frozen=True, slots=True)
class AlreadyHandled:
    """The ledger saw this event through (its transfer request sent, or its records removed):
    nothing was done again. `pid` is None for a removal."""

    kind: ClassVar[str] = "already-handled"

    key: str
    pid: str | None

    def __str__(self) -> str:
        return f"already handled: {self.key}" + (f" as {self.pid}" if self.pid else "")


@dataclass(frozen=True, slots=True)
class Removed:
    """The essence records and their collaterals were deleted (or were already gone)."""

    kind: ClassVar[str] = "removed"

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

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"nothing to remove for {self.bucket}/{self.key}"


IngestResult = Sent | AlreadyArchived | AlreadyHandled
RemoveResult = Removed | NothingToRemove | AlreadyHandled
Result = IngestResult | RemoveResult
