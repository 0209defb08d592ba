"""The two things the service does, free of any protocol or library."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType

from s3_events_handler.domain.errors import EssenceNotArchivedYet, Rejected, S3EventsHandlerError
from s3_events_handler.domain.model import (
    CollateralKey,
    Destinations,
    FileKind,
    LedgerEntry,
    Query,
    Record,
    S3Event,
    Sidecar,
    Stage,
    Step,
    Term,
    require_path_segment,
)
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    Ledger,
    Organisations,
    PidService,
    TransferRequests,
    TransportServer,
)
from s3_events_handler.domain.results import (
    AlreadyArchived,
    AlreadyHandled,
    IngestResult,
    NothingToRemove,
    Removed,
    RemoveResult,
    Sent,
)

log = logging.getLogger(__name__)

ESSENCE_USE = "archive_master"
DEFAULT_COLLATERAL_BUCKET = "mam-collaterals"


@dataclass
class Progress:
    """How far one attempt at an event got; read back after a failure.

    `pid` may come in filled from an earlier attempt, so a retry reuses it.
    """

    pid: str | None = None
    stage: Stage = Stage.RECEIVED


class EventClaim:
    """This consumer's hold on one event in the ledger, from before its first side effect to
    after its last (contract §6: one event, one worker, across every consumer).

    `with EventClaim(ledger, identity) as claim:` claims the event (raising
    `ClaimedElsewhere` while another consumer holds it); `claim.entry` is what the ledger
    knew of it. `finish(step)` records the last step and lets go in one write. Leaving the
    block any other way lets go without a step. A release that fails is logged, not
    raised: the claim then lapses with its lease, and the event's outcome stands.
    """

    def __init__(self, ledger: Ledger, identity: str) -> None:
        self._ledger = ledger
        self.identity = identity
        self.entry: LedgerEntry | None = None
        self._held = False

    def __enter__(self) -> EventClaim:
        self.entry = self._ledger.claim(self.identity)
        self._held = not self.finished
        return self

    @property
    def finished(self) -> bool:
        """The ledger says the event was seen through: nothing is claimed, nothing to do."""
        return self.entry is not None and self.entry.step.finished

    def finish(self, step: Step) -> None:
        self._held = False
        self._ledger.release(self.identity, step)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._held:
            return
        self._held = False
        try:
            self._ledger.release(self.identity)
        except S3EventsHandlerError as error:
            log.warning("the claim on %s is left to lapse: %s", self.identity, error)


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
    ) -> None:
        self._records = records
        self._ledger = ledger
        self._pids = pids
        self._organisations = organisations
        self._transport = transport
        self._transfers = transfers
        self._destinations = destinations
        self._collateral_bucket = collateral_bucket

    def execute(self, event: S3Event, *, correlation_id: str, progress: Progress) -> IngestResult:
        progress.stage = Stage.LEDGER
        with EventClaim(self._ledger, event.identity) as claim:
            if claim.entry is not None and claim.finished:
                pid = claim.entry.pid
                log.debug("already handled, nothing to do: %s (%s)", event.object.key, pid)
                return AlreadyHandled(key=event.object.key, pid=pid)
            return self._ingest(event, claim, correlation_id, progress)

    def _ingest(
        self, event: S3Event, claim: EventClaim, correlation_id: str, progress: Progress
    ) -> IngestResult:
        collateral = self._collateral_key(event)
        progress.stage = Stage.ORGANISATIONS
        cp_name = require_path_segment(self._organisations.cp_name(event.or_id), "CP name")
        progress.stage = Stage.ARCHIVED_CHECK
        if self._is_archived(event, cp_name, collateral is not None):
            log.warning("already archived, nothing to do: %s", event.object.key)
            return AlreadyArchived(key=event.object.key)
        entry, identity = claim.entry, claim.identity
        if collateral is None:
            known_pid = entry.pid if entry is not None else None
            sidecar = self._essence_sidecar(event, identity, cp_name, progress, known_pid)
        else:
            related = entry is not None and entry.step >= Step.RELATION_ADDED
            sidecar = self._collateral_sidecar(
                event, identity, cp_name, collateral, progress, related
            )
        self._send(claim, sidecar, correlation_id, progress)
        return Sent(
            key=event.object.key,
            cp_name=sidecar.cp_name,
            folder=sidecar.folder,
            sidecar_file=sidecar.filename,
            pid=sidecar.pid,
        )

    def _collateral_key(self, event: S3Event) -> CollateralKey | None:
        """Checked before any call: a bad collateral key is bad input, whatever MediaHaven says."""
        if event.object.bucket != self._collateral_bucket:
            return None
        return CollateralKey.parse(event.object.key)

    def _send(
        self, claim: EventClaim, sidecar: Sidecar, correlation_id: str, progress: Progress
    ) -> None:
        """The sidecar first, then the transfer request; the ledger notes the request once done
        and lets go of the claim in the same write."""
        progress.stage = Stage.SIDECAR_UPLOAD
        self._transport.upload(sidecar)
        # No ledger write in between: a new attempt does the same after an upload as
        # before it (the same bytes again under the same name, then the request).
        progress.stage = Stage.TRANSFER_REQUEST
        request = self._destinations.transfer_request(sidecar, correlation_id=correlation_id)
        self._transfers.publish(request)
        claim.finish(Step.TRANSFER_REQUESTED)
        progress.stage = Stage.DONE

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
        self,
        event: S3Event,
        identity: str,
        cp_name: str,
        progress: Progress,
        known_pid: str | None,
    ) -> Sidecar:
        progress.stage = Stage.PID
        if known_pid is not None:
            progress.pid = known_pid  # the ledger's already: nothing to claim
        else:
            pid = progress.pid or require_path_segment(self._pids.mint(), "PID")
            progress.pid = self._ledger.claim_pid(identity, pid)
        return Sidecar(
            name=progress.pid,
            cp_name=cp_name,
            folder=self._destinations.folder_for(cp_name, FileKind.ESSENCE),
            or_id=event.or_id,
            pid=progress.pid,
            object=event.object,
            object_use=ESSENCE_USE,
        )

    def _collateral_sidecar(
        self,
        event: S3Event,
        identity: str,
        cp_name: str,
        key: CollateralKey,
        progress: Progress,
        related: bool,
    ) -> Sidecar:
        """`related`: an earlier attempt already linked it, so the update is not posted twice."""
        progress.stage = Stage.ESSENCE_LOOKUP
        essence = self._find_essence(key.media_id)
        if not essence.pid:
            raise Rejected(f"essence {essence.fragment_id} of {key.media_id!r} has no PID")
        essence_pid = require_path_segment(essence.pid, "essence PID")
        name = f"{essence_pid}_{key.collateral_type}"
        # Derived, not minted: the ledger keeps it only to mark the event as taken in.
        self._ledger.claim_pid(identity, name)
        if not related:
            progress.stage = Stage.RELATION
            self._records.add_relation(
                essence.fragment_id,
                name,
                reason=f"[s3-events-handler] Voeg relatie van {key.object_use} toe",
            )
            self._ledger.advance(identity, Step.RELATION_ADDED)
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


class RemoveEssence:
    """Take a deleted S3 object out of MediaHaven, with its collaterals.

    - Only records whose bucket and key equal the event's exactly are touched,
      whatever else the search engine returns.
    - Collaterals (records in the collateral bucket sharing a fragment's local
      id) go before the essence; another essence sharing a local id is no
      collateral and stays.
    - A record that is already gone counts as deleted, so a retry finishes the job.
    - The event is claimed in the ledger before the first delete, and marked removed
      once done, so neither a second consumer nor a duplicate deletes anything again.
    """

    def __init__(
        self,
        *,
        records: ArchiveRecords,
        organisations: Organisations,
        ledger: Ledger,
        collateral_bucket: str = DEFAULT_COLLATERAL_BUCKET,
    ) -> None:
        self._records = records
        self._organisations = organisations
        self._ledger = ledger
        self._collateral_bucket = collateral_bucket

    def execute(self, event: S3Event, *, correlation_id: str, progress: Progress) -> RemoveResult:
        progress.stage = Stage.LEDGER
        with EventClaim(self._ledger, event.identity) as claim:
            if claim.finished:
                log.debug("already removed, nothing to do: %s", event.object.key)
                return AlreadyHandled(key=event.object.key, pid=None)
            result = self._remove(event, progress)
            claim.finish(Step.REMOVED)
            return result

    def _remove(self, event: S3Event, progress: Progress) -> Removed | NothingToRemove:
        bucket, key = event.object.bucket, event.object.key
        progress.stage = Stage.ORGANISATIONS
        self._organisations.cp_name(event.or_id)
        progress.stage = Stage.SEARCH
        found = self._records.search(
            Query.all_of(Term("s3_object_key", key), Term("s3_bucket", bucket))
        )
        matches = [r for r in found if r.s3_object_key == key and r.s3_bucket == bucket]
        if not matches:
            log.debug("nothing archived for bucket %r and key %r", bucket, key)
            return NothingToRemove(bucket=bucket, key=key)
        collaterals = self._collaterals_of(matches)
        progress.stage = Stage.DELETE_COLLATERAL
        for collateral, fragment in collaterals:
            self._records.delete(
                collateral.fragment_id,
                reason=(
                    f'Deleted collateral with local_id: "{collateral.local_id}" linked to '
                    f'fragment with fragment_id: "{fragment.fragment_id}". '
                    "Essence was deleted via s3 delete-object."
                ),
            )
        progress.stage = Stage.DELETE_ESSENCE
        essences = [record for record in matches if not record.is_fragment]
        for essence in essences:
            self._records.delete(
                essence.fragment_id,
                reason=f's3 delete-object for bucket: "{bucket}" and key: "{key}"',
            )
        progress.stage = Stage.DONE
        return Removed(bucket=bucket, key=key, essences=len(essences), collaterals=len(collaterals))

    def _collaterals_of(self, matches: list[Record]) -> list[tuple[Record, Record]]:
        """Each collateral with the fragment whose local id it shares."""
        fragments: dict[str, Record] = {}
        for record in matches:
            if record.is_fragment and record.local_id:
                fragments.setdefault(record.local_id, record)
        if not fragments:
            return []
        related = self._records.search(
            Query.any_of(*(Term("dc_identifier_localid", local_id) for local_id in fragments))
        )
        own = {record.fragment_id for record in matches}
        seen: set[str] = set()
        collaterals = []
        for record in related:
            if (
                not record.is_fragment
                and record.local_id in fragments
                and record.s3_bucket == self._collateral_bucket
                and record.fragment_id not in own
                and record.fragment_id not in seen
            ):
                seen.add(record.fragment_id)
                collaterals.append((record, fragments[record.local_id]))
        return collaterals
