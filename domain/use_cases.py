"""The two things the service does, free of any protocol or library: `IngestEssence` here,
`RemoveEssence` in `domain.removal`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from s3_events_handler.domain.claim import EventClaim, nobody
from s3_events_handler.domain.errors import EssenceNotArchivedYet, Rejected, at_stage
from s3_events_handler.domain.model import (
    CollateralKey,
    Destinations,
    FileKind,
    Query,
    Record,
    S3Event,
    Sidecar,
    Stage,
    Step,
    Term,
)
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    Ledger,
    Organisations,
    PidService,
    TransferRequests,
    TransportServer,
)
from s3_events_handler.domain.removal import DEFAULT_COLLATERAL_BUCKET, RemoveEssence
from s3_events_handler.domain.results import AlreadyArchived, AlreadyHandled, IngestResult, Sent
from s3_events_handler.domain.rules import require_path_segment

log = logging.getLogger(__name__)

ESSENCE_USE = "archive_master"


class IngestEssence:
    """Archive a newly created object, essence or collateral.

    - An object MediaHaven already has (a record with exactly this key, or this
      md5 where the md5 counts) is skipped with a warning; near misses of the
      search engine do not count.
    - The md5 counts for collaterals, and for essences unless the CP is VRT.
    - An essence gets a new PID, or the one an earlier attempt minted.
    - A collateral takes `{essence_pid}_{type}` as its name and is linked to
      its essence (a fragment preferred) before its sidecar goes out.
    - The sidecar is on the transport server before the transfer request is sent.
    - The event is claimed in the ledger before anything else, so no other consumer
      works on it meanwhile (`EventClaim`).
    - The ledger learns what a new attempt must not do again (mint a PID, post the
      relation, request the transfer) as soon as it is done: an event it saw through
      to its transfer request is not done again, and a retried or duplicated one
      reuses its PID, so it never gets two different sidecars.
    """

    def __init__(
        self,
        *,
        records: ArchiveRecords,
        pids: PidService,
        organisations: Organisations,
        transport: TransportServer,
        transfers: TransferRequests,
        destinations: Destinations,
        ledger: Ledger,
        collateral_bucket: str = DEFAULT_COLLATERAL_BUCKET,
        on_recall: Callable[[], None] = nobody,
    ) -> None:
        """`on_recall` is told each time the ledger knew the event from before (`EventClaim`)."""
        self._records = records
        self._ledger = ledger
        self._pids = pids
        self._organisations = organisations
        self._transport = transport
        self._transfers = transfers
        self._destinations = destinations
        self._collateral_bucket = collateral_bucket
        self._on_recall = on_recall

    def execute(
        self, event: S3Event, *, correlation_id: str, pid: str | None = None
    ) -> IngestResult:
        """`pid`: the one an earlier attempt minted (a retry's `x-pid`), reused unless the
        ledger knows better. A failure says its stage and, once the attempt has one, its PID
        (`domain.errors.at_stage`)."""
        with (
            at_stage(Stage.LEDGER),
            EventClaim(self._ledger, event.identity, self._on_recall) as claim,
        ):
            if claim.entry is not None and claim.finished:
                known = claim.entry.pid
                log.debug("already handled, nothing to do: %s (%s)", event.object.key, known)
                return AlreadyHandled(key=event.object.key, pid=known)
            return self._ingest(event, claim, correlation_id, pid)

    def _ingest(
        self, event: S3Event, claim: EventClaim, correlation_id: str, pid: str | None
    ) -> IngestResult:
        # Checked before any call: a bad collateral key is bad input, whatever MediaHaven says.
        collateral = None
        if event.object.bucket == self._collateral_bucket:
            collateral = CollateralKey.parse(event.object.key)
        with at_stage(Stage.ORGANISATIONS):
            cp_name = require_path_segment(self._organisations.cp_name(event.or_id), "CP name")
        with at_stage(Stage.ARCHIVED_CHECK):
            if self._is_archived(event, cp_name, collateral is not None):
                log.warning("already archived, nothing to do: %s", event.object.key)
                return AlreadyArchived(key=event.object.key)
        if collateral is None:
            sidecar = self._essence_sidecar(event, claim, cp_name, pid)
        else:
            sidecar = self._collateral_sidecar(event, claim, cp_name, collateral)
        # A failure from here on carries the PID a retry of the essence reuses; a collateral
        # mints none (its sidecar's is its essence's).
        minted = None if sidecar.is_collateral else sidecar.pid
        with at_stage(Stage.SIDECAR_UPLOAD, pid=minted):
            self._transport.upload(sidecar)
        # No ledger write in between: a new attempt does the same after an upload as
        # before it (the same bytes again under the same name, then the request).
        with at_stage(Stage.TRANSFER_REQUEST, pid=minted):
            request = self._destinations.transfer_request(sidecar, correlation_id=correlation_id)
            self._transfers.publish(request)
            claim.finish(Step.TRANSFER_REQUESTED)  # and lets go of the claim, in one write
        return Sent(
            key=event.object.key,
            cp_name=sidecar.cp_name,
            folder=sidecar.folder,
            sidecar_file=sidecar.filename,
            pid=sidecar.pid,
        )

    def _is_archived(self, event: S3Event, cp_name: str, collateral: bool) -> bool:
        """Only a hit that matches exactly counts: a search engine also returns near misses.
        The first one ends the search: no page after it is asked for."""
        key = event.object.key
        terms = [Term("s3_object_key", key)]
        md5 = event.object.md5
        if md5 is not None and (collateral or cp_name.upper() != "VRT"):
            terms.append(Term("md5", md5))
        else:
            md5 = None
        return any(
            record.s3_object_key == key
            or (md5 is not None and record.md5 is not None and record.md5.lower() == md5.lower())
            for record in self._records.search(Query.any_of(*terms))
        )

    def _essence_sidecar(
        self, event: S3Event, claim: EventClaim, cp_name: str, pid: str | None
    ) -> Sidecar:
        """The ledger's PID, already claimed; else `pid` (an earlier attempt's) or a new one is
        claimed."""
        known = claim.entry.pid if claim.entry is not None else None
        with at_stage(Stage.PID, pid=pid):
            if known is None:
                known = self._ledger.claim_pid(
                    claim.identity, pid or require_path_segment(self._pids.mint(), "PID")
                )
        with at_stage(Stage.PID, pid=known):
            return Sidecar(
                name=known,
                cp_name=cp_name,
                folder=self._destinations.folder_for(cp_name, FileKind.ESSENCE),
                or_id=event.or_id,
                pid=known,
                object=event.object,
                object_use=ESSENCE_USE,
            )

    def _collateral_sidecar(
        self, event: S3Event, claim: EventClaim, cp_name: str, key: CollateralKey
    ) -> Sidecar:
        """Linked to its essence unless an earlier attempt did, so the update is not posted
        twice."""
        with at_stage(Stage.ESSENCE_LOOKUP):
            essence = self._find_essence(key.media_id)
            if not essence.pid:
                raise Rejected(f"essence {essence.fragment_id} of {key.media_id!r} has no PID")
            essence_pid = require_path_segment(essence.pid, "essence PID")
            name = f"{essence_pid}_{key.collateral_type}"
            # Derived, not minted: the ledger keeps it only to mark the event as taken in.
            self._ledger.claim_pid(claim.identity, name)
            if claim.entry is None or claim.entry.step < Step.RELATION_ADDED:
                with at_stage(Stage.RELATION):
                    self._records.add_relation(
                        essence.fragment_id,
                        name,
                        reason=f"[s3-events-handler] Voeg relatie van {key.object_use} toe",
                    )
                    self._ledger.advance(claim.identity, Step.RELATION_ADDED)
            return Sidecar(
                name=name,
                cp_name=cp_name,
                folder=self._destinations.folder_for(cp_name, FileKind.COLLATERAL),
                or_id=event.or_id,
                pid=essence_pid,
                object=event.object,
                object_use=key.object_use,
                media_id=key.media_id,
                related_pid=essence_pid,
            )

    def _find_essence(self, media_id: str) -> Record:
        found = self._records.search(Query.any_of(Term("dc_identifier_localid", media_id)))
        candidates = [
            record
            for record in found
            if record.local_id == media_id and record.s3_bucket != self._collateral_bucket
        ]
        fragments = [record for record in candidates if record.is_fragment]
        chosen = fragments or candidates
        if not chosen:
            raise EssenceNotArchivedYet(f"no archived essence with local id {media_id!r} yet")
        if len(chosen) > 1:
            log.warning(
                "%d records with local id %r, linking to the first: %s",
                len(chosen),
                media_id,
                chosen[0].fragment_id,
            )
        return chosen[0]


__all__ = ["DEFAULT_COLLATERAL_BUCKET", "ESSENCE_USE", "IngestEssence", "RemoveEssence"]
