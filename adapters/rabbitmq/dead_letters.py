"""The dead-letter queue `{S3_EVENTS_QUEUE}.dead-letter`: read, replayed from and dropped from
without losing or doubling anything, however long it is (docs/operations.md, "The dead-letter
queue while a command reads it", says how and why).

Every command is one pass over the dead letters there when it starts, through an exclusive
consumer (a second command is refused rather than reading beside it), holding at most a window
unacked: what it keeps goes back with one nack at the end, or, past the window, is published
again to the tail and acked, a window to an AMQP transaction, until all have come round. Each
removal is a transaction of its own: for a replay, the copy and the ack commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import (
    UNENCODABLE,
    BrokerSettings,
    connect,
    copy_properties,
)
from s3_events_handler.adapters.rabbitmq.dead_letter_model import (
    QueueBusy,
    ReplayStopped,
    Tally,
    dead_letter_id,
)
from s3_events_handler.adapters.rabbitmq.headers import replay_headers
from s3_events_handler.adapters.rabbitmq.inspection import Connect, broker_session, queue_depth
from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.domain.errors import ServiceUnavailable

# Dead letters unacked at once: it bounds the dip in the queue's ready count (two windows)
# and the bodies in hand, while a commit per window (not per message) keeps a rotation fast.
WINDOW = 100
# Bodies held before what is held is rotated, however few the messages.
WINDOW_BYTES = 8 * 1024 * 1024
# No delivery for this long while dead letters there at the start are still to come: the
# queue holds fewer than it did (something else took some).
QUIET_SECONDS = 30.0
# Of a body that could not be replayed and is no longer queued: an event is about 1 kB.
MAX_BODY_SHOWN = 4000
ACCESS_REFUSED = 403

Chosen = Callable[[Received], bool]
Heard = Callable[[Received], None]
Removal = Literal["replay", "drop"] | None


def _never() -> bool:
    return False


class DeadLetterQueue:
    """The dead-letter queue of `settings`, on a connection of its own that declares nothing.

    `browse`, `replay` and `drop` are each one pass: `chosen` is asked of each dead letter,
    head first, until `enough` says so, and `then` hears of each one chosen (of a removal,
    once it is committed). Dead letters not removed keep their order.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        open_connection: Connect = connect,
        window: int = WINDOW,
    ) -> None:
        self._settings = settings
        self._open_connection = open_connection
        self._window = window

    @property
    def name(self) -> str:
        return self._settings.dead_letter_queue

    @property
    def incoming_queue(self) -> str:
        """Where a replay sends the dead letters back to."""
        return self._settings.incoming_queue

    def depth(self) -> int:
        """Ready dead letters now; raises `QueueMissing` without the queue."""
        with broker_session(self._settings, self._open_connection) as connection:
            return queue_depth(connection.channel(), self.name)

    def browse(self, chosen: Chosen, then: Heard, *, enough: Callable[[], bool] = _never) -> Tally:
        """Every dead letter stays, in its place."""
        return self._pass(chosen, then, enough, None)

    def replay(self, chosen: Chosen, then: Heard, *, enough: Callable[[], bool] = _never) -> Tally:
        """Each chosen one moves back to the incoming queue: its copy and its ack committed
        together."""
        return self._pass(chosen, then, enough, "replay")

    def drop(self, chosen: Chosen, then: Heard, *, enough: Callable[[], bool] = _never) -> Tally:
        """Each chosen one is removed for good, its ack a transaction of its own."""
        return self._pass(chosen, then, enough, "drop")

    def _pass(
        self, chosen: Chosen, then: Heard, enough: Callable[[], bool], removal: Removal
    ) -> Tally:
        with broker_session(self._settings, self._open_connection) as connection:
            channel = connection.channel()
            if removal == "replay":  # a copy routed nowhere would be lost at the commit
                queue_depth(channel, self.incoming_queue)
            there = queue_depth(channel, self.name)
            walk = _Pass(connection, channel, self._settings, removal, self._window)
            return walk.run(there, chosen, then, enough)


class _Pass:
    """One pass over the dead letters there at the start, on a channel in transaction mode."""

    def __init__(
        self, connection: Any, channel: Any, settings: BrokerSettings, removal: Removal, window: int
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._settings = settings
        self._queue = settings.dead_letter_queue
        self._removal = removal
        self._window = window
        self._held: list[Received] = []  # read, kept, unacked, in place
        self._rotating = False
        self._returned: list[bytes] = []
        self.tally = Tally()

    def run(self, there: int, chosen: Chosen, then: Heard, enough: Callable[[], bool]) -> Tally:
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
        for read in range(there):  # the count, not an id come round: ids are not unique
            looking = not enough()
            if not looking and not self._rotating:
                break  # nothing rotated yet: what is held goes back in place at the end
            message = next(deliveries, None)
            if message is None:
                self.tally.short = True
                break
            self.tally.looked_at += looking
            picked = looking and chosen(message)
            if picked and self._removal is None:
                then(message)
            # Once rotating, every dead letter there at the start comes round.
            more = read + 1 < there and (self._rotating or not enough())
            if picked and self._removal is not None:
                self._remove(message, then, more=more)
            else:
                self._keep(message, more=more)
        self._finish()
        return self.tally

    def _keep(self, message: Received, *, more: bool) -> None:
        """Hold `message` in place, unacked; once a window is held (or `WINDOW_BYTES`) and
        more is to be read, the pass rotates what it holds, and from then on to the end."""
        self._held.append(message)
        held_bytes = sum(len(held.body) for held in self._held)
        if more and (len(self._held) >= self._window or held_bytes >= WINDOW_BYTES):
            self._rotating = True
            self._rotate_held()

    def _rotate_held(self) -> None:
        """Publish each held message again to the tail and ack it, in one transaction. One
        pika cannot encode again stays unacked to the end (handed back to the head), and the
        window widens by one so that the pass goes on."""
        for message in self._held:
            refusal = self._publish(self._queue, message, message.properties.headers)
            if refusal is None:
                self._channel.basic_ack(delivery_tag=message.delivery_tag)
                continue
            self.tally.out_of_place.append((dead_letter_id(message), refusal))
            self._channel.basic_qos(prefetch_count=self._window + len(self.tally.out_of_place))
        self._held = []
        self._commit()

    def _remove(self, message: Received, then: Heard, *, more: bool) -> None:
        replaying = self._removal == "replay"
        if replaying:
            incoming = self._settings.incoming_queue
            refusal = self._publish(incoming, message, replay_headers(message.headers))
            if refusal is not None:
                self.tally.unpublishable.append((dead_letter_id(message), refusal))
                self._keep(message, more=more)
                return
        self._channel.basic_ack(delivery_tag=message.delivery_tag)
        self._commit(replayed=message if replaying else None)
        self.tally.removed += 1
        then(message)

    def _publish(
        self, queue: str, message: Received, headers: Mapping[str, Any] | None
    ) -> str | None:
        """Publish a copy of `message` to `queue`, mandatory, in the open transaction: None,
        or why pika refused to encode it (before sending anything)."""
        properties = copy_properties(message.properties, self._settings.user, headers=headers)
        try:
            self._channel.basic_publish("", queue, message.body, properties, mandatory=True)
        except UNENCODABLE as error:
            return reason_of(error)
        return None

    def _commit(self, replayed: Received | None = None) -> None:
        """Commit; raise if the broker returned a copy (routed to no queue)."""
        self._channel.tx_commit()
        self._connection.process_data_events(time_limit=0)  # hear of a returned copy now
        if not self._returned:
            return
        if replayed is not None:
            body = replayed.body.decode("utf-8", "replace")[:MAX_BODY_SHOWN]
            raise ReplayStopped(
                f"the broker routed the copy of dead letter {dead_letter_id(replayed)} to no queue "
                f"({self._settings.incoming_queue} deleted?) as its ack was committed: it is "
                f"in neither queue now; its body, to publish again: {body}"
            )
        raise ServiceUnavailable(
            f"the broker routed a rotated dead letter to no queue: {self._queue} was "
            "deleted during the pass"
        )

    def _finish(self) -> None:
        """Commit the last rotations, stop consuming, and hand back what is still held: each
        returns to its own place."""
        if self._rotating and self._held:
            self._rotate_held()
        self._channel.cancel()
        self._channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        self._channel.tx_commit()


def _deliveries(channel: Any, queue: str) -> Iterator[Received]:
    """`queue`'s messages as an exclusive consumer gets them; ends early when none comes for
    `QUIET_SECONDS`."""
    try:
        for method, properties, body in channel.consume(
            queue, exclusive=True, inactivity_timeout=QUIET_SECONDS
        ):
            if method is None:
                return
            yield Received(method.delivery_tag, properties, body or b"")
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == ACCESS_REFUSED and "exclusive" in str(error.reply_text):
            raise QueueBusy(
                f"{queue} has a consumer already (another dead-letters command?): run one at a time"
            ) from None
        raise
    raise ServiceUnavailable(f"the broker ended the reading of {queue} (queue deleted?)")
