"""The dead-letter queue adapter against the real broker: what the CLI's end-to-end tests
cannot arrange from outside."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.adapters.rabbitmq.dead_letter_model import QueueBusy, ReplayStopped
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from s3_events_handler.adapters.rabbitmq.inspection import QueueMissing
from s3_events_handler.adapters.rabbitmq.settlement import Received
from tests.support import amqp


@pytest.fixture
def settings(broker: tuple[str, int]) -> Iterator[BrokerSettings]:
    host, port = broker
    settings = amqp.settings_for(host, port, amqp.unique_prefix("dlq"))
    amqp.declare_service_topology(settings)
    yield settings
    amqp.delete_topology(settings)


def park(settings: BrokerSettings, *bodies: bytes) -> None:
    for body in bodies:
        amqp.publish(
            settings.host,
            settings.port,
            settings.dead_letter_queue,
            body,
            properties=pika.BasicProperties(headers={"x-error": "bad"}, delivery_mode=2),
        )


def test_a_copy_routed_nowhere_stops_the_replay_and_names_the_dead_letter(
    settings: BrokerSettings,
) -> None:
    """The incoming queue deleted under a running replay: the broker returns the copy."""
    park(settings, b"first", b"second")
    queue = DeadLetterQueue(settings)

    def delete_the_incoming_queue_first(message: Received) -> bool:
        amqp.delete_queues(settings.host, settings.port, settings.incoming_queue)
        return True

    with pytest.raises(ReplayStopped, match=r"routed the copy of dead letter [0-9a-f]{12} to no"):
        queue.replay(delete_the_incoming_queue_first, lambda message: None)
    # Stopped at the first: the second is still there.
    left = amqp.peek_messages(settings.host, settings.port, settings.dead_letter_queue)
    assert [m.body for m in left] == [b"second"]


def test_a_replay_into_an_incoming_queue_that_is_not_there_takes_nothing(
    settings: BrokerSettings,
) -> None:
    park(settings, b"first")
    amqp.delete_queues(settings.host, settings.port, settings.incoming_queue)
    with pytest.raises(QueueMissing, match=f"no queue {settings.incoming_queue}"):
        DeadLetterQueue(settings).replay(lambda message: True, lambda message: None)
    left = amqp.peek_messages(settings.host, settings.port, settings.dead_letter_queue)
    assert [m.body for m in left] == [b"first"]


def test_a_second_command_while_one_reads_is_refused_and_the_first_goes_on(
    settings: BrokerSettings,
) -> None:
    park(settings, b"first", b"second", b"third")
    refused: list[str] = []

    def look(message: Received) -> bool:
        if not refused:  # the first is read: another command starts now
            with pytest.raises(QueueBusy, match="has a consumer already") as refusal:
                DeadLetterQueue(settings).drop(lambda message: True, lambda message: None)
            refused.append(str(refusal.value))
        return True

    tally = DeadLetterQueue(settings, window=2).browse(look, lambda message: None)

    assert tally.looked_at == 3 and refused
    left = amqp.peek_messages(settings.host, settings.port, settings.dead_letter_queue)
    assert [m.body for m in left] == [b"first", b"second", b"third"]
