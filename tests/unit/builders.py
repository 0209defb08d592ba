"""Small builders for unit tests: events and records as the use cases see them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from s3_events_handler.adapters.memory import (
    InMemoryArchiveRecords,
    InMemoryLedger,
    InMemoryOrganisations,
    InMemoryTransferRequests,
    InMemoryTransportServer,
    SequentialPids,
)
from s3_events_handler.domain.claim import nobody
from s3_events_handler.domain.events import parse_record
from s3_events_handler.domain.model import (
    Destinations,
    LedgerEntry,
    Query,
    Record,
    S3Event,
    Sidecar,
    Step,
    TransferRequest,
)
from s3_events_handler.domain.ports import ArchiveRecords, Ledger
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence
from tests.support.clock import Clock

OR_ID = "OR-rf5kf25"
TRANSFER_HOST = "ftp://transport.example.org"
PRODUCTION_FOLDERS = {
    "vrt": {"essence": "TAPE-SHARE-EVENTS", "collateral": "DISK-SHARE-EVENTS"},
    "testbeeld": {"essence": "DISK-SHARE-EVENTS", "collateral": "DISK-SHARE-EVENTS"},
}


def golden_event(examples: Path, name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((examples / name).read_text())
    return event


def record_of(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The first record of a message, with nested changes given as dotted paths."""
    record: dict[str, Any] = copy.deepcopy(message["Records"][0])
    for path, value in changes.items():
        node = record
        *parents, leaf = path.split("__")
        for step in parents:
            node = node[step]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return record


def event_of(message: dict[str, Any], **changes: Any) -> S3Event:
    return parse_record(record_of(message, **changes))


def essence_record(
    fragment_id: str,
    *,
    key: str = "essence.MXF",
    bucket: str = "mam-highresvideo",
    pid: str = "k98z0d4w1q",
    local_id: str | None = None,
    is_fragment: bool = False,
) -> Record:
    return Record(
        fragment_id=fragment_id,
        is_fragment=is_fragment,
        pid=pid,
        local_id=local_id,
        s3_object_key=key,
        s3_bucket=bucket,
    )


class World:
    """Every port as an in-memory fake, and the two use cases wired to them."""

    def __init__(
        self,
        records: list[Record] | None = None,
        cp_name: str = "VRT",
        pids: tuple[str, ...] = ("k98z0d4w1q", "a1b2c3d4e5", "z9y8x7w6v5"),
    ) -> None:
        self.records = InMemoryArchiveRecords(records or [])
        self.pids = SequentialPids(pids)
        self.organisations = InMemoryOrganisations({OR_ID: cp_name})
        self.transport = InMemoryTransportServer()
        self.transfers = InMemoryTransferRequests()
        self.clock = Clock()
        self.ledger = InMemoryLedger(clock=self.clock)
        self.destinations = Destinations(transfer_host=TRANSFER_HOST, folders=PRODUCTION_FOLDERS)
        self.ingest = self.ingest_on(self.records)
        self.remove = RemoveEssence(
            records=self.records, organisations=self.organisations, ledger=self.ledger
        )

    def crashed_attempt(self, identity: str, *, pid: str, step: Step = Step.PID_CLAIMED) -> None:
        """What a consumer that died during the event left in the ledger: its PID, its step,
        and a claim that has lapsed since."""
        crashed = self.ledger.beside("a consumer that died")
        crashed.claim(identity)
        crashed.claim_pid(identity, pid)
        crashed.advance(identity, step)
        self.clock.now += crashed.lease_seconds

    def ingest_on(
        self,
        records: ArchiveRecords,
        ledger: Ledger | None = None,
        on_recall: Callable[[], None] = nobody,
    ) -> IngestEssence:
        """IngestEssence on these fakes, with `records` standing in for MediaHaven (and
        `ledger` for the ledger, if given)."""
        return IngestEssence(
            records=records,
            pids=self.pids,
            organisations=self.organisations,
            transport=self.transport,
            transfers=self.transfers,
            destinations=self.destinations,
            ledger=ledger or self.ledger,
            on_recall=on_recall,
        )


class Failing:
    """Every port at once, each call raising `error`: a system down or refusing."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def search(self, query: Query) -> Iterator[Record]:
        raise self.error

    def add_relation(self, fragment_id: str, related_pid: str, reason: str) -> None:
        raise self.error

    def delete(self, fragment_id: str, reason: str) -> None:
        raise self.error

    def mint(self) -> str:
        raise self.error

    def cp_name(self, or_id: str) -> str:
        raise self.error

    def upload(self, sidecar: Sidecar) -> None:
        raise self.error

    def publish(self, request: TransferRequest) -> None:
        raise self.error

    def claim_pid(self, identity: str, pid: str) -> str:
        raise self.error

    def advance(self, identity: str, step: Step) -> None:
        raise self.error

    def claim(self, identity: str) -> LedgerEntry | None:
        raise self.error

    def release(self, identity: str, step: Step | None = None) -> None:
        raise self.error

    def begin_delivery(self, digest: str) -> int:
        raise self.error

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        raise self.error
