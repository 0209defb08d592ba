"""Which messages must wait for each other: events about one object go one at a time, in order,
so the ledger and MediaHaven see a create and the remove that follows it (or an event and its
duplicate) in the order the gateway sent them. The workers keep that order
(`adapters/rabbitmq/dispatch.py`); this only says which object a message is about.
"""

from __future__ import annotations

import json
from collections.abc import Hashable

from s3_events_handler.application.limits import DEFAULT_MAX_MESSAGE_BYTES
from s3_events_handler.domain.events import peek


class Unordered:
    """The ordering key of a message no other message waits for (or behind)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Unordered at {id(self):#x}"


def ordering_key(body: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Hashable:
    """`(bucket, key)` of a message holding one record; any other message a key of its own: one
    with several records is split first, its records ordered then; one unreadable or over
    `max_bytes` (never parsed) is dead-lettered without touching an object. Cheaper than
    parsing the event, as it runs for every message on the consumer's I/O thread."""
    if len(body) > max_bytes:
        return Unordered()
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Unordered()
    records = message.get("Records") if isinstance(message, dict) else None
    if not isinstance(records, list) or len(records) != 1:
        return Unordered()
    _, bucket, key = peek(records[0])
    return Unordered() if bucket is None or key is None else (bucket, key)
