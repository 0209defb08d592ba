"""Notes when each transfer request reaches the transfer queue, without touching the service.

It consumes the transfer queue as the file-transfer service would, and stamps each
message as it is handed over; the service sets the message's correlation id to the
event's request id, which names the event. Polled from the bench's one loop, so it
needs no thread.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from types import TracebackType
from typing import Any, Self

import pika

from tests.support import amqp


class TransferRecorder:
    """Arrival times (`time.time()`) of the transfer requests of the events it waits for."""

    def __init__(self, host: str, port: int, queue: str, expected: Collection[str]) -> None:
        self._expected = frozenset(expected)
        self.arrivals: dict[str, float] = {}
        self.strays = 0
        """Messages that are no transfer request of ours (another run's, say)."""
        self.duplicates = 0
        self._connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                host=host,
                port=port,
                credentials=pika.PlainCredentials(amqp.USER, amqp.PASSWORD),
                client_properties={"connection_name": "s3eh-bench-recorder"},
            )
        )
        channel = self._connection.channel()
        # Unlimited prefetch: the broker hands each message over as soon as it is routed.
        channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)

    @property
    def count(self) -> int:
        return len(self.arrivals)

    @property
    def complete(self) -> bool:
        return len(self.arrivals) == len(self._expected)

    @property
    def last_arrival(self) -> float:
        return max(self.arrivals.values())

    def poll(self, seconds: float) -> None:
        """Take what arrived, waiting at most `seconds` for something to."""
        self._connection.process_data_events(time_limit=seconds)

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _on_message(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        arrived = time.time()
        correlation_id = properties.correlation_id
        if correlation_id not in self._expected:
            self.strays += 1
        elif correlation_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[correlation_id] = arrived
