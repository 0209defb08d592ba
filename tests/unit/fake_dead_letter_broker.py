"""A stand-in for the broker under `DeadLetterQueue`: its queues, and the one channel a pass
uses.

It keeps a classic queue as RabbitMQ does for one channel in transaction mode: an exclusive
consumer gets messages while fewer than the prefetch are unacked, an ack or a publish counts
only once committed (so does the prefetch's credit), and a message handed back returns to its
own place, ahead of everything published after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.exceptions import ShortStringTooLong

from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from tests.support import amqp

SETTINGS = amqp.settings_for("127.0.0.1", 5672, "unit")
DLQ = SETTINGS.dead_letter_queue
INCOMING = SETTINGS.incoming_queue


@dataclass
class Method:
    delivery_tag: int = 0
    message_count: int = 0


@dataclass
class Declared:
    method: Method


@dataclass(frozen=True)
class Stored:
    seq: int
    properties: Any
    body: bytes


@dataclass
class FakeBroker:
    """The queues, and the one channel a pass uses."""

    queues: dict[str, list[Stored]]
    refuse: set[bytes] = field(default_factory=set)
    """Bodies whose properties pika cannot encode again."""
    prefetch: int = 0
    unacked: dict[int, tuple[str, Stored]] = field(default_factory=dict)
    most_unacked: int = 0
    publishes: list[tuple[str, Any, bytes]] = field(default_factory=list)
    settles: list[tuple[int, bool]] = field(default_factory=list)  # (tag, requeue)
    commits: int = 0
    transactional: bool = False
    consuming: bool = False
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _tags: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def holding(cls, *messages: tuple[Any, bytes]) -> FakeBroker:
        broker = cls({DLQ: [], INCOMING: []})
        broker.queues[DLQ] = [Stored(next(broker._seq), p, b) for p, b in messages]
        return broker

    def bodies(self, queue: str = DLQ) -> list[bytes]:
        return [stored.body for stored in self.queues[queue]]

    # -- the channel --------------------------------------------------------------------

    def queue_declare(self, queue: str, passive: bool) -> Declared:
        assert passive
        return Declared(Method(message_count=len(self.queues[queue])))

    def tx_select(self) -> None:
        self.transactional = True

    def add_on_return_callback(self, callback: Any) -> None:
        pass

    def basic_qos(self, prefetch_count: int) -> None:
        self.prefetch = prefetch_count

    def consume(
        self, queue: str, exclusive: bool, inactivity_timeout: float
    ) -> Iterator[tuple[Any, Any, Any]]:
        assert exclusive and self.transactional
        self.consuming = True
        while self.consuming:
            ready = self.queues[queue]
            if not ready or len(self.unacked) >= self.prefetch:
                yield None, None, None  # what pika yields after `inactivity_timeout`
                continue
            stored = ready.pop(0)
            tag = next(self._tags)
            self.unacked[tag] = (queue, stored)
            self.most_unacked = max(self.most_unacked, len(self.unacked))
            yield Method(tag), stored.properties, stored.body

    def cancel(self) -> None:
        self.consuming = False

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None:
        assert exchange == "" and mandatory
        if body in self.refuse:
            raise ShortStringTooLong("a header pika cannot encode again")
        self.publishes.append((routing_key, properties, body))

    def basic_ack(self, delivery_tag: int) -> None:
        self.settles.append((delivery_tag, False))

    def basic_nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        assert (delivery_tag, multiple, requeue) == (0, True, True)  # everything outstanding
        settled = {tag for tag, _ in self.settles}
        self.settles.extend((tag, True) for tag in self.unacked if tag not in settled)

    def tx_commit(self) -> None:
        self.commits += 1
        for routing_key, properties, body in self.publishes:
            self.queues[routing_key].append(Stored(next(self._seq), properties, body))
        for tag, requeue in self.settles:
            queue, stored = self.unacked.pop(tag)
            if requeue:  # back to its own place
                self.queues[queue] = sorted([*self.queues[queue], stored], key=lambda s: s.seq)
        self.publishes, self.settles = [], []


@dataclass
class FakeConnection:
    broker: FakeBroker
    is_open: bool = True

    def channel(self) -> FakeBroker:
        return self.broker

    def process_data_events(self, time_limit: float) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


def queue_of(broker: FakeBroker, window: int = 4) -> DeadLetterQueue:
    connection = FakeConnection(broker)
    return DeadLetterQueue(SETTINGS, open_connection=lambda settings: connection, window=window)


def properties(**values: Any) -> Any:
    return pika.BasicProperties(**values)


def numbered(count: int) -> list[tuple[Any, bytes]]:
    return [(properties(message_id=f"msg-{n}"), f"body-{n}".encode()) for n in range(count)]
