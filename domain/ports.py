"""One port per outside system, named for the role it plays for the archive."""

from __future__ import annotations

from typing import Protocol

from s3_events_handler.domain.model import (
    LedgerEntry,
    Query,
    Record,
    Sidecar,
    Step,
    TransferRequest,
)


class ArchiveRecords(Protocol):
    """MediaHaven's records."""

    def search(self, query: Query) -> list[Record]:
        """Every record matching `query`, all pages read."""
        ...

    def add_relation(self, fragment_id: str, related_pid: str, reason: str) -> None:
        """Record on `fragment_id` that `related_pid` is related to it."""
        ...

    def delete(self, fragment_id: str, reason: str) -> None:
        """Delete a record; one that is already gone counts as deleted."""
        ...


class PidService(Protocol):
    """Hands out new persistent identifiers."""

    def mint(self) -> str: ...


class Organisations(Protocol):
    """Knows each content partner's MAM label (the CP name)."""

    def cp_name(self, or_id: str) -> str: ...


class TransportServer(Protocol):
    """MediaHaven's ingest server, where sidecars are dropped."""

    def upload(self, sidecar: Sidecar) -> None:
        """Place the sidecar atomically: the server never sees a partial file."""
        ...


class TransferRequests(Protocol):
    """The file-transfer service's inbox."""

    def publish(self, request: TransferRequest) -> None:
        """Return only once the request is safely queued; raise otherwise."""
        ...


class Ledger(Protocol):
    """Durable memory of the events taken in, so a redelivery or duplicate is not done twice.

    Keyed by `S3Event.identity`. Implementations must be safe for several
    consumers side by side: the first PID claimed for an event wins.
    """

    def recall(self, identity: str) -> LedgerEntry | None: ...

    def claim_pid(self, identity: str, pid: str) -> str:
        """Store `pid` for the event unless one is stored already; return the stored one."""
        ...

    def advance(self, identity: str, step: Step) -> None:
        """Record `step` as done, unless a later step was recorded already."""
        ...
