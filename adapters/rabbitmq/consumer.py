"""The consumer loop: messages handled on worker threads, several at once and one at a time per
object (`dispatch.py`), their outcomes settled on the I/O thread (`settlement.py`), reconnecting
whenever the broker goes away (contract §6).

Only a lost channel or connection ends a connection's loop. Anything else that goes wrong
with one message (a handler that raised, a republish the broker refused) is that message's
transient failure: it costs no reconnect, and the other messages in hand keep their outcomes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerConnection,
    BrokerSettings,
    declare_topology,
    describe,
)
from s3_events_handler.adapters.rabbitmq.dispatch import Dispatcher, Job
from s3_events_handler.adapters.rabbitmq.headers import attempt_of, delivery_of
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.application.messages import DeadLetter, Delivery, Outcome, Split
from s3_events_handler.application.ordering import Unordered
from s3_events_handler.application.retries import RetrySchedule, retry_instead, transient_outcome
from s3_events_handler.application.telemetry import EventReport, NoTelemetry, System, Telemetry

log = logging.getLogger(__name__)

# How often a stop without a connection looks whether the handlers in hand are done.
_FINISH_POLL_SECONDS = 0.05

# The longest a message no queue takes is held before it goes back to the queue: well
# within the broker's delivery acknowledgement timeout (`consumer_timeout`, 30 min).
_LONGEST_HOLD_SECONDS = 300

# A publish the broker refused (a queue that would not take it, or no queue of that name):
# a channel error to pika, but the channel lives on and the message is still ours.
_REFUSED = (pika.exceptions.NackError, pika.exceptions.UnroutableError)
# Any other of these: the channel or the connection is gone. Only a reconnect helps, and the
# broker redelivers what was not acked.
_LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, OSError)


def _connection_lost(error: BaseException) -> bool:
    return isinstance(error, _LOST) and not isinstance(error, _REFUSED)


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer (e.g. the queue was deleted): start over."""


def _unordered(body: bytes) -> Hashable:
    """No message waits for another: for handlers that order nothing."""
    return Unordered()


@dataclass(frozen=True, slots=True)
class _Held:
    """A message no queue would take, kept unacked until `due` (`time.monotonic`)."""

    received: Received
    due: float


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
        if not reconnect_delays:
            raise ValueError("reconnect_delays needs at least one delay")
        self._connection = connection
        self._settings = settings
        self._handler = handler
        self._ordering_key = ordering_key
        self._retries = retries or settings.retries
        """For a message whose handler raised, or whose outcome the broker refused."""
        self._telemetry = telemetry or NoTelemetry()
        self._reconnect_delays = tuple(reconnect_delays)
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._stopping = False
        self._stop_requested_at = 0.0
        self._channel_number = 0
        self._cancelled_by_broker = False
        self._held: list[_Held] = []
        self._failures_since_settled = 0
        """Connections lost (or not made) since a message last settled: the reconnect backoff.
        Not reset by a connection that opens, so a connection lost again and again before
        anything settles backs off further each time."""
        self._dispatcher = Dispatcher(self._handle, workers=concurrency, wake=connection.wake)
        self.ready = threading.Event()
        """Set once consuming; cleared when the connection is lost."""
        self.messages_handled = 0
        """Messages whose outcome was carried out and acked."""
        self.connects = 0
        """Successful connections so far; more than one means the consumer reconnected."""

    def stop(self) -> None:
        """Ask `run()` to finish, and start no message from now on; only sets flags (the
        dispatcher's and telemetry's too), so it is safe in a signal handler."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
            self._stopping = True
            self._dispatcher.close()  # from here on no worker starts a message
            self._telemetry.stopping()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def in_hand(self) -> int:
        """Messages being handled, or handled and not settled yet; safe to read from any thread."""
        return self._dispatcher.in_hand

    def run(self, grace_seconds: float | None = None) -> None:
        """Consume until `stop()`; then finish the messages in hand within `grace_seconds`.

        Past the grace the connection is closed without acking: the broker redelivers.
        Broker trouble never ends this: it reconnects with backoff.
        """
        try:
            while not self._stopping:
                try:
                    self._connection.open()
                    self.connects += 1
                    self._consume(grace_seconds)
                    return
                except Exception as error:
                    self.ready.clear()
                    self._telemetry.disconnected()
                    self._connection.close()
                    self._log_failure(error)
                    self._let_go_of_the_lost_channel()
                if self._stopping:
                    self._finish_in_hand(grace_seconds)
                    break
                delays = self._reconnect_delays
                delay = delays[min(self._failures_since_settled, len(delays) - 1)]
                self._failures_since_settled += 1
                log.warning("reconnecting to the broker in %s s", delay)
                self._sleep_unless_stopped(delay)
        finally:
            self.ready.clear()
            self._telemetry.disconnected()
            self._connection.close()
            self._dispatcher.shutdown()
            log.info("consumer stopped after %d messages", self.messages_handled)

    def _log_failure(self, error: Exception) -> None:
        text = describe(error, self._settings.password)
        if isinstance(error, (pika.exceptions.AMQPError, OSError, _ConsumerCancelled)):
            self._telemetry.downstream_error(System.BROKER)
            log.warning("broker connection lost: %s", text)
        else:
            log.error("consumer failed, starting over: %s", text, exc_info=error)

    def _consume(self, grace_seconds: float | None) -> None:
        settings = self._settings
        channel = self._connection.channel
        settlement = Settlement(channel, settings)
        self._channel_number = self._dispatcher.new_channel()
        self._cancelled_by_broker = False
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        consumer_tag = channel.basic_consume(
            queue=settings.incoming_queue, on_message_callback=self._on_message, auto_ack=False
        )
        self.ready.set()
        self._telemetry.connected()
        log.info(
            "consuming from %s (prefetch %d, %d workers)",
            settings.incoming_queue,
            settings.prefetch,
            self._dispatcher.workers,
        )
        cancelled = False
        while True:
            self._telemetry.loop_tick()
            if self._stopping and not cancelled:
                self._cancel(channel, settlement, consumer_tag)
                cancelled = True
            self._settle_finished(settlement)
            # Stopping, each held message goes back at once: nothing more will be handled.
            self._hand_back_held(
                settlement, due_by=float("inf") if self._stopping else time.monotonic()
            )
            if self._stopping and self._stopped(grace_seconds):
                return
            if self._cancelled_by_broker:
                raise _ConsumerCancelled(
                    f"the broker cancelled consuming {settings.incoming_queue}"
                )
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the channel closed")
            self._connection.process_data_events(self._poll_interval)

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        received = Received(method.delivery_tag, properties, body)
        key = self._ordering_key(body)
        self._dispatcher.submit(Job(received, key, self._channel_number))

    def _on_cancelled_by_broker(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _cancel(self, channel: Any, settlement: Settlement, consumer_tag: str) -> None:
        """No new deliveries; the ones received but not started go back to the queue at once.
        A worker that takes one meanwhile hands it back unstarted (`_settle_finished`
        returns it to the queue)."""
        channel.basic_cancel(consumer_tag)
        dispatcher = self._dispatcher
        dispatcher.close()  # stop() did so already, unless it ran on another thread just now
        for job in dispatcher.take_unstarted():
            if dispatcher.is_current(job):
                settlement.give_back(job.received)

    def _handle(self, received: Received) -> Outcome:
        """On a worker thread: the application's outcome for one delivery."""
        return self._handler(_delivery_of(received))

    def _settle_finished(self, settlement: Settlement) -> None:
        """Settle what the workers finished, then let the next job of each key start.

        A job of a channel that is gone is dropped: its tag would name another message
        on this channel, and the broker redelivers it anyway. A job no worker started
        (the consumer is stopping) goes back to the queue.
        """
        dispatcher = self._dispatcher
        for job in dispatcher.finished():
            try:
                if not dispatcher.is_current(job):
                    log.debug("message %d: outcome dropped, its channel is gone", job.delivery_tag)
                elif job.skipped:
                    settlement.give_back(job.received)
                else:
                    self._settle(settlement, job)
            finally:
                dispatcher.release(job)

    def _settle(self, settlement: Settlement, job: Job) -> None:
        """Carry out the job's outcome (confirmed republishes, then the ack), and account for it.

        Short of a lost channel, whatever fails here costs this message alone (contract §6): a
        handler that raised is a transient failure, an outcome the broker refused is a
        retry instead, and a message that no queue takes is held back for a while.
        """
        try:
            settled = self._carry_out(settlement, job.received, self._outcome_of(job))
        except Exception as error:
            if _connection_lost(error):
                raise
            log.error(
                "message %d could not be settled: %s",
                job.delivery_tag,
                describe(error),
                exc_info=None if isinstance(error, _REFUSED) else error,  # a bug: show where
            )
            self._hold(job.received)
            return
        self._failures_since_settled = 0  # the connection works: a loss now starts afresh
        self.messages_handled += 1
        try:
            self._account(job, settled)
        except Exception:  # the message is settled: nothing left to redo
            log.exception("message %d settled, but not accounted for", job.delivery_tag)

    def _outcome_of(self, job: Job) -> Outcome:
        """The handler's outcome; for a handler that raised, a transient failure (contract §6)."""
        if job.error is None:
            assert job.outcome is not None  # a job a worker handled has one or the other
            return job.outcome
        log.error(
            "message %d: the handler raised; handled as a transient failure",
            job.delivery_tag,
            exc_info=job.error,
        )
        return transient_outcome(_delivery_of(job.received), job.error, self._retries)

    def _carry_out(self, settlement: Settlement, received: Received, outcome: Outcome) -> Settled:
        """Settle `outcome`; a split or a dead letter the broker would not take goes to the
        retry queue instead. Raises when even that failed, the message still unacked."""
        try:
            return settlement.settle(received, outcome)
        except Exception as error:
            if _connection_lost(error):
                raise
            if isinstance(error, pika.exceptions.UnroutableError):
                # No queue of that name: one of ours was deleted under us. Declared again,
                # as a reconnect would, it takes the message when it comes back.
                declare_topology(self._connection.channel, self._settings)
            if not isinstance(outcome, (Split, DeadLetter)):
                raise  # a retry refused has nowhere else to go
            refusal = describe(error)
        instead = retry_instead(
            _delivery_of(received), outcome, f"not settled: {refusal}", self._retries
        )
        log.warning(
            "message %d: its %s was not carried out (%s); retried in %d s instead",
            received.delivery_tag,
            "split" if isinstance(outcome, Split) else "dead letter",
            refusal,
            instead.delay_seconds,
        )
        return settlement.settle(received, instead)

    def _hold(self, received: Received) -> None:
        """Keep a message that no queue takes unacked, and hand it back after a delay.

        Handed back at once, it would come straight back, to be handled and refused again
        at full speed. Kept unacked it cannot be lost: the broker keeps it until it is
        handed back, or redelivers it when the connection goes. It waits the backoff of its
        attempt (at most `_LONGEST_HOLD_SECONDS`), taking up a prefetch slot meanwhile.
        """
        attempt = attempt_of(received.properties.headers or {})
        seconds = min(self._retries.delay_after(attempt), _LONGEST_HOLD_SECONDS)
        self._held.append(_Held(received, time.monotonic() + seconds))
        log.warning(
            "message %d left unacked: no queue takes it; back to the queue in %d s",
            received.delivery_tag,
            seconds,
        )

    def _hand_back_held(self, settlement: Settlement, *, due_by: float) -> None:
        """Hand the held messages due by `due_by` back to the queue (rejected, requeued)."""
        due = [held for held in self._held if held.due <= due_by]
        self._held = [held for held in self._held if held.due > due_by]
        for held in due:
            settlement.give_back(held.received)

    def _account(self, job: Job, settled: Settled) -> None:
        """The event's metrics and its one log line."""
        seconds = time.monotonic() - job.started
        report = EventReport.of(
            settled.outcome, correlation_id=settled.correlation_id, seconds=seconds
        )
        self._telemetry.event_finished(report)
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

    def _stopped(self, grace_seconds: float | None) -> bool:
        """Stopping: whether the loop may end, all in hand settled or the grace run out."""
        in_hand = self._dispatcher.in_progress()
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

        Its jobs still in a handler go on (a redelivered copy waits for its stale one,
        as they share a key) but their outcomes are dropped; those not started are
        skipped. The broker redelivers them all.
        """
        lost, self._channel_number = self._channel_number, self._dispatcher.new_channel()
        self._held = []  # their tags died with the channel; the broker redelivers them
        # Only the lost channel's own jobs: a failed reconnect has none to let go of.
        in_hand = [job for job in self._dispatcher.in_progress() if job.channel == lost]
        if in_hand:
            log.warning(
                "waiting for messages %s of the lost channel before their redelivered copies "
                "start; their outcomes are dropped, the broker redelivers them",
                _tags(in_hand),
            )

    def _finish_in_hand(self, grace_seconds: float | None) -> None:
        """Stopping without a connection: let the handlers in hand end, within the grace."""
        dispatcher = self._dispatcher
        while dispatcher.in_progress() and not self._grace_expired(grace_seconds):
            self._telemetry.loop_tick()
            for job in dispatcher.finished():
                dispatcher.release(job)  # nothing to settle it on: the broker redelivers
            time.sleep(_FINISH_POLL_SECONDS)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        left = seconds
        while left > 0 and not self._stopping:
            self._telemetry.loop_tick()
            step = min(left, 0.25)
            self._sleep(step)
            left -= step


def _delivery_of(received: Received) -> Delivery:
    """A delivery as the application sees it."""
    return delivery_of(received.body, received.properties)


def _tags(jobs: Sequence[Job]) -> str:
    return ", ".join(str(job.delivery_tag) for job in jobs)
