"""What the dead-letter queue adapter speaks of: the id an operator chooses a dead letter by,
how a pass over them went, and what stops one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.domain.errors import ServiceUnavailable

# Hex digits of the id made for a dead letter without a message_id: plenty for one queue.
SHORT_ID_LENGTH = 12


def dead_letter_id(message: Received) -> str:
    """The message_id when it has one; else a short hash of body and headers, the same at
    every look while it is not changed."""
    if message.properties.message_id:
        return str(message.properties.message_id)
    digest = hashlib.sha256(message.body)
    digest.update(json.dumps(message.headers, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:SHORT_ID_LENGTH]


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
