"""Taking a deleted S3 object out of MediaHaven, free of any protocol or library."""

from __future__ import annotations

import logging
from collections.abc import Callable

from s3_events_handler.domain.claim import EventClaim, nobody
from s3_events_handler.domain.errors import at_stage
from s3_events_handler.domain.model import Query, Record, S3Event, Stage, Step, Term
from s3_events_handler.domain.ports import ArchiveRecords, Ledger, Organisations
from s3_events_handler.domain.results import (
    AlreadyHandled,
    NothingToRemove,
    Removed,
    RemoveResult,
)

log = logging.getLogger(__name__)

DEFAULT_COLLATERAL_BUCKET = "mam-collaterals"


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
        on_recall: Callable[[], None] = nobody,
    ) -> None:
        """`on_recall` is told each time the ledger knew the event from before (`EventClaim`)."""
        self._records = records
        self._organisations = organisations
        self._ledger = ledger
        self._collateral_bucket = collateral_bucket
        self._on_recall = on_recall

    def execute(
        self, event: S3Event, *, correlation_id: str, pid: str | None = None
    ) -> RemoveResult:
        """`correlation_id` and `pid` as for an ingest, where a removal needs neither. A failure
        says its stage (`domain.errors.at_stage`)."""
        with (
            at_stage(Stage.LEDGER),
            EventClaim(self._ledger, event.identity, self._on_recall) as claim,
        ):
            if claim.finished:
                log.debug("already removed, nothing to do: %s", event.object.key)
                return AlreadyHandled(key=event.object.key, pid=None)
            result = self._remove(event)
            with at_stage(result.stage):  # the removal's record, written once it is over
                claim.finish(Step.REMOVED)
            return result

    def _remove(self, event: S3Event) -> Removed | NothingToRemove:
        bucket, key = event.object.bucket, event.object.key
        with at_stage(Stage.ORGANISATIONS):
            self._organisations.cp_name(event.or_id)
        with at_stage(Stage.SEARCH):
            found = self._records.search(
                Query.all_of(Term("s3_object_key", key), Term("s3_bucket", bucket))
            )
            matches = [r for r in found if r.s3_object_key == key and r.s3_bucket == bucket]
            if not matches:
                log.debug("nothing archived for bucket %r and key %r", bucket, key)
                return NothingToRemove(bucket=bucket, key=key)
            collaterals = self._collaterals_of(matches)
        with at_stage(Stage.DELETE_COLLATERAL):
            for collateral, fragment in collaterals:
                self._records.delete(
                    collateral.fragment_id,
                    reason=(
                        f'Deleted collateral with local_id: "{collateral.local_id}" linked to '
                        f'fragment with fragment_id: "{fragment.fragment_id}". '
                        "Essence was deleted via s3 delete-object."
                    ),
                )
        with at_stage(Stage.DELETE_ESSENCE):
            essences = [record for record in matches if not record.is_fragment]
            for essence in essences:
                self._records.delete(
                    essence.fragment_id,
                    reason=f's3 delete-object for bucket: "{bucket}" and key: "{key}"',
                )
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
        return [
            (record, fragments[record.local_id])
            for record in related  # each once, as the port promises
            if not record.is_fragment
            and record.local_id in fragments
            and record.s3_bucket == self._collateral_bucket
            and record.fragment_id not in own
        ]
