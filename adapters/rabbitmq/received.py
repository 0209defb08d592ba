"""A delivery as the broker handed it over, and what its settlement made of it: the two values
that pass between the consumer's I/O thread and its workers."""

from __future__ import annotations

from dataclasses import dataclass

import pika

from s3_events_handler.adapters.rabbitmq.headers import delivery_of
from s3_events_handler.application.messages import Delivery, Outcome


@dataclass(frozen=True, slots=True)
class Received:
    """An incoming message as the broker delivered it: what a republish copies and the ack names."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes

    def delivery(self) -> Delivery:
        """The message as the application sees it."""
        return delivery_of(self.body, self.properties)


@dataclass(frozen=True, slots=True)
class Settled:
    """What became of a delivery, for the consumer's one log line a message and its metrics."""

    outcome: Outcome
    """What was carried out: the outcome asked for, or the `DeadLetter` that took its place
    when AMQP could not encode its copies, so nothing reports a retry or a split that
    never happened."""
    destination: str
    """Where its replacement went: `-` for none, a queue, or `N x queue` for several."""
    correlation_id: str | None

    @property
    def kind(self) -> str:
        """`done`, `split`, `retry` or `dead-letter`."""
        return self.outcome.event_outcome.action
