"""In-memory implementations of the ports `reconcile` adds: a bucket and the incoming queue.

As the fakes of `memory.py`, they record what was asked of them, for tests to assert on.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import datetime

from s3_events_handler.domain.bucket import Resubmission, StoredObject
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.ports import BucketObjects, IncomingEvents


class InMemoryBucket(BucketObjects):
    """Buckets of objects, listed in key order a page at a time, as S3 lists them.

    `fail_after`: the listing stops answering (`ServiceUnavailable`) once that many
    objects were listed, as an endpoint that goes away mid-listing. `pages_read` counts
    the pages asked for; `heads` the objects looked at.
    """

    def __init__(self, *, page_size: int = 1000) -> None:
        self.stored: dict[tuple[str, str], StoredObject] = {}
        self.metadata: dict[tuple[str, str], dict[str, str]] = {}
        self.page_size = page_size
        self.fail_after: int | None = None
        self.pages_read = 0
        self.heads: list[str] = []
        self._lock = threading.Lock()

    def add(
        self,
        bucket: str,
        key: str,
        *,
        last_modified: datetime,
        size: int = 1,
        etag: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredObject:
        stored = StoredObject(bucket, key, size, etag or f'"etag-{key}"', last_modified)
        self.stored[(bucket, key)] = stored
        if metadata is not None:
            self.metadata[(bucket, key)] = metadata
        return stored

    def objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        keys = sorted(k for b, k in self.stored if b == bucket and k.startswith(prefix))
        listed = 0
        for start in range(0, len(keys), self.page_size):
            self.pages_read += 1
            for key in keys[start : start + self.page_size]:
                if self.fail_after is not None and listed >= self.fail_after:
                    raise ServiceUnavailable(f"S3 stopped answering while listing {bucket}")
                listed += 1
                yield self.stored[(bucket, key)]

    def with_metadata(self, stored: StoredObject) -> StoredObject | None:
        with self._lock:
            self.heads.append(stored.key)
        if (stored.bucket, stored.key) not in self.stored:
            return None
        metadata = self.metadata.get((stored.bucket, stored.key), {})
        return dataclasses.replace(stored, metadata=dict(metadata))


class InMemoryIncomingEvents(IncomingEvents):
    """The incoming queue as a list of the events published, in order."""

    def __init__(self) -> None:
        self.published: list[Resubmission] = []

    def publish(self, event: Resubmission) -> None:
        self.published.append(event)
