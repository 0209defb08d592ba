"""One port per outside system, named for the role it plays for the archive."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from s3_events_handler.domain.bucket import Resubmission, StoredObject
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

    def search(self, query: Query) -> Iterator[Record]:
        """The records matching `query`, each once, read a page at a time as the caller goes
        on: a caller that stops early asks for no more pages, and no more than a page is
        held. Reading past the bound on pages raises `SearchTooBroad` (transient)."""
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
    """Durable memory of the events taken in, keyed by `S3Event.identity`, so a redelivery or
    duplicate is not done twice, and the claim that keeps two consumers off one event
    (contract §6). One ledger object speaks for one consumer process; only the claim's holder
    records steps."""

    def claim(self, identity: str) -> LedgerEntry | None:
        """Hold the event for this consumer until `release`, and say how far it got.

        Returns None when nothing was done for it yet. A finished event (`Step.finished`)
        is returned without being claimed. Raises `ClaimedElsewhere` while another
        consumer's claim on it is live.
        """
        ...

    def claim_pid(self, identity: str, pid: str) -> str:
        """Store `pid` for the claimed event unless one is stored already; return the stored one.

        Raises `ClaimedElsewhere` when this consumer no longer holds the claim.
        """
        ...

    def advance(self, identity: str, step: Step) -> None:
        """Record `step` as done for the claimed event, unless a later step was recorded already.

        Raises `ClaimedElsewhere` when this consumer no longer holds the claim.
        """
        ...

    def release(self, identity: str, step: Step | None = None) -> None:
        """Let go of the claim, recording `step` first when one is given (in the same write)."""
        ...


@runtime_checkable
class TransfersSent(Protocol):
    """The ledger asked by object rather than by event: what `reconcile` needs to tell an
    object in flight from a missing one (contract §8)."""

    def transfer_requested(self, bucket: str, key: str) -> bool:
        """Whether an `ObjectCreated` event about this object was taken in and its transfer
        request sent. An event whose identity had to be hashed (contract §6: a key of
        well over a hundred characters) cannot be found by its object: False."""
        ...


class BucketObjects(Protocol):
    """An S3 bucket's listing."""

    def objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`, in key order, read a page at a time
        as the caller goes on: never the whole listing in hand."""
        ...

    def with_metadata(self, stored: StoredObject) -> StoredObject | None:
        """`stored` with its user metadata, from a look at the object itself; None when the
        object is no longer there (deleted since it was listed)."""
        ...


class IncomingEvents(Protocol):
    """The incoming queue, for an event this service makes itself."""

    def publish(self, event: Resubmission) -> None:
        """Return only once the event is safely queued (persistent, confirmed); raise otherwise."""
        ...
