"""Settling a delivery: the confirmed publishes that take its place, then its ack (contract §2, §6;
docs/reliability.md, "Acks come last" and "One message's failure is its own").

On a channel in confirm mode `basic_publish` returns once the broker confirmed; published
mandatory, a message that reaches no queue raises UnroutableError instead of being
confirmed and dropped; one the broker refuses, NackError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, assert_never

import pika

from s3_events_handler.adapters.rabbitmq.connection import (
    PERSISTENT,
    REFUSED,
    UNENCODABLE,
    BrokerSettings,
    connection_lost,
    copy_properties,
    declare_topology,
)
from s3_events_handler.adapters.rabbitmq.headers import (
    ERROR_HEADER,
    STAGE_HEADER,
    attempt_of,
    delivery_of,
    headers_for,
)
from s3_events_handler.application.messages import (
    DeadLetter,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.reasons import one_line, reason_of
from s3_events_handler.application.retries import retry_instead

log = logging.getLogger(__name__)

# The longest a message no queue takes is held before it goes back to the queue: well
# within the broker's delivery acknowledgement timeout (`consumer_timeout`, 30 min).
_LONGEST_HOLD_SECONDS = 300

# This service's own routing never goes through the shared exchanges (contract §4.5): the
# default exchange delivers to the queue named by the routing key.
_DEFAULT_EXCHANGE = ""
# The stage of a message dead-lettered because its copy could not be encoded.
_REPUBLISH_STAGE = "republish"


@dataclass(frozen=True, slots=True)
class Received:
    """A message as the broker delivered it (an event, or a dead letter a command reads): what
    a republish copies and the ack names."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}


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
    """Carries out outcomes on the channel their deliveries came on, as a delivery tag means
    something only there: confirmed publishes, then the ack. One per channel, on its thread;
    the messages it holds back unacked go with the channel."""

    def __init__(self, channel: Any, settings: BrokerSettings) -> None:
        self.channel = channel
        """The channel it settles on; `channel.connection` is the way back to its I/O thread."""
        self._settings = settings
        self._held: list[tuple[float, Received]] = []
        """Messages no queue takes, each with when it goes back (`time.monotonic`)."""

    def settle(self, received: Received, outcome: Outcome) -> Settled:
        """Publish what replaces `received`, then ack it; raises, unacked, if any publish failed."""
        settled = self._replace(received, outcome)
        self.channel.basic_ack(delivery_tag=received.delivery_tag)
        return settled

    def give_back(self, received: Received) -> None:
        """Hand `received` back to its queue unsettled (rejected, requeued) for another try."""
        self.channel.basic_reject(delivery_tag=received.delivery_tag, requeue=True)

    def carry_out(self, received: Received, outcome: Outcome) -> Settled | None:
        """Settle `outcome`, or the retry that takes its place if the broker refused it; None
        when no queue took the message at all. Raises only when the channel or the connection
        is gone."""
        try:
            return self._settle_or_retry(received, outcome)
        except Exception as error:
            if connection_lost(error):
                raise
            log.error(
                "message %d could not be settled: %s",
                received.delivery_tag,
                reason_of(error),
                exc_info=None if isinstance(error, REFUSED) else error,  # a bug: show where
            )
        # Held unacked for the backoff of its attempt, then handed back (`hand_back_held`): at
        # once, it would come straight back to be refused again at full speed.
        attempt = attempt_of(received.headers)
        seconds = min(self._settings.retries.delay_after(attempt), _LONGEST_HOLD_SECONDS)
        self._held.append((time.monotonic() + seconds, received))
        log.warning(
            "message %d left unacked: no queue takes it; back to the queue in %d s",
            received.delivery_tag,
            seconds,
        )
        return None

    def hand_back_held(self, *, due_by: float) -> None:
        """Hand the held messages due by `due_by` (`time.monotonic`) back to the queue."""
        due = [received for at, received in self._held if at <= due_by]
        self._held = [(at, received) for at, received in self._held if at > due_by]
        for received in due:
            self.give_back(received)

    def _settle_or_retry(self, received: Received, outcome: Outcome) -> Settled:
        """A split or a dead letter the broker would not take goes to the retry queue instead."""
        try:
            return self.settle(received, outcome)
        except Exception as error:
            if connection_lost(error):
                raise
            if isinstance(error, pika.exceptions.UnroutableError):
                # No queue of that name: one of ours was deleted under us. Declared again,
                # as a reconnect would, it takes the message when it comes back.
                declare_topology(self.channel, self._settings)
            if not isinstance(outcome, (Split, DeadLetter)):
                raise  # a retry refused has nowhere else to go
            refusal = reason_of(error)
        delivery = delivery_of(received.body, received.properties)
        instead = retry_instead(
            delivery, outcome, f"not settled: {refusal}", self._settings.retries
        )
        log.warning(
            "message %d: its %s was not carried out (%s); retried in %d s instead",
            received.delivery_tag,
            "split" if isinstance(outcome, Split) else "dead letter",
            refusal,
            instead.delay_seconds,
        )
        return self.settle(received, instead)

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
                properties = copy_properties(received.properties, settings.user)
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
        properties = copy_properties(
            received.properties,
            self._settings.user,
            headers=headers_for(outcome, received.headers),
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
        """Publish confirmed; properties AMQP cannot encode (pika decodes some header values it
        cannot encode again, floats from other clients, say) send the message to the dead
        letters instead, for a retry would loop forever: the dead letter's reason is returned."""
        try:
            self.channel.basic_publish(_DEFAULT_EXCHANGE, queue, body, properties, mandatory=True)
            return None
        except UNENCODABLE as error:
            reason = reason_of(error)
            log.error(
                "message %d cannot be republished as it is: %s", received.delivery_tag, reason
            )
            verdict = one_line(f"properties AMQP cannot encode: {reason}")
            headers = {ERROR_HEADER: verdict, STAGE_HEADER: _REPUBLISH_STAGE}
            bare = pika.BasicProperties(headers=headers, delivery_mode=PERSISTENT)
            dead_letters = self._settings.dead_letter_queue
            self.channel.basic_publish(_DEFAULT_EXCHANGE, dead_letters, body, bare, mandatory=True)
            return verdict
