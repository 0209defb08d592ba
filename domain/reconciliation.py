"""Reconcile: what the events missed (contract §8), free of S3, HTTP and the broker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from s3_events_handler.domain.bucket import ObjectState, Reconciled, Resubmission, StoredObject
from s3_events_handler.domain.model import Query, Term
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    BucketObjects,
    IncomingEvents,
    TransfersSent,
)

log = logging.getLogger(__name__)

# What the gateway calls its S3 service in `s3.domain.name`; the file-transfer service
# finds the object by it (contract §3.4).
DEFAULT_S3_DOMAIN = "s3"


class ReconcileBucket:
    """Compare a bucket with the archive, object by object, and send back what is missing.

    - Objects modified more recently than `older_than` are left out: their events may
      still be on the way.
    - `archived`: MediaHaven has a record with exactly this bucket and key; the search
      engine's near misses do not count.
    - `in flight`: no record yet, but the ledger took in an `ObjectCreated` event for the
      object and sent its transfer request: MediaHaven has not ingested it yet.
    - `missing`: neither. `enqueue` sends it back through the normal path as an
      `ObjectCreated:Put` event carrying its user metadata (the md5), whose request id
      makes a second enqueue of it the same event for the ledger.
    - The listing is streamed: nothing holds more than the object in hand.

    `state_of` may be called from several threads at once (the ports are thread-safe);
    how many at once and how fast is the caller's choice (`application/reconciling.py`).
    """

    def __init__(
        self,
        *,
        objects: BucketObjects,
        records: ArchiveRecords,
        ledger: TransfersSent,
        clock: Callable[[], datetime],
        events: IncomingEvents | None = None,
        domain: str = DEFAULT_S3_DOMAIN,
    ) -> None:
        self._objects = objects
        self._records = records
        self._ledger = ledger
        self._clock = clock
        self._events = events
        self._domain = domain

    def candidates(
        self, bucket: str, *, prefix: str = "", older_than: timedelta
    ) -> Iterator[StoredObject]:
        """The objects to look at, in key order, those modified within `older_than` left out."""
        cutoff = self._clock() - older_than
        for stored in self._objects.objects(bucket, prefix):
            if stored.last_modified <= cutoff:
                yield stored

    def state_of(self, stored: StoredObject) -> ObjectState:
        if self._is_archived(stored):
            return ObjectState.ARCHIVED
        if self._ledger.transfer_requested(stored.bucket, stored.key):
            return ObjectState.IN_FLIGHT
        return ObjectState.MISSING

    def enqueue(self, stored: StoredObject, tenant: str) -> Resubmission | None:
        """Send a missing object back to the incoming queue; returns the event sent, or None
        when the object was deleted since it was listed (there is nothing to archive)."""
        if self._events is None:
            raise RuntimeError("this reconciliation was set up without an incoming queue")
        looked_at = self._objects.with_metadata(stored)
        if looked_at is None:
            log.warning(
                "not enqueued, deleted since it was listed: %s/%s", stored.bucket, stored.key
            )
            return None
        event = Resubmission(
            object=looked_at, tenant=tenant, domain=self._domain, event_time=self._clock()
        )
        self._events.publish(event)
        log.info("enqueued %s/%s as %s", stored.bucket, stored.key, event.request_id)
        return event

    def execute(
        self,
        bucket: str,
        *,
        prefix: str = "",
        older_than: timedelta,
        tenant: str | None = None,
    ) -> Iterator[Reconciled]:
        """Each object's state, one after the other; with `tenant`, the missing ones enqueued."""
        for stored in self.candidates(bucket, prefix=prefix, older_than=older_than):
            yield self.settle(stored, self.state_of(stored), tenant)

    def settle(self, stored: StoredObject, state: ObjectState, tenant: str | None) -> Reconciled:
        """The object's result, once its state is known; a missing one enqueued with `tenant`."""
        if state is ObjectState.MISSING and tenant is not None:
            return Reconciled(stored, state, enqueued=self.enqueue(stored, tenant) is not None)
        return Reconciled(stored, state)

    def _is_archived(self, stored: StoredObject) -> bool:
        """The first exact match ends the search: no page after it is asked for."""
        query = Query.all_of(Term("s3_bucket", stored.bucket), Term("s3_object_key", stored.key))
        return any(
            record.s3_bucket == stored.bucket and record.s3_object_key == stored.key
            for record in self._records.search(query)
        )
