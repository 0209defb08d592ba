"""A stand-in for pika's BlockingChannel in confirm mode that records what it is asked to do.

It marshals every publish's frames as pika does before sending anything, so
properties AMQP cannot carry fail here with pika's own exceptions; and it can
be told to fail the way a real channel fails: refused before anything is sent
(closed), or sent but not confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pika
import pika.frame
import pika.spec

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.application.retries import RetrySchedule

CHANNEL_NUMBER = 1


# The broker settings of the unit tests: nothing connects to this host.
SETTINGS = BrokerSettings(
    host="broker.invalid",
    port=5672,
    user="s3-events-handler",
    password="not-used",
    incoming_queue="s3-events",
    transfer_queue="filetransfer",
    retries=RetrySchedule(delays=(10, 30, 90)),
)


@dataclass(frozen=True)
class Published:
    """One `basic_publish` that reached the broker; `confirmed` False when it raised."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool
    confirmed: bool


@dataclass(frozen=True)
class Acked:
    delivery_tag: int
    multiple: bool


@dataclass(frozen=True)
class Nacked:
    delivery_tag: int
    multiple: bool
    requeue: bool


@dataclass(frozen=True)
class Rejected:
    delivery_tag: int
    requeue: bool


class RecordingChannel:
    """Records publishes, acks and nacks in the order they came; fails when told to."""

    def __init__(self) -> None:
        self.calls: list[Published | Acked | Nacked | Rejected] = []
        self._closed_by: Exception | None = None
        self._unconfirmed: dict[int, Exception] = {}

    def close(self, error: Exception) -> None:
        """From now on every call raises `error` before sending anything, as a dead channel does."""
        self._closed_by = error

    def fail_confirm(self, error: Exception, *, publish_number: int = 1) -> None:
        """The `publish_number`-th publish reaches the broker, then raises `error` unconfirmed.

        As BlockingChannel does with UnroutableError (mandatory, no queue), NackError,
        or a connection lost while it waited for the confirm.
        """
        self._unconfirmed[publish_number] = error

    @property
    def published(self) -> list[Published]:
        return [call for call in self.calls if isinstance(call, Published)]

    @property
    def acked(self) -> list[int]:
        return [call.delivery_tag for call in self.calls if isinstance(call, Acked)]

    @property
    def nacked(self) -> list[int]:
        return [call.delivery_tag for call in self.calls if isinstance(call, Nacked)]

    @property
    def requeued(self) -> list[int]:
        """The tags rejected with requeue: handed back to their queue."""
        return [call.delivery_tag for call in self.calls if isinstance(call, Rejected)]

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        self._raise_if_closed()
        properties = properties or pika.BasicProperties()
        # What pika's connection does before it writes a byte: marshal the method and the header.
        method = pika.spec.Basic.Publish(
            exchange=exchange, routing_key=routing_key, mandatory=mandatory
        )
        pika.frame.Method(CHANNEL_NUMBER, method).marshal()
        pika.frame.Header(CHANNEL_NUMBER, len(body), properties).marshal()
        failure = self._unconfirmed.pop(len(self.published) + 1, None)
        self.calls.append(
            Published(exchange, routing_key, body, properties, mandatory, failure is None)
        )
        if failure is not None:
            raise failure

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self._raise_if_closed()
        self.calls.append(Acked(delivery_tag, multiple))

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None:
        self._raise_if_closed()
        self.calls.append(Nacked(delivery_tag, multiple, requeue))

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self._raise_if_closed()
        self.calls.append(Rejected(delivery_tag, requeue))

    def _raise_if_closed(self) -> None:
        if self._closed_by is not None:
            raise self._closed_by
