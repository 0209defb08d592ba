"""The ports, each wrapped so that telemetry learns which outside system failed.

An error says what went wrong, not where it came from; the composition root knows
which adapter plays which port, so it wraps each in the one of these that names its
system. The use cases see the ports unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.application.telemetry import System, Telemetry
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable
from s3_events_handler.domain.model import (
    LedgerEntry,
    Query,
    Record,
    Sidecar,
    Step,
    TransferRequest,
)
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    Organisations,
    PidService,
    TransferRequests,
    TransportServer,
)

P = ParamSpec("P")
T = TypeVar("T")

# What a system answers when it is down or refuses: counted. Bad input found on the way
# is the event's fault, and anything else a bug of ours: not the system's.
_SYSTEM_ERRORS = (ServiceUnavailable, Rejected)


class _Observed:
    """Runs a port's calls, telling telemetry of each that `system` failed or refused."""

    def __init__(self, telemetry: Telemetry, system: System) -> None:
        self._telemetry = telemetry
        self._system = system

    def _call(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except _SYSTEM_ERRORS:
            self._telemetry.downstream_error(self._system)
            raise


class ObservedRecords(_Observed):
    """MediaHaven's records."""

    def __init__(self, records: ArchiveRecords, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.MEDIAHAVEN)
        self._records = records

    def search(self, query: Query) -> Iterator[Record]:
        """As lazy as the port: a page that fails is counted when the caller reads on to it."""
        try:
            yield from self._records.search(query)
        except _SYSTEM_ERRORS:
            self._telemetry.downstream_error(self._system)
            raise

    def add_relation(self, fragment_id: str, related_pid: str, reason: str) -> None:
        self._call(self._records.add_relation, fragment_id, related_pid, reason)

    def delete(self, fragment_id: str, reason: str) -> None:
        self._call(self._records.delete, fragment_id, reason)


class ObservedPids(_Observed):
    def __init__(self, pids: PidService, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.PID)
        self._pids = pids

    def mint(self) -> str:
        return self._call(self._pids.mint)


class ObservedOrganisations(_Observed):
    def __init__(self, organisations: Organisations, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.ORGANISATIONS)
        self._organisations = organisations

    def cp_name(self, or_id: str) -> str:
        return self._call(self._organisations.cp_name, or_id)


class ObservedTransport(_Observed):
    """The FTP transport server."""

    def __init__(self, transport: TransportServer, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.FTP)
        self._transport = transport

    def upload(self, sidecar: Sidecar) -> None:
        self._call(self._transport.upload, sidecar)


class ObservedTransfers(_Observed):
    """Transfer requests, published on the broker."""

    def __init__(self, transfers: TransferRequests, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.BROKER)
        self._transfers = transfers

    def publish(self, request: TransferRequest) -> None:
        self._call(self._transfers.publish, request)


class ObservedLedger(_Observed):
    """The ledger: its failures counted like any system's, each statement that succeeds
    reported too (readiness follows the ledger), and each claim that found the event taken
    in before (a redelivery, a retry or a duplicate) counted as a hit."""

    def __init__(self, ledger: ConsumerLedger, telemetry: Telemetry) -> None:
        super().__init__(telemetry, System.LEDGER)
        self._ledger = ledger

    def _call(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        answer = super()._call(method, *args, **kwargs)
        self._telemetry.ledger_answered()
        return answer

    def recall(self, identity: str) -> LedgerEntry | None:
        return self._call(self._ledger.recall, identity)

    def claim(self, identity: str) -> LedgerEntry | None:
        entry = self._call(self._ledger.claim, identity)
        if entry is not None:
            self._telemetry.ledger_hit()
        return entry

    def claim_pid(self, identity: str, pid: str) -> str:
        return self._call(self._ledger.claim_pid, identity, pid)

    def advance(self, identity: str, step: Step) -> None:
        self._call(self._ledger.advance, identity, step)

    def release(self, identity: str, step: Step | None = None) -> None:
        self._call(self._ledger.release, identity, step)

    def begin_delivery(self, digest: str) -> int:
        return self._call(self._ledger.begin_delivery, digest)

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        self._call(self._ledger.end_delivery, digest, handled=handled)
