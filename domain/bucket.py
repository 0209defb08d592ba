"""A bucket's objects as `reconcile` sees them, and the event that sends one of them back
through the normal path (contract §8)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s3_events_handler.domain.model import EventKind


class ObjectState(enum.StrEnum):
    """What became of an object, as far as the archive and the ledger can tell."""

    ARCHIVED = "archived"
    IN_FLIGHT = "in flight"  # sent to MediaHaven, not ingested yet
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of a bucket listing. `metadata` (the user metadata, where the md5 travels)
    is only known after a look at the object itself: a listing does not carry it."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def bare_etag(self) -> str:
        """The eTag without the quotes S3 puts around it, as the gateway's events carry it."""
        return self.etag.strip('"')


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One object's state; `enqueued` when it was sent back through the normal path."""

    object: StoredObject
    state: ObjectState
    enqueued: bool = False


@dataclass(frozen=True, slots=True)
class Resubmission:
    """An `ObjectCreated:Put` event for an object whose own event never arrived.

    Its request id is `reconcile-` and the eTag, so the event's identity in the ledger
    (contract §6) is the same every time the same object is sent back: enqueued twice,
    it is still one event.
    """

    object: StoredObject
    tenant: str
    domain: str
    event_time: datetime

    @property
    def request_id(self) -> str:
        return f"reconcile-{self.object.bare_etag}"

    def notification(self) -> dict[str, Any]:
        """The S3 notification, shaped as the gateway's (contract §2), with one record. Who it
        says it comes from tells an operator reading a sidecar's `s3_object_owner` or a
        ledger row that it was not the gateway."""
        obj = self.object
        moment = self.event_time.astimezone(UTC).isoformat(timespec="milliseconds")
        record = {
            "eventVersion": "0.1",
            "eventSource": "viaa:s3:reconcile",
            "eventTime": moment.replace("+00:00", "Z"),
            "eventName": f"{EventKind.CREATED.value}:Put",
            "userIdentity": {"principalId": "reconcile"},
            "responseElements": {"x-viaa-request-id": self.request_id},
            "s3": {
                "domain": {"name": self.domain},
                "bucket": {"name": obj.bucket, "metadata": {"tenant": self.tenant}},
                "object": {
                    "key": obj.key,
                    "size": obj.size,
                    "eTag": obj.bare_etag,
                    "metadata": dict(obj.metadata),
                },
            },
        }
        return {"Records": [record]}
