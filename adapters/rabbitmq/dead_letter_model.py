"""What the dead-letter queue adapter speaks of: one dead letter as read (with the id an
operator chooses it by), how a pass over them went, and what stops one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s3_events_handler.adapters.rabbitmq.headers import (
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    PID_HEADER,
    STAGE_HEADER,
)
from s3_events_handler.domain.errors import ServiceUnavailable

# Hex digits of the id made for a dead letter without a message_id: plenty for one queue.
SHORT_ID_LENGTH = 12


@dataclass(frozen=True)
class ParkedMessage:
    """One dead letter as found in the queue, with the id an operator chooses it by."""

    id: str
    body: bytes
    properties: Any = field(repr=False)

    @classmethod
    def read(cls, properties: Any, body: bytes) -> ParkedMessage:
        """The dead letter pika delivered. Its id is the message_id when it has one; else a
        short hash of body and headers, the same at every look while it is not changed."""
        if properties.message_id:
            return cls(str(properties.message_id), body, properties)
        digest = hashlib.sha256(body)
        digest.update(json.dumps(properties.headers or {}, sort_keys=True, default=str).encode())
        return cls(digest.hexdigest()[:SHORT_ID_LENGTH], body, properties)

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.properties.headers or {}

    @property
    def reason(self) -> str | None:
        return _text(self.headers.get(ERROR_HEADER))

    @property
    def stage(self) -> str | None:
        return _text(self.headers.get(STAGE_HEADER))

    @property
    def pid(self) -> str | None:
        """The PID minted before it was dead-lettered (`x-pid`), reused by a replay."""
        return _text(self.headers.get(PID_HEADER))

    @property
    def dead_lettered_at(self) -> datetime | None:
        """When it was dead-lettered (`x-dead-lettered-at`). Older dead letters do not say:
        then when the broker last moved it (`x-death`), else its `timestamp` property."""
        stamped = _text(self.headers.get(DEAD_LETTERED_AT_HEADER))
        if stamped:
            try:
                return datetime.fromisoformat(stamped)
            except ValueError:
                pass
        deaths = self.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            moved = deaths[0].get("time")
            if isinstance(moved, datetime):
                return moved if moved.tzinfo else moved.replace(tzinfo=UTC)
        timestamp = self.properties.timestamp
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            return datetime.fromtimestamp(timestamp, UTC)
        return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


@dataclass
class Tally:
    """How a pass went. Dead letters not removed are still in the dead-letter queue."""

    there: int = 0  # ready when the pass started: what it reads at most
    looked_at: int = 0  # asked about (fewer than `there` once the caller has enough)
    removed: int = 0
    # (id, why) of those chosen for a replay whose copy pika cannot encode: still here.
    unpublishable: list[tuple[str, str]] = field(default_factory=list)
    # (id, why) of those kept that could not be rotated: handed back to the queue's head.
    out_of_place: list[tuple[str, str]] = field(default_factory=list)
    short: bool = False  # fewer came than were there at the start: something took some

    @property
    def kept(self) -> int:
        """Looked at and left in the queue by the caller's choice."""
        return self.looked_at - self.removed - len(self.unpublishable)


class ReplayStopped(Exception):
    """The broker returned a replayed copy (routed to no queue); the replay stopped there."""


class QueueBusy(ServiceUnavailable):
    """The dead-letter queue has a consumer already: another dead-letters command."""
