"""Settling a delivery: the confirmed publishes that take its place, then its ack (contract §2, §6).

Every outcome but Done replaces the delivery with other messages: its records
(a split), a copy in a retry queue, a copy in the dead letters. The delivery is
acked only after the broker confirmed each of them, so a broker that goes away
in between costs a redelivery, never a message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, assert_never

import pika

from s3_events_handler.adapters.rabbitmq.connection import (
    PERSISTENT,
    UNENCODABLE,
    BrokerSettings,
    ConfirmingChannel,
    describe,
    publish_confirmed,
)
from s3_events_handler.adapters.rabbitmq.headers import ERROR_HEADER, STAGE_HEADER, headers_for
from s3_events_handler.application.messages import (
    DeadLetter,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.reasons import one_line

log = logging.getLogger(__name__)

# This service's own routing never goes through the shared exchanges (contract §4.5): the
# default exchange delivers to the queue named by the routing key.
_DEFAULT_EXCHANGE = ""
# The stage of a message dead-lettered because its copy could not be encoded.
_REPUBLISH_STAGE = "republish"

# Everything BasicProperties carries: a republished message keeps it all (see `_copy_properties`).
_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)


@dataclass(frozen=True, slots=True)
class Received:
    """An incoming message as the broker delivered it: what a republish copies and the ack names."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes


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


class Settlement:
    """Carries out outcomes on the channel their deliveries came on: confirmed publishes, then ack.

    One per channel, on the thread that owns it: a delivery tag means something
    only on its own channel, and pika is not thread-safe. A publish the broker did
    not confirm raises before the ack, so the delivery stays with the broker.
    """

    def __init__(self, channel: ConfirmingChannel, settings: BrokerSettings) -> None:
        self._channel = channel
        self._settings = settings

    def settle(self, received: Received, outcome: Outcome) -> Settled:
        """Publish what replaces `received`, then ack it; raises, unacked, if any publish failed."""
        settled = self._replace(received, outcome)
        self._channel.basic_ack(delivery_tag=received.delivery_tag)
        return settled

    def give_back(self, received: Received) -> None:
        """Hand `received` back to its queue unsettled (rejected, requeued) for another try."""
        self._channel.basic_reject(delivery_tag=received.delivery_tag, requeue=True)

    def _replace(self, received: Received, outcome: Outcome) -> Settled:
        """Publish whatever takes the delivery's place; each is confirmed before this returns."""
        settings = self._settings
        incoming_correlation_id: str | None = received.properties.correlation_id
        match outcome:
            case Done():
                return Settled(outcome, "-", outcome.correlation_id or incoming_correlation_id)
            case Split():
                queue = settings.incoming_queue
                # The records share these properties: if one copy cannot be encoded, none can.
                properties = _copy_properties(received.properties, settings.user)
                sent = [self._publish(received, queue, body, properties) for body in outcome.bodies]
                instead = [reason for reason in sent if reason is not None]
                if instead:
                    return self._dead_lettered(
                        outcome.facts, instead[0], incoming_correlation_id, len(instead)
                    )
                destination = f"{len(outcome.bodies)} x {queue}"
                return Settled(outcome, destination, incoming_correlation_id)
            case Retry():
                queue = settings.retry_queue(settings.retries.queue_delay(outcome.delay_seconds))
                return self._park(received, outcome, queue)
            case DeadLetter():
                return self._park(received, outcome, settings.dead_letter_queue)
            case _:
                assert_never(outcome)

    def _park(self, received: Received, outcome: Retry | DeadLetter, queue: str) -> Settled:
        """The body unchanged to a retry or dead-letter queue, persistent and never expiring."""
        correlation_id = outcome.correlation_id or received.properties.correlation_id
        properties = _copy_properties(
            received.properties,
            self._settings.user,
            headers=headers_for(outcome, received.properties.headers or {}),
            correlation_id=correlation_id,
            delivery_mode=PERSISTENT,
            expiration=None,
        )
        instead = self._publish(received, queue, received.body, properties)
        if instead is not None:
            return self._dead_lettered(outcome.facts, instead, correlation_id)
        return Settled(outcome, queue, correlation_id)

    def _dead_lettered(
        self, facts: EventFacts, reason: str, correlation_id: str | None, copies: int = 1
    ) -> Settled:
        """The dead letter `_publish` sent instead, as the outcome carried out: its reason
        and stage are the ones an operator finds on it in the queue."""
        stage = _REPUBLISH_STAGE
        outcome = DeadLetter(reason, stage, correlation_id, replace(facts, stage=stage))
        queue = self._settings.dead_letter_queue
        return Settled(outcome, queue if copies == 1 else f"{copies} x {queue}", correlation_id)

    def _publish(
        self, received: Received, queue: str, body: bytes, properties: pika.BasicProperties
    ) -> str | None:
        """Publish confirmed; properties AMQP cannot encode send the message to the dead letters
        instead, and the dead letter's reason is returned.

        pika decodes some header values it cannot encode again (floats from other
        clients, say); retrying such a message would loop forever.
        """
        try:
            publish_confirmed(self._channel, _DEFAULT_EXCHANGE, queue, body, properties)
            return None
        except UNENCODABLE as error:
            reason = describe(error)
            log.error(
                "message %d cannot be republished as it is: %s", received.delivery_tag, reason
            )
            verdict = one_line(f"properties AMQP cannot encode: {reason}")
            headers = {ERROR_HEADER: verdict, STAGE_HEADER: _REPUBLISH_STAGE}
            bare = pika.BasicProperties(headers=headers, delivery_mode=PERSISTENT)
            dead_letters = self._settings.dead_letter_queue
            publish_confirmed(self._channel, _DEFAULT_EXCHANGE, dead_letters, body, bare)
            return verdict


def _copy_properties(
    original: pika.BasicProperties, user: str, **changes: Any
) -> pika.BasicProperties:
    """The original's properties with `changes` applied.

    A `user_id` other than ours is dropped: the broker refuses a publish whose
    user_id is not the connection's user, and the message could never move on.
    """
    values = {name: getattr(original, name, None) for name in _PROPERTY_NAMES}
    if values["user_id"] != user:
        values["user_id"] = None
    values.update(changes)
    return pika.BasicProperties(**values)
