"""A stand-in for `BrokerConnection`, for the consumer's loop without a broker.

Each `open()` returns a new `ConsumingChannel` (a `RecordingChannel` that also takes a
consumer and declarations) on a new `FakeConnection`; messages handed to `deliver` reach
the consumer's callback the next time its loop pumps the connection, each with the next
delivery tag of that channel; and `lose_connection()` makes the next pump fail as a
connection that died does. As pika's, a connection runs the callbacks handed to it from
other threads only while it is pumped, and drops them when it closes.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.spec

from tests.unit.recording_channel import RecordingChannel

OnMessage = Callable[[Any, pika.spec.Basic.Deliver, pika.BasicProperties, bytes], None]


class FakeConnection:
    """What the consumer uses of pika's BlockingConnection: `process_data_events`, and a
    worker's `add_callback_threadsafe` and `is_closed`."""

    def __init__(self, broker: FakeBroker) -> None:
        self.is_closed = False
        self._broker = broker
        self._callbacks: deque[Callable[[], None]] = deque()

    def process_data_events(self, time_limit: float) -> None:
        self._broker.process_data_events(time_limit)

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        if self.is_closed:
            raise pika.exceptions.ConnectionWrongStateError("the connection is closed")
        self._callbacks.append(callback)
        self._broker.wake()

    def run_callbacks(self) -> None:
        """What pika does in `process_data_events`: run what other threads handed over."""
        while self._callbacks and not self.is_closed:
            self._callbacks.popleft()()

    def close(self) -> None:
        """Closed: what was handed over and not run yet is never run."""
        self.is_closed = True
        self._callbacks.clear()


class ConsumingChannel(RecordingChannel):
    """Records publishes, acks and rejects, and takes the one consumer the consumer starts."""

    def __init__(self, connection: FakeConnection) -> None:
        super().__init__()
        self.connection = connection
        self.is_open = True
        self.on_message: OnMessage | None = None
        self.cancelled = False
        self.declared: list[str] = []
        """The queues declared on this channel, in order."""
        self._tags = itertools.count(1)

    def next_tag(self) -> int:
        return next(self._tags)

    def add_on_cancel_callback(self, callback: Callable[[Any], None]) -> None:
        pass

    def basic_consume(self, queue: str, on_message_callback: OnMessage, auto_ack: bool) -> str:
        assert not auto_ack
        self.on_message = on_message_callback
        return "consumer-1"

    def basic_cancel(self, consumer_tag: str) -> list[Any]:
        self.cancelled = True
        return []

    def queue_declare(self, queue: str, **options: Any) -> None:
        self.declared.append(queue)

    def exchange_declare(self, exchange: str, **options: Any) -> None:
        pass

    def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        pass


class FakeBroker:
    """What the consumer asks of `BrokerConnection`, on channels that record what it did."""

    def __init__(self) -> None:
        self.channels: list[ConsumingChannel] = []
        self._to_deliver: deque[tuple[bytes, pika.BasicProperties]] = deque()
        self._woken = threading.Event()
        self._lose = False

    @property
    def channel(self) -> ConsumingChannel:
        return self.channels[-1]

    def open(self) -> ConsumingChannel:
        self._lose = False
        self.channels.append(ConsumingChannel(FakeConnection(self)))
        return self.channel

    def close(self) -> None:
        if self.channels:
            self.channel.is_open = False
            self.channel.connection.close()

    def deliver(self, body: bytes, properties: pika.BasicProperties | None = None) -> None:
        """Hand `body` to the consumer on its current channel, soon."""
        self._to_deliver.append((body, properties or pika.BasicProperties()))
        self.wake()

    def lose_connection(self) -> None:
        """The next pump raises StreamLostError, as when the broker went away."""
        self._lose = True
        self.wake()

    def process_data_events(self, time_limit: float) -> None:
        channel = self.channel
        if self._lose:
            self._lose = False
            self.close()
            raise pika.exceptions.StreamLostError("the broker went away")
        while self._to_deliver and channel.on_message is not None and not channel.cancelled:
            body, properties = self._to_deliver.popleft()
            method = pika.spec.Basic.Deliver(delivery_tag=channel.next_tag())
            channel.on_message(channel, method, properties, body)
        channel.connection.run_callbacks()
        self._woken.wait(time_limit)
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()
