"""In-memory implementations of every port: for unit tests, the demo, and other services' tests.

Each records what was asked of it, in order, so a test can assert on state.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.mediahaven import render_query
from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.domain.errors import ClaimedElsewhere, Rejected, SearchTooBroad, System
from s3_events_handler.domain.model import (
    CLAIM_LEASE_SECONDS,
    DEFAULT_MAX_SEARCH_PAGES,
    EventKind,
    LedgerEntry,
    Query,
    Record,
    Sidecar,
    Step,
    TransferRequest,
    identity_prefix,
)
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    Organisations,
    PidService,
    TransferRequests,
    TransportServer,
)


@dataclass(frozen=True, slots=True)
class Relation:
    fragment_id: str
    related_pid: str
    reason: str


class InMemoryArchiveRecords(ArchiveRecords):
    """MediaHaven as a list of records.

    A search matches values exactly unless `matches` says otherwise: a looser
    rule stands in for a search engine that also returns near misses. It is read in
    pages of `page_size`, at most `max_pages` of them, as MediaHaven's is;
    `pages_read` counts the pages every search asked for.
    """

    def __init__(
        self,
        records: Iterable[Record] = (),
        *,
        matches: Callable[[Record, Query], bool] | None = None,
        page_size: int = 100,
        max_pages: int = DEFAULT_MAX_SEARCH_PAGES,
    ) -> None:
        self.records: list[Record] = list(records)
        self._matches = matches or exact_match
        self.page_size = page_size
        self.max_pages = max_pages
        self.searches: list[Query] = []
        self.pages_read = 0
        self.relations: list[Relation] = []
        self.deleted: list[str] = []
        self.delete_reasons: dict[str, str] = {}

    def search(self, query: Query) -> Iterator[Record]:
        self.searches.append(query)
        found = [record for record in self.records if self._matches(record, query)]
        for page, start in enumerate(range(0, len(found), self.page_size), start=1):
            if page > self.max_pages:
                raise SearchTooBroad(self.max_pages, render_query(query))
            self.pages_read += 1
            yield from found[start : start + self.page_size]

    def add_relation(self, fragment_id: str, related_pid: str, reason: str) -> None:
        if not any(record.fragment_id == fragment_id for record in self.records):
            raise Rejected(  # MediaHaven's 404
                f"no record {fragment_id} to relate {related_pid} to", system=System.MEDIAHAVEN
            )
        self.relations.append(Relation(fragment_id, related_pid, reason))

    def delete(self, fragment_id: str, reason: str) -> None:
        self.deleted.append(fragment_id)
        self.delete_reasons[fragment_id] = reason
        self.records = [r for r in self.records if r.fragment_id != fragment_id]


def exact_match(record: Record, query: Query) -> bool:
    """Every group has a term whose field equals its value exactly."""
    fields = {
        "s3_object_key": record.s3_object_key,
        "s3_bucket": record.s3_bucket,
        "dc_identifier_localid": record.local_id,
        "PID": record.pid,
        "md5": record.md5,
    }
    return all(any(fields.get(t.field) == t.value for t in group) for group in query.groups)


class SequentialPids(PidService):
    """Hands out `pid0000001`, `pid0000002`, … (or the PIDs it was given, in order)."""

    def __init__(self, pids: Iterable[str] = ()) -> None:
        given = list(pids)
        self._pids = iter(given) if given else (f"pid{n:07d}" for n in itertools.count(1))
        self.minted: list[str] = []

    def mint(self) -> str:
        pid = next(self._pids)
        self.minted.append(pid)
        return pid


class InMemoryOrganisations(Organisations):
    """A fixed table of OR-id -> CP name; unknown ids are refused as the real API's are."""

    def __init__(self, cp_names: dict[str, str]) -> None:
        self.cp_names = dict(cp_names)
        self.lookups: list[str] = []

    def cp_name(self, or_id: str) -> str:
        self.lookups.append(or_id)
        try:
            return self.cp_names[or_id]
        except KeyError:
            raise Rejected(
                f"no organisation with a MAM label for {or_id}", system=System.ORGANISATIONS
            ) from None


class InMemoryTransportServer(TransportServer):
    """Folders of files; the sidecar is rendered exactly as the FTP adapter renders it."""

    def __init__(self, folders: Iterable[str] | None = None) -> None:
        self.folders = set(folders) if folders is not None else None
        self.uploaded: dict[str, bytes] = {}
        self.uploads: list[str] = []
        """The path of every upload, in order, a repeat of one too."""

    def upload(self, sidecar: Sidecar) -> None:
        folder = f"/{sidecar.cp_name}/{sidecar.folder}"
        if self.folders is not None and folder not in self.folders:
            raise Rejected(f"no folder {folder} on the transport server", system=System.FTP)
        path = f"{folder}/{sidecar.filename}"
        self.uploaded[path] = sidecar_xml.render(sidecar)
        self.uploads.append(path)


@dataclass
class InMemoryTransferRequests(TransferRequests):
    """The transfer queue as a list."""

    published: list[TransferRequest] = field(default_factory=list)

    def publish(self, request: TransferRequest) -> None:
        self.published.append(request)


class InMemoryLedger(ConsumerLedger):
    """The ledger as dicts, for as long as the process lives. `beside(owner)` is another
    consumer's view of the same memory; `clock` (seconds) lets a test make a lease lapse."""

    def __init__(
        self,
        *,
        owner: str = "this consumer",
        lease_seconds: float = CLAIM_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.entries: dict[str, LedgerEntry] = {}
        self.claims: dict[str, tuple[str, float]] = {}
        """Each claimed event's holder and when its lease lapses (`clock` time)."""
        self.unfinished: dict[str, int] = {}
        """Each message in hand (by digest): deliveries begun and not ended."""
        self.lease_seconds = lease_seconds
        self._clock = clock

    def beside(self, owner: str) -> InMemoryLedger:
        other = InMemoryLedger(owner=owner, lease_seconds=self.lease_seconds, clock=self._clock)
        other.entries, other.claims, other.unfinished = self.entries, self.claims, self.unfinished
        return other

    def transfer_requested(self, bucket: str, key: str) -> bool:
        prefix = identity_prefix(EventKind.CREATED, bucket, key)
        return any(
            identity.startswith(prefix) and entry.step == Step.TRANSFER_REQUESTED
            for identity, entry in self.entries.items()
        )

    def claim(self, identity: str) -> LedgerEntry | None:
        entry = self.entries.get(identity)
        if entry is not None and entry.step.finished:
            return entry
        holder, until = self.claims.get(identity, (self.owner, 0.0))
        if holder != self.owner and until > self._clock():
            raise ClaimedElsewhere(f"{holder} holds the claim on {identity}")
        self.claims[identity] = (self.owner, self._clock() + self.lease_seconds)
        if entry is None or (entry.pid is None and entry.step == Step.NOTHING_DONE):
            return None
        return entry

    def claim_pid(self, identity: str, pid: str) -> str:
        self._hold(identity)
        return self._record(identity, Step.PID_CLAIMED, pid).pid or pid

    def advance(self, identity: str, step: Step) -> None:
        self._hold(identity)
        self._record(identity, step)

    def release(self, identity: str, step: Step | None = None) -> None:
        if step is not None:
            self._record(identity, step)
        if self.claims.get(identity, ("", 0.0))[0] == self.owner:
            del self.claims[identity]

    def begin_delivery(self, digest: str) -> int:
        self.unfinished[digest] = self.unfinished.get(digest, 0) + 1
        return self.unfinished[digest] - 1

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        if handled:
            self.unfinished.pop(digest, None)
        elif self.unfinished.get(digest, 0) > 0:
            self.unfinished[digest] -= 1

    def _hold(self, identity: str) -> None:
        """Renew the lease of the event's claim, once it is known to be this consumer's."""
        holder, _ = self.claims.get(identity, ("nobody", 0.0))
        if holder != self.owner:
            raise ClaimedElsewhere(f"the claim on {identity} is held by {holder}, not this one")
        self.claims[identity] = (self.owner, self._clock() + self.lease_seconds)

    def _record(self, identity: str, step: Step, pid: str | None = None) -> LedgerEntry:
        """`step` unless a later one is recorded, and `pid` unless one is: the first stays."""
        entry = self.entries.get(identity) or LedgerEntry(identity, None, Step.NOTHING_DONE)
        self.entries[identity] = LedgerEntry(identity, entry.pid or pid, max(entry.step, step))
        return self.entries[identity]


__all__ = [
    "InMemoryArchiveRecords",
    "InMemoryLedger",
    "InMemoryOrganisations",
    "InMemoryTransferRequests",
    "InMemoryTransportServer",
    "Relation",
    "SequentialPids",
]
