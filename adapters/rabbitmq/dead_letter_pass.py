"""One pass over the dead letters there when it starts, holding at most a window unacked.

RabbitMQ has no browse for a classic queue: a message stays in place only while it is held
unacked, and one handed back (nack with requeue) returns to the head, to be read again.
Holding the whole queue unacked until the end leaves it reading 0 ready meanwhile (depth
graphs and alerts flap), keeps every message unacked for as long as the pass takes (RabbitMQ
closes a channel holding one longer than `consumer_timeout`, 30 minutes by default) and does
not scale. So the consumer's prefetch is a window of `window` messages (100), and:

- a pass that ends within the window (a short queue, or `list --limit 10`) holds what it
  read unacked and hands it all back at the end with one nack: each message returns to its
  own place, nothing is rewritten;
- a pass that needs more *rotates*: each dead letter kept is published again, unchanged, to
  the tail of the same queue and acked, in AMQP transactions (`tx.select`) of at most one
  window (and `WINDOW_BYTES` of bodies). The pass goes on until every message there at the
  start has come round once, also when the caller wanted no more (`--limit`, a closed pipe):
  then the queue holds the same messages in the same order as before. A message removed
  (replayed, dropped) is committed on its own.

The pass stops on the count taken at the start, not when the first message's id comes round
again: ids are not unique (the records of one split share the original's message_id, and
two identical dead letters without one share a hash), so a wrap-around seen by id could stop
a pass early. The count is exact as long as nothing else takes messages: the exclusive
consumer keeps other dead-letters commands out, and the consumer service only adds to the
queue's tail, behind every message there at the start.

Why a rotation and not the alternatives: a consumer cannot step past a message without
acking it or handing it back to the head; moving the queue through a temporary queue and
back empties the dead-letter queue meanwhile (the depth alert flaps, and a crash leaves the
dead letters in a queue nobody watches); stream queues are another queue type. A rotation
rewrites each message once and never holds more than the window unacked. The queue's ready
count dips by at most two windows while a pass rotates it: one held, and for a moment at
each commit another, as the broker hands out the next window before the committed copies
have reached the queue. Why 100: it bounds that dip and the bodies in hand (with
`WINDOW_BYTES`, 8 MiB, for the dead letters that were too large to handle), while a commit
per 100 messages (each a disk sync for persistent messages) rotates 3,000 dead letters in
about half a second; a commit per message takes five times as long.

A transaction makes each step all or nothing: killed before a commit, the broker drops the
uncommitted copies and requeues the originals in their places; after it, the copies are at
the tail. So an interrupted pass loses and doubles nothing; it may leave the queue rotated
part-way (the same dead letters in the same cyclic order, starting further on). Publisher
confirms would leave a moment, between a confirm and the ack, in which a crash doubles a
message. What a rotation changes of a message, and what others see meanwhile:
docs/operations.md, "The dead-letter queue while a command reads it".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import (
    UNENCODABLE,
    BrokerSettings,
    copy_properties,
    describe,
)
from s3_events_handler.adapters.rabbitmq.dead_letter_model import (
    ParkedMessage,
    QueueBusy,
    QueueGone,
    ReplayStopped,
    Tally,
)
from s3_events_handler.adapters.rabbitmq.headers import replay_headers

# Of a body that could not be replayed and is no longer queued: an event is about 1 kB.
MAX_BODY_SHOWN = 4000
# Bodies held before what is held is rotated, however few the messages.
WINDOW_BYTES = 8 * 1024 * 1024
# No delivery for this long while dead letters there at the start are still to come: the
# queue holds fewer than it did (something else took some).
QUIET_SECONDS = 30.0
ACCESS_REFUSED = 403


class DeadLetterPass:
    """One pass over the dead letters there at the start, on a channel of its own. Those
    taken are replayed (a copy to the incoming queue and the dead letter's ack in one
    transaction) with `replaying`, else dropped (the ack in a transaction of its own)."""

    def __init__(
        self,
        connection: Any,
        channel: Any,
        settings: BrokerSettings,
        *,
        replaying: bool,
        window: int,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._settings = settings
        self._queue = settings.dead_letter_queue
        self._replaying = replaying
        self._window = window
        self._held: list[tuple[int, ParkedMessage]] = []  # read, kept, unacked, in place
        self._rotating = False
        self._returned: list[bytes] = []
        self.tally = Tally()

    def run(
        self,
        there: int,
        chosen: Callable[[ParkedMessage], bool],
        enough: Callable[[], bool],
        on_removed: Callable[[ParkedMessage], None],
    ) -> Tally:
        """Read the `there` dead letters at the head, removing those `chosen` picks, until
        `enough`; `on_removed` hears of each removal once committed."""
        self.tally.there = there
        if there == 0:
            return self.tally
        channel = self._channel
        channel.tx_select()
        channel.add_on_return_callback(
            lambda _channel, _method, _properties, body: self._returned.append(body)
        )
        channel.basic_qos(prefetch_count=self._window)
        deliveries = _deliveries(channel, self._queue)
        for read in range(there):
            looking = not enough()
            if not looking and not self._rotating:
                break  # nothing rotated yet: what is held goes back in place at the end
            taken = next(deliveries, None)
            if taken is None:
                self.tally.short = True
                break
            tag, message = taken
            self.tally.looked_at += looking
            remove = looking and chosen(message)
            # Once rotating, every dead letter there at the start comes round.
            more = read + 1 < there and (self._rotating or not enough())
            if remove:
                self._remove(tag, message, more=more, on_removed=on_removed)
            else:
                self._keep(tag, message, more=more)
        self._finish()
        return self.tally

    def _keep(self, tag: int, message: ParkedMessage, *, more: bool) -> None:
        """Leave `message` in the queue: held in place, unacked. Once a window's worth is
        held (or `WINDOW_BYTES` of bodies) and more is to be read, the pass rotates: what
        is held is moved to the tail, and so on, a window at a time, to the end."""
        self._held.append((tag, message))
        held_bytes = sum(len(held.body) for _, held in self._held)
        if more and (len(self._held) >= self._window or held_bytes >= WINDOW_BYTES):
            self._rotating = True
            self._rotate_held()

    def _rotate_held(self) -> None:
        """Publish each held message again to the tail of its queue and ack it, in one
        transaction. One pika cannot encode again stays unacked to the end (handed back to
        the head), and the window widens by one so that the pass goes on."""
        for tag, message in self._held:
            refusal = self._publish(self._queue, message, message.properties.headers)
            if refusal is None:
                self._channel.basic_ack(delivery_tag=tag)
                continue
            self.tally.out_of_place.append((message.id, refusal))
            self._channel.basic_qos(prefetch_count=self._window + len(self.tally.out_of_place))
        self._held = []
        self._commit()

    def _remove(
        self,
        tag: int,
        message: ParkedMessage,
        *,
        more: bool,
        on_removed: Callable[[ParkedMessage], None],
    ) -> None:
        """Replay or drop `message` in a transaction of its own."""
        if self._replaying:
            incoming = self._settings.incoming_queue
            refusal = self._publish(incoming, message, replay_headers(message.headers))
            if refusal is not None:
                self.tally.unpublishable.append((message.id, refusal))
                self._keep(tag, message, more=more)
                return
        self._channel.basic_ack(delivery_tag=tag)
        self._commit(replayed=message if self._replaying else None)
        self.tally.removed += 1
        on_removed(message)

    def _publish(
        self, queue: str, message: ParkedMessage, headers: Mapping[str, Any] | None
    ) -> str | None:
        """Publish a copy of `message` with `headers` to `queue` (mandatory, in the open
        transaction; `copy_properties`): None, or why pika refused to encode it (before
        sending anything)."""
        properties = copy_properties(message.properties, self._settings.user, headers=headers)
        try:
            self._channel.basic_publish("", queue, message.body, properties, mandatory=True)
        except UNENCODABLE as error:
            return describe(error)
        return None

    def _commit(self, replayed: ParkedMessage | None = None) -> None:
        """Commit the open transaction; raise if the broker returned a copy in it (routed
        to no queue: `replayed`'s to the incoming queue, else a rotated one)."""
        self._channel.tx_commit()
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

    def _finish(self) -> None:
        """Commit the last rotations, stop consuming, and hand back what is still held
        (the window read in place, the messages that could not be rotated, what the broker
        sent ahead): each returns to its own place."""
        if self._rotating and self._held:
            self._rotate_held()
        self._channel.cancel()
        self._channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        self._channel.tx_commit()


def _deliveries(channel: Any, queue: str) -> Iterator[tuple[int, ParkedMessage]]:
    """`queue`'s messages as an exclusive consumer gets them; ends early when none comes for
    `QUIET_SECONDS`. Another consumer there already is `QueueBusy`; the broker ending the
    reading (the queue deleted) is `QueueGone`."""
    try:
        for method, properties, body in channel.consume(
            queue, exclusive=True, inactivity_timeout=QUIET_SECONDS
        ):
            if method is None:
                return
            yield method.delivery_tag, ParkedMessage.read(properties, body or b"")
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == ACCESS_REFUSED and "exclusive" in str(error.reply_text):
            raise QueueBusy(
                f"{queue} has a consumer already (another dead-letters command?): run one at a time"
            ) from None
        raise
    raise QueueGone(f"the broker ended the reading of {queue} (queue deleted?)")
