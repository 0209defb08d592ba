"""Looking at the broker without changing it: passive declares on a connection of its own.

The operator commands use this rather than `BrokerConnection`, whose `open()` declares the
whole topology: a check must not create the queue whose absence it is there to report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerSettings,
    cannot_reach,
    connect,
)
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.domain.errors import ServiceUnavailable

NOT_FOUND = 404

Connect = Callable[[BrokerSettings], Any]


class QueueMissing(ServiceUnavailable):
    """A queue the command needs is not on the broker."""


@dataclass(frozen=True)
class Found:
    """A queue or exchange the service uses, as the broker has it (or not)."""

    kind: str  # "queue" or "exchange"
    name: str
    exists: bool
    messages: int = 0
    consumers: int = 0


@contextmanager
def broker_session(settings: BrokerSettings, open_connection: Connect = connect) -> Iterator[Any]:
    """A connection that declares nothing, closed afterwards. Broker trouble, here or in the
    `with` body, comes out as `ServiceUnavailable` naming the broker (`cannot_reach`)."""
    try:
        connection = open_connection(settings)
    except (pika.exceptions.AMQPError, OSError) as error:
        raise ServiceUnavailable(cannot_reach(settings, error)) from None
    try:
        yield connection
    except (pika.exceptions.AMQPError, OSError) as error:
        reason = reason_of(error, [settings.password])
        raise ServiceUnavailable(f"{settings.whereabouts} failed us: {reason}") from None
    finally:
        if connection.is_open:
            connection.close()


def queue_depth(channel: Any, queue: str) -> int:
    """Ready messages in `queue`; raises `QueueMissing` (and the channel is closed) without it."""
    declared = _declared(channel, "queue", queue)
    if declared is None:
        raise QueueMissing(f"no queue {queue} on the broker")
    return int(declared.message_count)


def inspect_topology(settings: BrokerSettings) -> list[Found]:
    """Every queue and exchange the service uses, each looked up with a passive declare.

    A failed passive declare closes its channel, so each lookup has a channel of its own.
    """
    exchanges = [name for name in (settings.incoming_exchange, settings.transfer_exchange) if name]
    wanted = [("queue", name) for name in settings.queues] + [("exchange", n) for n in exchanges]
    with broker_session(settings) as connection:
        return [_look_up(connection.channel(), kind, name) for kind, name in wanted]


def _look_up(channel: Any, kind: str, name: str) -> Found:
    declared = _declared(channel, kind, name)
    if declared is None:
        return Found(kind, name, exists=False)
    channel.close()
    # An exchange's DeclareOk counts nothing.
    messages = int(getattr(declared, "message_count", 0))
    consumers = int(getattr(declared, "consumer_count", 0))
    return Found(kind, name, exists=True, messages=messages, consumers=consumers)


def _declared(channel: Any, kind: str, name: str) -> Any | None:
    """The broker's DeclareOk for the queue or exchange `name`; None, and the channel closed,
    when there is no such thing."""
    declare = channel.queue_declare if kind == "queue" else channel.exchange_declare
    try:
        return declare(name, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != NOT_FOUND:
            raise
        return None
