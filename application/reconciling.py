"""Reconcile: what the events missed (contract §8), free of S3, HTTP and the broker."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from itertools import islice
from typing import TypeVar

from s3_events_handler.domain.bucket import ObjectState, Reconciled, Resubmission, StoredObject
from s3_events_handler.domain.model import Query, Term
from s3_events_handler.domain.ports import (
    ArchiveRecords,
    BucketObjects,
    IncomingEvents,
    TransfersSent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_RATE = 50.0
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
    - `missing`: neither. With a tenant it is sent back through the normal path as an
      `ObjectCreated:Put` event carrying its user metadata (the md5), whose request id
      makes a second enqueue of it the same event for the ledger.
    - The listing is streamed, the look-ups run on `workers` threads (the ports are
      thread-safe), and the results come in listing order; the missing ones are enqueued
      by the calling thread, in that order, so nothing is published past a failure.
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

    def execute(
        self,
        bucket: str,
        *,
        prefix: str = "",
        older_than: timedelta,
        tenant: str | None = None,
        limit: int | None = None,
        workers: int = 1,
        rate: RateLimit | None = None,
    ) -> Iterator[Reconciled]:
        """Each object's state, in key order, at most `limit` of them; with `tenant`, the
        missing ones enqueued."""
        cutoff = self._clock() - older_than
        listing = (s for s in self._objects.objects(bucket, prefix) if s.last_modified <= cutoff)

        def look_up(stored: StoredObject) -> ObjectState:
            if rate is not None:
                rate.wait()
            return self._state_of(stored)

        for stored, state in bounded_map(look_up, islice(listing, limit), workers=workers):
            yield self.settle(stored, state, tenant)

    def settle(self, stored: StoredObject, state: ObjectState, tenant: str | None) -> Reconciled:
        """The object's result, once its state is known; a missing one enqueued with `tenant`,
        unless it was deleted since it was listed (there is nothing to archive)."""
        if state is not ObjectState.MISSING or tenant is None:
            return Reconciled(stored, state)
        if self._events is None:
            raise RuntimeError("this reconciliation was set up without an incoming queue")
        looked_at = self._objects.with_metadata(stored)
        if looked_at is None:
            log.warning(
                "not enqueued, deleted since it was listed: %s/%s", stored.bucket, stored.key
            )
            return Reconciled(stored, state)
        event = Resubmission(
            object=looked_at, tenant=tenant, domain=self._domain, event_time=self._clock()
        )
        self._events.publish(event)
        log.info("enqueued %s/%s as %s", stored.bucket, stored.key, event.request_id)
        return Reconciled(stored, state, enqueued=True)

    def _state_of(self, stored: StoredObject) -> ObjectState:
        # The first exact match ends the search: no page after it is asked for.
        query = Query.all_of(Term("s3_bucket", stored.bucket), Term("s3_object_key", stored.key))
        if any(
            record.s3_bucket == stored.bucket and record.s3_object_key == stored.key
            for record in self._records.search(query)
        ):
            return ObjectState.ARCHIVED
        if self._ledger.transfer_requested(stored.bucket, stored.key):
            return ObjectState.IN_FLIGHT
        return ObjectState.MISSING


class RateLimit:
    """At most `per_second` starts a second, spaced evenly. Thread-safe; the wait happens
    outside the lock, so waiting callers queue up in order without holding each other."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._spacing = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._spacing
        if start > now:
            self._sleep(start - now)


def bounded_map(
    work: Callable[[T], R], items: Iterable[T], *, workers: int
) -> Iterator[tuple[T, R]]:
    """`(item, work(item))` for each item, in the items' order, `work` running on up to
    `workers` threads, with at most twice `workers` items taken ahead of the one yielded.

    An exception of `work` is raised where its item's result would have come; an exception
    of `items` (a listing cut off) once the items taken before it have been yielded.
    """
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
    try:
        try:
            for item in items:
                pending.append((item, pool.submit(work, item)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
        except Exception:
            # `items` failed (a listing cut off): what is in hand still counts, then the failure.
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
            raise
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
