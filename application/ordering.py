"""Which messages must wait for each other: events about one object go one at a time, in order.

Several messages are handled at once, but two events about the same object (a
create and the remove that follows it, or an event and its duplicate) are not:
the second waits until the first is settled, so the ledger and MediaHaven see
them in the order the gateway sent them. Everything here is bookkeeping on one
thread (the consumer's); no locks, no I/O.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from s3_events_handler.application.limits import DEFAULT_MAX_MESSAGE_BYTES

T = TypeVar("T")


class Unordered:
    """The ordering key of a message no other message waits for (or behind)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Unordered at {id(self):#x}"


def ordering_key(body: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Hashable:
    """`(bucket, key)` of a message holding one record; any other message a key of its own.

    A message with several records is split into messages of one record each, which are
    ordered then; one that cannot be read, or is larger than `max_bytes`
    (`MAX_MESSAGE_BYTES`, never parsed), is dead-lettered without touching any object.
    Cheaper than parsing the event, as it runs for every message on the consumer's thread.
    """
    if len(body) > max_bytes:
        return Unordered()
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Unordered()
    records = message.get("Records") if isinstance(message, dict) else None
    if not isinstance(records, list) or len(records) != 1:
        return Unordered()
    bucket, key = _at(records[0], "bucket", "name"), _at(records[0], "object", "key")
    if isinstance(bucket, str) and isinstance(key, str):
        return (bucket, key)
    return Unordered()


def _at(record: Any, *path: str) -> Any:
    node = record.get("s3") if isinstance(record, dict) else None
    for step in path:
        if not isinstance(node, dict):  # what json.loads gives for an object
            return None
        node = node.get(step)
    return node


class KeyedQueue(Generic[T]):
    """Items by key: one item of a key in progress at a time, the rest waiting in arrival order.

    `admit` says whether an item may start now; `release`, called when the item in
    progress is done with, hands out the next one of its key. Not thread-safe: one
    thread owns it.
    """

    def __init__(self) -> None:
        # A key is here while an item of it is in progress; its deque holds those waiting,
        # each with its place in the arrival order of all keys.
        self._waiting: dict[Hashable, deque[tuple[int, T]]] = {}
        self._arrivals = itertools.count()

    def admit(self, key: Hashable, item: T) -> bool:
        """True when `item` may start now; False when it waits behind another of its key."""
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque()
            return True
        waiting.append((next(self._arrivals), item))
        return False

    def release(self, key: Hashable) -> T | None:
        """The item of `key` in progress is done: the next of its key, now in progress, if any."""
        waiting = self._waiting[key]
        if waiting:
            return waiting.popleft()[1]
        del self._waiting[key]
        return None

    def take_waiting(self) -> list[T]:
        """Every item not started yet, in arrival order; the ones in progress stay."""
        entries = (entry for waiting in self._waiting.values() for entry in waiting)
        taken = sorted(entries, key=lambda entry: entry[0])
        for waiting in self._waiting.values():
            waiting.clear()
        return [item for _, item in taken]

    @property
    def in_progress(self) -> int:
        return len(self._waiting)

    @property
    def waiting(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())


__all__ = ["KeyedQueue", "Unordered", "ordering_key"]
