"""The consumer: pika's threaded pattern, plus what the contract asks of it (contract §6).

The thread that calls `run()` is the I/O thread: it owns the connection, consumes,
and reconnects whenever the broker goes away. Each delivery goes to a worker
(`dispatch.py`: one at a time per object); the worker runs the handler, then hands
the settlement back with `add_callback_threadsafe` of the connection the delivery
came on (`io_thread.call_on_io_thread`) and waits for it: confirmed republishes,
then the ack (`settlement.py`). A connection that closed never runs what was handed
to it, so an outcome is never acked on another channel.

Only a lost channel or connection ends a connection's loop. Anything else that goes wrong
with one message (a handler that raised, a republish the broker refused) is that message's
transient failure: it costs no reconnect, and the other messages in hand keep their outcomes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings, describe
from s3_events_handler.adapters.rabbitmq.dispatch import Job, Work, Workers
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.application.messages import Delivery, Outcome
from s3_events_handler.application.ordering import Unordered
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.application.telemetry import EventReport, System, Telemetry

log = logging.getLogger(__name__)


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer (e.g. the queue was deleted): start over."""


def _unordered(body: bytes) -> Hashable:
    """No message waits for another: for handlers that order nothing."""
    return Unordered()


class _Backoff:
    """The reconnect delays: a step further for each connection lost (or not made), back to the
    first only once a message settled since the last loss (the connection works again). A
    connection that merely opens is no reset: one lost again and again before anything settles
    backs off further each time."""

    def __init__(self, delays: Sequence[float]) -> None:
        if not delays:
            raise ValueError("reconnect_delays needs at least one delay")
        self._delays = tuple(delays)
        self._steps = 0
        self._settled_then = 0

    def next(self, settled: int) -> float:
        """The delay before the next attempt, `settled` messages having settled so far."""
        if settled > self._settled_then:
            self._steps = 0
        self._settled_then = settled
        delay = self._delays[min(self._steps, len(self._delays) - 1)]
        self._steps += 1
        return delay


class Consumer:
    """Consumes the incoming queue until stopped; survives the broker going away.

    Every message ends acked after its outcome was carried out (republishes
    confirmed first), or unacked when anything went wrong, for the broker to
    redeliver (contract §6). Up to `concurrency` messages are handled at once; messages
    with the same `ordering_key` one at a time, in the order they arrived.
    """

    def __init__(
        self,
        connection: BrokerConnection,
        settings: BrokerSettings,
        handler: Callable[[Delivery], Outcome],
        *,
        concurrency: int = 1,
        ordering_key: Callable[[bytes], Hashable] = _unordered,
        retries: RetrySchedule | None = None,
        reconnect_delays: Sequence[float] = (1, 2, 5, 10, 30),
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.2,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._ordering_key = ordering_key
        self._retries = retries or settings.retries
        """For a message whose handler raised, or whose outcome the broker refused."""
        self._telemetry = telemetry or Telemetry()
        self._backoff = _Backoff(reconnect_delays)
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._stopping = False
        """Set once by `stop()`; read by the I/O thread and by each worker before it starts."""
        self._stop_requested_at = 0.0
        self._work = Work(
            handler,
            self._retries,
            stopping=lambda: self._stopping,
            settled=partial(_account, self._telemetry),
        )
        self._workers = Workers(self._work, size=concurrency)
        self.ready = threading.Event()
        """Set once consuming; cleared when the connection is lost."""
        self.connects = 0
        """Successful connections so far; more than one means the consumer reconnected."""

    def stop(self) -> None:
        """Ask `run()` to finish, and start no message from now on; only sets flags (and tells
        telemetry), so it is safe in a signal handler."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
            self._stopping = True
            self._telemetry.stopping()

    @property
    def messages_handled(self) -> int:
        """Messages whose outcome was carried out and acked."""
        return self._work.messages_handled

    @property
    def in_hand(self) -> int:
        """Messages being handled, or handled and not settled yet; safe to read from any thread."""
        return len(self._workers.in_hand())

    def run(self, grace_seconds: float | None = None) -> None:
        """Consume until `stop()`; then finish the messages in hand within `grace_seconds`.

        Past the grace the connection is closed without acking: the broker redelivers.
        Broker trouble never ends this: it reconnects with backoff.
        """
        try:
            while not self._stopping:
                opened = False
                try:
                    self._connection.open()
                    opened = True
                    self.connects += 1
                    self._consume(grace_seconds)
                    return
                except Exception as error:
                    self.ready.clear()
                    self._telemetry.disconnected()
                    self._connection.close()
                    _log_failure(error, self._settings.password, self._telemetry)
                    if opened:
                        self._let_go_of_the_lost_channel()
                if self._stopping:
                    self._finish_in_hand(grace_seconds)
                    break
                delay = self._backoff.next(self.messages_handled)
                log.warning("reconnecting to the broker in %s s", delay)
                self._sleep_unless_stopped(delay)
        finally:
            self.ready.clear()
            self._telemetry.disconnected()
            self._connection.close()
            self._workers.shutdown()
            log.info("consumer stopped after %d messages", self.messages_handled)

    def _consume(self, grace_seconds: float | None) -> None:
        """The I/O thread's loop on one connection: pump, hand back held messages, stop."""
        settings = self._settings
        channel = self._connection.channel
        settlement = Settlement(channel, settings, self._retries)
        cancelled_by_broker: list[Any] = []
        channel.add_on_cancel_callback(cancelled_by_broker.append)
        consumer_tag = channel.basic_consume(
            queue=settings.incoming_queue,
            on_message_callback=partial(self._on_message, settlement),
            auto_ack=False,
        )
        self.ready.set()
        self._telemetry.connected()
        log.info(
            "consuming from %s (prefetch %d, %d workers)",
            settings.incoming_queue,
            settings.prefetch,
            self._workers.size,
        )
        cancelled = False
        while True:
            self._telemetry.loop_tick()
            if self._stopping and not cancelled:
                # No new deliveries; the ones received but not started go back at once.
                channel.basic_cancel(consumer_tag)
                for job in self._workers.take_unstarted():
                    job.settlement.give_back(job.received)
                cancelled = True
            # Stopping, each held message goes back at once: nothing more will be handled.
            settlement.hand_back_held(due_by=float("inf") if cancelled else time.monotonic())
            if cancelled and self._stopped(grace_seconds):
                return
            if cancelled_by_broker:
                raise _ConsumerCancelled(
                    f"the broker cancelled consuming {settings.incoming_queue}"
                )
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the channel closed")
            self._connection.process_data_events(self._poll_interval)

    def _on_message(
        self, settlement: Settlement, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        received = Received(method.delivery_tag, properties, body)
        self._workers.submit(Job(received, self._ordering_key(body), channel, settlement))

    def _stopped(self, grace_seconds: float | None) -> bool:
        """Stopping: whether the loop may end, all in hand settled or the grace run out."""
        in_hand = self._workers.in_hand()
        if not in_hand:
            log.info("stopped consuming; closing the broker connection")
            return True
        if self._grace_expired(grace_seconds):
            log.warning(
                "messages %s not finished %s s after stop; left unacked for redelivery",
                _tags(in_hand),
                grace_seconds,
            )
            return True
        return False

    def _grace_expired(self, grace_seconds: float | None) -> bool:
        if grace_seconds is None:
            return False
        return time.monotonic() - self._stop_requested_at >= grace_seconds

    def _let_go_of_the_lost_channel(self) -> None:
        """The channel is gone, and with it the meaning of its delivery tags.

        The messages not started are dropped; those in a handler go on, but what they hand
        back is never run (their connection is closed), and a redelivered copy waits for
        its stale one, as they share a key. The broker redelivers them all.
        """
        self._workers.take_unstarted()
        in_hand = self._workers.in_hand()
        if in_hand:
            log.warning(
                "waiting for messages %s of the lost channel before their redelivered copies "
                "start; their outcomes are dropped, the broker redelivers them",
                _tags(in_hand),
            )

    def _finish_in_hand(self, grace_seconds: float | None) -> None:
        """Stopping without a connection: let the handlers in hand end, within the grace."""
        while not self._stopped(grace_seconds):
            self._telemetry.loop_tick()
            time.sleep(self._poll_interval)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        left = seconds
        while left > 0 and not self._stopping:
            self._telemetry.loop_tick()
            step = min(left, 0.25)
            self._sleep(step)
            left -= step


def _log_failure(error: Exception, secret: str, telemetry: Telemetry) -> None:
    """Why a connection's loop ended: the broker (counted as its error), or a bug."""
    text = describe(error, secret)
    if isinstance(error, (pika.exceptions.AMQPError, OSError, _ConsumerCancelled)):
        telemetry.downstream_error(System.BROKER)
        log.warning("broker connection lost: %s", text)
    else:
        log.error("consumer failed, starting over: %s", text, exc_info=error)


def _account(telemetry: Telemetry, job: Job, settled: Settled, started: float) -> None:
    """A settled event's metrics and its one log line."""
    seconds = time.monotonic() - started
    report = EventReport.of(settled.outcome, correlation_id=settled.correlation_id, seconds=seconds)
    telemetry.event_finished(report)
    # The event's one INFO line (contract §7), its facts as fields. The fault suite parses
    # the message too: keep its shape and this logger.
    log.info(
        "%s: message %d (correlation id %s) -> %s",
        settled.kind,
        job.delivery_tag,
        settled.correlation_id,
        settled.destination,
        extra=with_fields(report.log_fields()),
    )


def _tags(jobs: Sequence[Job]) -> str:
    return ", ".join(str(job.delivery_tag) for job in jobs)
