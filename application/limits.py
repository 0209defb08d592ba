"""What one message may cost before it is handled (contract §6, "Messages that cannot be handled
safely"): its size, its records, and how often the consumer may die while handling it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from s3_events_handler.domain.ports import Ledger, TransfersSent

# A real event is a few KiB; a JSON body costs several times its size as Python objects,
# and the deployment's memory limit is 192 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# S3's own limit for one batch delete: more records than that is no gateway's message.
DEFAULT_MAX_RECORDS = 1000
# A rolling restart or an eviction during a slow event costs an innocent message one death;
# three in a row is a pattern, not bad luck (docs/reliability.md).
DEFAULT_POISON_LIMIT = 3


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """`MAX_MESSAGE_BYTES`, `MAX_RECORDS` and `POISON_LIMIT`, each at least 1 (checked where
    the settings are read)."""

    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_records: int = DEFAULT_MAX_RECORDS
    poison_limit: int = DEFAULT_POISON_LIMIT


class UnfinishedDeliveries(Protocol):
    """A durable count, by message, of the deliveries whose handling began and never ended
    with an outcome: the consumer died during them (killed, out of memory, a crash in a C
    extension). Kept in the ledger, so it outlives the process."""

    def begin_delivery(self, digest: str) -> int:
        """Count this delivery of the message in, before its handling starts; how many of
        its deliveries before this one began and never ended."""
        ...

    def end_delivery(self, digest: str, *, handled: bool = True) -> None:
        """The delivery ended without the consumer dying during it.

        `handled`: with an outcome of its own, so the count starts from zero again. Not
        handled (another consumer holds the event; it comes back later): only this
        delivery is taken back out of the count, the deaths before it still count.
        """
        ...


class ConsumerLedger(Ledger, UnfinishedDeliveries, TransfersSent, Protocol):
    """The ledger the consumer writes: the events taken in, the messages in hand, and the
    objects whose transfer was requested (what `reconcile` reads back)."""


def digest_of(body: bytes) -> str:
    """The message's name in `UnfinishedDeliveries`: its body's, so a copy of it in another
    queue (a redelivery, the incoming queue again) is the same message."""
    return hashlib.sha256(body).hexdigest()
