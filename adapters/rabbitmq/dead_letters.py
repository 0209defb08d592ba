"""The dead-letter queue `{S3_EVENTS_QUEUE}.dead-letter`: read it without taking anything,
replay from it and drop from it without losing or doubling anything, however long it is.

**One pass.** Every command (list, show, replay, drop) is one pass over the dead letters
there when it starts (the queue's ready count then), head first, each handed to the caller
as it arrives and forgotten once dealt with: the client's memory does not grow with the
queue. What is dead-lettered meanwhile waits for the next run. How a pass keeps every
message in its place with at most a window unacked: `dead_letter_pass`.

The pass reads with a consumer, not `basic.get`: an *exclusive* consumer, so a second
dead-letters command on the same queue is refused (ACCESS_REFUSED, "in exclusive use")
instead of reading beside this one, where each would see a part and "there at the start"
would no longer say which messages are ours to read. The consumer service never reads this
queue, so an exclusive consumer takes nothing from it.

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

from collections.abc import Callable

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings, connect
from s3_events_handler.adapters.rabbitmq.dead_letter_model import ParkedMessage, Tally
from s3_events_handler.adapters.rabbitmq.dead_letter_pass import DeadLetterPass
from s3_events_handler.adapters.rabbitmq.inspection import Connect, broker_session, queue_depth

# Dead letters unacked at once (`dead_letter_pass`).
WINDOW = 100


class DeadLetterQueue:
    """The dead-letter queue of `settings`, on a connection of its own that declares nothing.

    `window` bounds what a pass holds unacked (`dead_letter_pass`).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        open_connection: Connect = connect,
        window: int = WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError("a window holds at least one message")
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

    def browse(self, each: Callable[[ParkedMessage], bool]) -> Tally:
        """Hand `each` every dead letter there now, head first, as it is read, until it
        answers False (it wants no more). All are still there afterwards, in their order."""
        wants_more = True

        def look(message: ParkedMessage) -> bool:
            nonlocal wants_more
            wants_more = each(message)
            return False  # taken by none

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
        return self._pass(chosen, enough=enough, on_removed=on_replayed, replaying=True)

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
        return self._pass(chosen, enough=enough, on_removed=on_dropped)

    def _pass(
        self,
        chosen: Callable[[ParkedMessage], bool],
        *,
        enough: Callable[[], bool],
        on_removed: Callable[[ParkedMessage], None] = lambda message: None,
        replaying: bool = False,
    ) -> Tally:
        with broker_session(self._settings, self._open_connection) as connection:
            channel = connection.channel()
            if replaying:  # a copy routed nowhere would be lost at the commit
                queue_depth(channel, self.incoming_queue)
            there = queue_depth(channel, self.name)
            walk = DeadLetterPass(
                connection, channel, self._settings, replaying=replaying, window=self._window
            )
            return walk.run(there, chosen, enough, on_removed)
