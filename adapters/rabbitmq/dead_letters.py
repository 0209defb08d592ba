"""The dead-letter queue `{S3_EVENTS_QUEUE}.dead-letter`: read it without taking anything, and
replay from it without losing or doubling anything.

Reading takes each message without an ack and then hands them all back with one nack
(requeue): RabbitMQ puts requeued messages back where they were, so the queue keeps its
order, and a reader that dies half-way loses nothing, as the broker requeues whatever an
unacked channel held.

Replaying moves one dead letter at a time inside an AMQP transaction: the copy published to
the incoming queue and the ack of the dead letter are committed together (`tx.commit`). A
replay killed before a commit leaves neither (the broker drops the uncommitted publish and
requeues the dead letter); killed after it, both. So an interrupted replay loses and doubles
nothing, and running it again finishes the job. Publisher confirms cannot promise that:
confirm-then-ack leaves a moment, between the confirm and the ack, in which a crash leaves
the event in both queues; a marker header would only let a later reader notice the double,
from a queue the consumer is busy emptying.

What the transaction does not cover: RabbitMQ keeps a transaction that spans two queues
atomic when a client or connection dies, not when the broker itself crashes in the middle of
the commit; and a copy routed nowhere (the incoming queue deleted during the replay) is
dropped at the commit with the ack. The replay checks the incoming queue exists before it
starts, and stops, naming the dead letter, if the broker ever returns a copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pika.exceptions import ProtocolSyntaxError, ShortStringTooLong

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings, connect, describe
from s3_events_handler.adapters.rabbitmq.inspection import Connect, broker_session, queue_depth
from s3_events_handler.application.handler import (
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    STAGE_HEADER,
)
from s3_events_handler.application.replay import replay_headers

# Hex digits of the id made for a dead letter without a message_id: plenty for one queue.
SHORT_ID_LENGTH = 12
# Of a body that could not be replayed and is no longer queued: an event is about 1 kB.
MAX_BODY_SHOWN = 4000
# What pika raises, before anything is sent, for properties it cannot encode again.
_UNENCODABLE = (ProtocolSyntaxError, ShortStringTooLong, UnicodeEncodeError, struct.error)


@dataclass(frozen=True)
class ParkedMessage:
    """One dead letter as found in the queue, with the id an operator chooses it by."""

    id: str
    body: bytes
    headers: Mapping[str, Any]
    properties: Any = field(repr=False)

    @property
    def reason(self) -> str | None:
        return _text(self.headers.get(ERROR_HEADER))

    @property
    def stage(self) -> str | None:
        return _text(self.headers.get(STAGE_HEADER))

    @property
    def dead_lettered_at(self) -> datetime | None:
        """When it was dead-lettered (`x-dead-lettered-at`). Older dead letters do not say:
        then when the broker last moved it (`x-death`), else its `timestamp` property."""
        stamped = _text(self.headers.get(DEAD_LETTERED_AT_HEADER))
        if stamped:
            try:
                return datetime.fromisoformat(stamped)
            except ValueError:
                pass
        deaths = self.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            moved = deaths[0].get("time")
            if isinstance(moved, datetime):
                return moved if moved.tzinfo else moved.replace(tzinfo=UTC)
        timestamp = self.properties.timestamp
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            return datetime.fromtimestamp(timestamp, UTC)
        return None


@dataclass
class ReplayTally:
    """How a replay went; dead letters not replayed are still in the dead-letter queue."""

    replayed: int = 0
    not_chosen: int = 0
    unpublishable: list[tuple[ParkedMessage, str]] = field(default_factory=list)


class ReplayStopped(Exception):
    """The broker returned a replayed copy (routed to no queue); the replay stopped there."""


class DeadLetterQueue:
    """The dead-letter queue of `settings`, on a connection of its own that declares nothing."""

    def __init__(self, settings: BrokerSettings, *, open_connection: Connect = connect) -> None:
        self._settings = settings
        self._open_connection = open_connection

    @property
    def name(self) -> str:
        return self._settings.dead_letter_queue

    def browse(self) -> list[ParkedMessage]:
        """Every dead letter there now, head first; all are still there afterwards, in order."""
        with broker_session(self._settings, self._open_connection) as connection:
            channel = connection.channel()
            taken = list(self._each(channel, queue_depth(channel, self.name)))
            if taken:
                channel.basic_nack(delivery_tag=taken[-1][0], multiple=True, requeue=True)
        return [message for _tag, message in taken]

    def replay(
        self,
        chosen: Callable[[ParkedMessage], bool],
        on_replayed: Callable[[ParkedMessage], None],
    ) -> ReplayTally:
        """Move each dead letter `chosen` picks back to the incoming queue, in queue order.

        Each move is one transaction (see the module's docstring); `on_replayed` hears of it
        once committed. Dead letters not moved keep their place in the queue.
        """
        settings = self._settings
        incoming = settings.incoming_queue
        tally = ReplayTally()
        with broker_session(settings, self._open_connection) as connection:
            channel = connection.channel()
            queue_depth(channel, incoming)  # a copy routed nowhere would be lost at the commit
            depth = queue_depth(channel, self.name)
            channel.tx_select()
            returned: list[bytes] = []
            channel.add_on_return_callback(lambda _ch, _method, _props, body: returned.append(body))
            kept_tag: int | None = None
            for tag, message in self._each(channel, depth):
                if not chosen(message):
                    tally.not_chosen += 1
                    kept_tag = tag
                    continue
                refusal = _publish_copy(channel, incoming, message, settings.user)
                if refusal is not None:
                    tally.unpublishable.append((message, refusal))
                    kept_tag = tag
                    continue
                self._commit_move(connection, channel, tag, message, returned)
                tally.replayed += 1
                on_replayed(message)
            if kept_tag is not None:
                channel.basic_nack(delivery_tag=kept_tag, multiple=True, requeue=True)
                channel.tx_commit()
        return tally

    def _commit_move(
        self, connection: Any, channel: Any, tag: int, message: ParkedMessage, returned: list[bytes]
    ) -> None:
        """Ack the dead letter whose copy is published, and commit both at once."""
        channel.basic_ack(delivery_tag=tag)
        channel.tx_commit()
        connection.process_data_events(time_limit=0)  # hear of a returned copy now
        if returned:
            body = message.body.decode("utf-8", "replace")[:MAX_BODY_SHOWN]
            raise ReplayStopped(
                f"the broker routed the copy of dead letter {message.id} to no queue "
                f"({self._settings.incoming_queue} deleted?) as its ack was committed: it is "
                f"in neither queue now; its body, to publish again: {body}"
            )

    def _each(self, channel: Any, depth: int) -> Iterator[tuple[int, ParkedMessage]]:
        """Up to `depth` messages from the head, unacked, as (delivery tag, message), each
        taken only when the caller asks for it. Only as many as were there at the start: what
        is dead-lettered meanwhile waits for the next run."""
        for _ in range(depth):
            method, properties, body = channel.basic_get(queue=self.name, auto_ack=False)
            if method is None:
                return
            yield method.delivery_tag, _parked(properties, body or b"")


def _publish_copy(channel: Any, queue: str, message: ParkedMessage, user: str) -> str | None:
    """Publish the replay copy of `message` (mandatory, in the open transaction): None, or why
    pika refused to encode its properties again (before sending anything)."""
    properties = _replay_properties(message.properties, user)
    try:
        channel.basic_publish("", queue, message.body, properties, mandatory=True)
    except _UNENCODABLE as error:
        return describe(error)
    return None


def _parked(properties: Any, body: bytes) -> ParkedMessage:
    headers = dict(properties.headers or {})
    return ParkedMessage(
        id=_id_of(properties, body, headers), body=body, headers=headers, properties=properties
    )


def _id_of(properties: Any, body: bytes, headers: Mapping[str, Any]) -> str:
    """The message_id when it has one; else a short hash of body and headers, the same at
    every look as long as the dead letter is not changed."""
    if properties.message_id:
        return str(properties.message_id)
    digest = hashlib.sha256(body)
    digest.update(json.dumps(headers, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:SHORT_ID_LENGTH]


def _replay_properties(original: Any, user: str) -> Any:
    """The dead letter's properties, headers as a fresh start (`replay_headers`).

    A `user_id` other than ours is dropped: the broker refuses a publish whose user_id is
    not the connection's user.
    """
    properties = copy.copy(original)
    properties.headers = replay_headers(original.headers or {})
    if properties.user_id != user:
        properties.user_id = None
    return properties


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


__all__ = ["DeadLetterQueue", "ParkedMessage", "ReplayStopped", "ReplayTally"]
