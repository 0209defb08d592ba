"""The dead-letter queue `{S3_EVENTS_QUEUE}.dead-letter`: read it without taking anything,
replay from it and drop from it without losing or doubling anything, however long it is.

**One pass.** Every command (list, show, replay, drop) is one pass over the dead letters
there when it starts (the queue's ready count then), head first, each handed to the caller
as it arrives and forgotten once dealt with: the client's memory does not grow with the
queue. What is dead-lettered meanwhile waits for the next run.

The pass reads with a consumer, not `basic.get`: an *exclusive* consumer, so a second
dead-letters command on the same queue is refused (ACCESS_REFUSED, "in exclusive use")
instead of reading beside this one, where each would see a part and "there at the start"
would no longer say which messages are ours to read. The consumer service never reads this
queue, so an exclusive consumer takes nothing from it.

**At most a window unacked.** RabbitMQ has no browse for a classic queue: a message stays
in place only while it is held unacked, and one handed back (nack with requeue) returns to
the head, to be read again. Holding the whole queue unacked until the end, as this module
once did, leaves it reading 0 ready meanwhile (depth graphs and alerts flap), keeps every
message unacked for as long as the pass takes (RabbitMQ closes a channel holding one longer
than `consumer_timeout`, 30 minutes by default) and does not scale. So the consumer's
prefetch is a window of `window` messages (100), and:

- a pass that ends within the window (a short queue, or `list --limit 10`) holds what it
  read unacked and hands it all back at the end with one nack: each message returns to its
  own place, nothing is rewritten;
- a pass that needs more *rotates*: each dead letter kept is published again, unchanged, to
  the tail of the same queue and acked, in AMQP transactions (`tx.select`) of at most one
  window (and `window_bytes` of bodies). The pass goes on until every message there at the
  start has come round once, also when the caller wanted no more (`--limit`, a closed pipe):
  then the queue holds the same messages in the same order as before. A message removed
  (replayed, dropped) is committed on its own, with the rotations before it.

The pass stops on the count taken at the start, not when the first message's id comes round
again: ids are not unique (the records of one split share the original's message_id, and
two identical dead letters without one share a hash), so a wrap-around seen by id could stop
a pass early. The count is exact as long as nothing else takes messages: with the exclusive
consumer, only the consumer service touches the queue meanwhile, and it only adds to its
tail, behind every message there at the start.

Why a rotation and not the alternatives: a consumer cannot step past a message without
acking it or handing it back to the head; moving the queue through a temporary queue and
back empties the dead-letter queue meanwhile (the depth alert flaps, and a crash leaves the
dead letters in a queue nobody watches); stream queues are another queue type. A rotation
rewrites each message once and never holds more than the window unacked. The queue's ready
count dips by at most two windows while a pass rotates it: one held, and for a moment at
each commit another, as the broker hands out the next window before the committed copies
have reached the queue. Why 100: it bounds that dip and the bodies in hand (with
`window_bytes`, 8 MiB, for the dead letters that were too large to handle), while a commit
per 100 messages (each a disk sync for persistent messages) rotates 3,000 dead letters in
about half a second; a commit per message takes five times as long.

A transaction makes each step all or nothing: killed before a commit, the broker drops the
uncommitted copies and requeues the originals in their places; after it, the copies are at
the tail. So an interrupted pass loses and doubles nothing. What it may leave is a queue
rotated part-way: the same dead letters in the same cyclic order, starting further on (the
`x-dead-lettered-at` header still says when each came). Publisher confirms would leave a
moment, between a confirm and the ack, in which a crash doubles a message.

What a rotation changes: a `user_id` property other than the command's broker user is
dropped (the broker refuses a publish carrying another's), the *redelivered* flag is clear,
and a message with an `expiration` starts its time to live again (the service dead-letters
without one). Headers, body and every other property are kept, so a dead letter's id (its
`message_id`, or a hash of body and headers) stays the same. A message pika cannot encode
again (a header type it decodes but does not write back) cannot be rotated: it is held to
the end and handed back, which puts it at the head of the queue; the pass says which.

What others see meanwhile: the consumer service does not read the dead-letter queue, so it
sees nothing; a dead letter it adds during a rotating pass lands among the rotated ones, at
the point the rotation had reached (the others keep their order). A second dead-letters
command is refused. Only a reader that takes messages with `basic.get` (the management
UI's "Get messages") would upset the count; run none during a pass.

Replaying moves one dead letter at a time inside a transaction: the copy published to the
incoming queue and the ack of the dead letter are committed together (`tx.commit`). A
replay killed before a commit leaves neither (the broker drops the uncommitted publish and
requeues the dead letter); killed after it, both. What the transaction does not cover:
RabbitMQ keeps a transaction that spans two queues atomic when a client or connection dies,
not when the broker itself crashes in the middle of the commit; and a copy routed nowhere
(the incoming queue deleted during the replay) is dropped at the commit with the ack. The
replay checks the incoming queue exists before it starts, and stops, naming the dead letter,
if the broker ever returns a copy.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import (
    UNENCODABLE,
    BrokerSettings,
    connect,
    describe,
)
from s3_events_handler.adapters.rabbitmq.headers import (
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    PID_HEADER,
    STAGE_HEADER,
    replay_headers,
)
from s3_events_handler.adapters.rabbitmq.inspection import Connect, broker_session, queue_depth
from s3_events_handler.domain.errors import ServiceUnavailable

# Hex digits of the id made for a dead letter without a message_id: plenty for one queue.
SHORT_ID_LENGTH = 12
# Of a body that could not be replayed and is no longer queued: an event is about 1 kB.
MAX_BODY_SHOWN = 4000
# Dead letters unacked at once, and bodies in hand before a rotation is committed early.
WINDOW = 100
WINDOW_BYTES = 8 * 1024 * 1024
# No delivery for this long while dead letters there at the start are still to come: the
# queue holds fewer than it did (something else took some).
QUIET_SECONDS = 30.0
ACCESS_REFUSED = 403


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
    def pid(self) -> str | None:
        """The PID minted before it was dead-lettered (`x-pid`), reused by a replay."""
        return _text(self.headers.get(PID_HEADER))

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


class Action(enum.Enum):
    """What a pass does with one dead letter."""

    KEEP = "keep"
    REPLAY = "replay"  # a copy to the incoming queue, the dead letter acked: one transaction
    DROP = "drop"  # acked, in a transaction of its own


@dataclass
class Tally:
    """How a pass went. Dead letters not removed are still in the dead-letter queue."""

    there: int = 0
    """Ready in the queue when the pass started: what it reads at most."""
    looked_at: int = 0
    """Handed to the caller (fewer than `there` when it wanted no more, or some went)."""
    removed: int = 0
    kept: int = 0
    """Looked at and left in the queue by the caller's choice."""
    unpublishable: list[tuple[str, str]] = field(default_factory=list)
    """(id, why) of those chosen for a replay whose copy pika cannot encode: still here."""
    out_of_place: list[tuple[str, str]] = field(default_factory=list)
    """(id, why) of those kept that could not be rotated: handed back to the queue's head."""
    short: bool = False
    """Fewer dead letters came than were there at the start: something else took some."""


class ReplayStopped(Exception):
    """The broker returned a replayed copy (routed to no queue); the replay stopped there."""


class QueueBusy(ServiceUnavailable):
    """The dead-letter queue has a consumer already: another dead-letters command."""


class QueueGone(ServiceUnavailable):
    """The dead-letter queue went away during a pass (deleted): the broker ended it."""


class DeadLetterQueue:
    """The dead-letter queue of `settings`, on a connection of its own that declares nothing.

    `window` and `window_bytes` bound what a pass holds unacked (see the module's docstring).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        open_connection: Connect = connect,
        window: int = WINDOW,
        window_bytes: int = WINDOW_BYTES,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        if window < 1:
            raise ValueError("a window holds at least one message")
        self._settings = settings
        self._open_connection = open_connection
        self._window = window
        self._window_bytes = window_bytes
        self._quiet_seconds = quiet_seconds

    @property
    def name(self) -> str:
        return self._settings.dead_letter_queue

    def depth(self) -> int:
        """Ready dead letters now; raises `QueueMissing` without the queue."""
        with broker_session(self._settings, self._open_connection) as connection:
            return queue_depth(connection.channel(), self.name)

    def browse(self, each: Callable[[ParkedMessage], bool]) -> Tally:
        """Hand `each` every dead letter there now, head first, as it is read, until it
        answers False (it wants no more). All are still there afterwards, in their order."""
        wants_more = True

        def look(message: ParkedMessage) -> Action:
            nonlocal wants_more
            wants_more = each(message)
            return Action.KEEP

        return self._pass(look, enough=lambda: not wants_more)

    def replay(
        self,
        chosen: Callable[[ParkedMessage], bool],
        on_replayed: Callable[[ParkedMessage], None],
        *,
        enough: Callable[[], bool] = lambda: False,
    ) -> Tally:
        """Move each dead letter `chosen` picks back to the incoming queue, in queue order,
        until `enough` says so.

        Each move is one transaction (see the module's docstring); `on_replayed` hears of
        it once committed. Dead letters not moved keep their order in the queue.
        """
        return self._pass(
            lambda message: Action.REPLAY if chosen(message) else Action.KEEP,
            enough=enough,
            on_removed=on_replayed,
            check_incoming=True,
        )

    def drop(
        self,
        chosen: Callable[[ParkedMessage], bool],
        on_dropped: Callable[[ParkedMessage], None],
        *,
        enough: Callable[[], bool] = lambda: False,
    ) -> Tally:
        """Remove each dead letter `chosen` picks for good, until `enough` says so; each
        removal is a transaction of its own, and `on_dropped` hears of it once committed.
        Dead letters not dropped keep their order in the queue."""
        return self._pass(
            lambda message: Action.DROP if chosen(message) else Action.KEEP,
            enough=enough,
            on_removed=on_dropped,
        )

    def _pass(
        self,
        decide: Callable[[ParkedMessage], Action],
        *,
        enough: Callable[[], bool],
        on_removed: Callable[[ParkedMessage], None] = lambda message: None,
        check_incoming: bool = False,
    ) -> Tally:
        with broker_session(self._settings, self._open_connection) as connection:
            channel = connection.channel()
            if check_incoming:  # a copy routed nowhere would be lost at the commit
                queue_depth(channel, self._settings.incoming_queue)
            there = queue_depth(channel, self.name)
            walk = _Pass(
                connection,
                channel,
                self._settings,
                window=self._window,
                window_bytes=self._window_bytes,
                quiet_seconds=self._quiet_seconds,
            )
            return walk.run(there, decide, enough, on_removed)


class _Pass:
    """One pass over the dead letters there at the start, on a channel of its own."""

    def __init__(
        self,
        connection: Any,
        channel: Any,
        settings: BrokerSettings,
        *,
        window: int,
        window_bytes: int,
        quiet_seconds: float,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._settings = settings
        self._queue = settings.dead_letter_queue
        self._window = window
        self._window_bytes = window_bytes
        self._quiet_seconds = quiet_seconds
        self._held: list[tuple[int, ParkedMessage]] = []  # read, kept, unacked, in place
        self._held_bytes = 0
        self._rotating = False
        self._uncommitted = 0  # rotations in the open transaction
        self._uncommitted_bytes = 0
        self._stuck = 0  # kept, unacked to the end: pika cannot publish them again
        self._returned: list[bytes] = []
        self.tally = Tally()

    def run(
        self,
        there: int,
        decide: Callable[[ParkedMessage], Action],
        enough: Callable[[], bool],
        on_removed: Callable[[ParkedMessage], None],
    ) -> Tally:
        self.tally.there = there
        if there == 0:
            return self.tally
        channel = self._channel
        channel.tx_select()
        channel.add_on_return_callback(
            lambda _channel, _method, _properties, body: self._returned.append(body)
        )
        channel.basic_qos(prefetch_count=self._window)
        deliveries = self._deliveries()
        for read in range(there):
            satisfied = enough()
            if satisfied and not self._rotating:
                break  # nothing rotated yet: what is held goes back in place at the end
            taken = next(deliveries, None)
            if taken is None:
                self.tally.short = True
                break
            tag, message = taken
            if satisfied:
                self._keep(tag, message, more=True)
                continue
            self.tally.looked_at += 1
            action = decide(message)
            more = read + 1 < there and not enough()
            if action is Action.KEEP:
                self.tally.kept += 1
                self._keep(tag, message, more=more)
            else:
                self._remove(tag, message, action, more=more, on_removed=on_removed)
        self._finish()
        return self.tally

    def _deliveries(self) -> Iterator[tuple[int, ParkedMessage]]:
        """The queue's messages as an exclusive consumer gets them; ends early when none
        comes for `quiet_seconds`."""
        channel = self._channel
        try:
            for method, properties, body in channel.consume(
                self._queue, exclusive=True, inactivity_timeout=self._quiet_seconds
            ):
                if method is None:
                    return
                yield method.delivery_tag, _parked(properties, body or b"")
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == ACCESS_REFUSED and "exclusive" in str(error.reply_text):
                raise QueueBusy(
                    f"{self._queue} has a consumer already (another dead-letters command?): "
                    "run one at a time"
                ) from None
            raise
        raise QueueGone(f"the broker ended the reading of {self._queue} (queue deleted?)")

    def _keep(self, tag: int, message: ParkedMessage, *, more: bool) -> None:
        """Leave `message` in the queue: held in place while the pass fits the window,
        rotated to the tail once it does not."""
        if self._rotating:
            self._rotate(tag, message)
            return
        self._held.append((tag, message))
        self._held_bytes += len(message.body)
        if more and (len(self._held) >= self._window or self._held_bytes >= self._window_bytes):
            # More is to be read than a window holds: rotate from here to the end.
            self._rotating = True
            held, self._held, self._held_bytes = self._held, [], 0
            for held_tag, held_message in held:
                self._rotate(held_tag, held_message)

    def _rotate(self, tag: int, message: ParkedMessage) -> None:
        """Publish `message` again to the tail of its queue and ack it, in the open
        transaction, committed once a window's worth is in it."""
        properties = copy.copy(message.properties)
        if properties.user_id != self._settings.user:
            properties.user_id = None
        try:
            self._channel.basic_publish("", self._queue, message.body, properties, mandatory=True)
        except UNENCODABLE as error:
            self.tally.out_of_place.append((message.id, describe(error)))
            self._stuck += 1  # unacked to the end: widen the window so the pass goes on
            self._channel.basic_qos(prefetch_count=self._window + self._stuck)
            return
        self._channel.basic_ack(delivery_tag=tag)
        self._uncommitted += 1
        self._uncommitted_bytes += len(message.body)
        if self._uncommitted >= self._window or self._uncommitted_bytes >= self._window_bytes:
            self._commit()

    def _commit(self, replayed: ParkedMessage | None = None) -> None:
        """Commit the open transaction; raise if the broker returned a copy in it (routed
        to no queue: `replayed`'s to the incoming queue, else a rotated one)."""
        self._channel.tx_commit()
        self._uncommitted = self._uncommitted_bytes = 0
        self._connection.process_data_events(time_limit=0)  # hear of a returned copy now
        if not self._returned:
            return
        if replayed is not None:
            body = replayed.body.decode("utf-8", "replace")[:MAX_BODY_SHOWN]
            raise ReplayStopped(
                f"the broker routed the copy of dead letter {replayed.id} to no queue "
                f"({self._settings.incoming_queue} deleted?) as its ack was committed: it is "
                f"in neither queue now; its body, to publish again: {body}"
            )
        raise QueueGone(
            f"the broker routed a rotated dead letter to no queue: {self._queue} was "
            "deleted during the pass"
        )

    def _remove(
        self,
        tag: int,
        message: ParkedMessage,
        action: Action,
        *,
        more: bool,
        on_removed: Callable[[ParkedMessage], None],
    ) -> None:
        """Replay or drop `message`: one commit, with the rotations before it."""
        channel = self._channel
        if action is Action.REPLAY:
            incoming = self._settings.incoming_queue
            refusal = _publish_copy(channel, incoming, message, self._settings.user)
            if refusal is not None:
                self.tally.unpublishable.append((message.id, refusal))
                self._keep(tag, message, more=more)
                return
        channel.basic_ack(delivery_tag=tag)
        self._commit(replayed=message if action is Action.REPLAY else None)
        self.tally.removed += 1
        on_removed(message)

    def _finish(self) -> None:
        """Commit the last rotations, stop consuming, and hand back what is still held
        (the window read in place, the messages that could not be rotated, what the broker
        sent ahead): each returns to its own place."""
        channel = self._channel
        if self._uncommitted:
            self._commit()
        channel.cancel()
        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        channel.tx_commit()


def _publish_copy(channel: Any, queue: str, message: ParkedMessage, user: str) -> str | None:
    """Publish the replay copy of `message` (mandatory, in the open transaction): None, or why
    pika refused to encode its properties again (before sending anything)."""
    properties = _replay_properties(message.properties, user)
    try:
        channel.basic_publish("", queue, message.body, properties, mandatory=True)
    except UNENCODABLE as error:
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


__all__ = [
    "Action",
    "DeadLetterQueue",
    "ParkedMessage",
    "QueueBusy",
    "QueueGone",
    "ReplayStopped",
    "Tally",
]
