"""The consumer: pika's threaded consumer (`examples/basic_consumer_threaded.py`) with what the
contract adds: one object's events in order, confirmed republishes before the ack, the stop
(docs/architecture.md, "The threads"). Only a lost channel or connection ends a connection's
loop; anything else that goes wrong with one message is that message's transient failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings, connection_lost
from s3_events_handler.adapters.rabbitmq.dispatch import Job, Workers
from s3_events_handler.adapters.rabbitmq.headers import delivery_of
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection, call_on_io_thread
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.application import ordering
from s3_events_handler.application.messages import Delivery, Outcome
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.application.retries import transient_outcome
from s3_events_handler.application.telemetry import EventReport, System, Telemetry

log = logging.getLogger(__name__)


class Consumer:
    """Consumes the incoming queue until stopped, surviving the broker going away: up to
    `concurrency` messages at once, those with the same `ordering_key` one at a time, in the
    order they arrived. Each ends acked once its outcome was carried out, or unacked."""

    def __init__(
        self,
        connection: BrokerConnection,
        settings: BrokerSettings,
        handler: Callable[[Delivery], Outcome],
        *,
        concurrency: int = 1,
        ordering_key: Callable[[bytes], Hashable] = ordering.ordering_key,
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
        self._reconnect_delays = tuple(reconnect_delays)
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._telemetry = telemetry or Telemetry()
        self._workers = Workers(self._work, size=concurrency)
        self._stopped_at: float | None = None
        """When `stop()` was called; read by the I/O thread and by each worker before it starts."""
        self.connects = 0
        """Connections consumed on so far; more than one means the consumer reconnected."""
        self.messages_handled = 0
        """Messages whose outcome was carried out and acked; counted on the I/O thread."""

    def stop(self) -> None:
        """Ask `run()` to finish, and start no message from now on; only sets a value (and tells
        telemetry), so it is safe in a signal handler."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
            self._telemetry.stopping()

    @property
    def in_hand(self) -> int:
        """Messages being handled, or handled and not settled yet; safe to read from any thread."""
        return len(self._workers.in_hand())

    def run(self, grace_seconds: float | None = None) -> None:
        """Consume until `stop()`; then finish the messages in hand within `grace_seconds`, past
        which the connection closes with them unacked. Broker trouble never ends this: it
        reconnects, a delay further each time until a message settles again (an opened
        connection is no reset)."""
        delays, steps, settled_then = self._reconnect_delays, 0, 0
        try:
            while self._stopped_at is None:
                opened = False
                try:
                    channel = self._connection.open()
                    opened = True
                    self._consume(channel, grace_seconds)
                    return
                except Exception as error:
                    self._telemetry.disconnected()
                    self._connection.close()
                    _log_failure(error, self._settings.password, self._telemetry)
                if opened:
                    # Its delivery tags mean nothing any more: the messages not started are
                    # dropped; those in a handler go on, but what they hand back is never run.
                    # The broker redelivers them all; a copy waits for its stale one (one key).
                    self._workers.take_unstarted()
                    if in_hand := self._workers.in_hand():
                        log.warning(
                            "waiting for messages %s of the lost channel before their "
                            "redelivered copies start; their outcomes are dropped, the broker "
                            "redelivers them",
                            _tags(in_hand),
                        )
                if self._stopped_at is not None:
                    while not self._finished(grace_seconds):  # no connection to pump
                        self._telemetry.loop_tick()
                        time.sleep(self._poll_interval)
                    return
                if self.messages_handled > settled_then:
                    steps, settled_then = 0, self.messages_handled
                delay = delays[min(steps, len(delays) - 1)]
                steps += 1
                log.warning("reconnecting to the broker in %s s", delay)
                self._sleep_unless_stopped(delay)
        finally:
            self._telemetry.disconnected()
            self._connection.close()
            self._workers.shutdown()
            log.info("consumer stopped after %d messages", self.messages_handled)

    def _consume(self, channel: Any, grace_seconds: float | None) -> None:
        """The I/O thread's loop on one connection: pump, hand back held messages, stop."""
        settings, queue = self._settings, self._settings.incoming_queue
        settlement = Settlement(channel, settings)

        def cancelled_by_broker(method: Any) -> None:  # raised out of process_data_events
            raise pika.exceptions.ConsumerCancelled(f"the broker cancelled consuming {queue}")

        channel.add_on_cancel_callback(cancelled_by_broker)
        consumer_tag = channel.basic_consume(
            queue=queue,
            on_message_callback=partial(self._on_message, settlement),
            auto_ack=False,
        )
        self.connects += 1
        self._telemetry.connected()
        log.info(
            "consuming from %s (prefetch %d, %d workers)",
            queue,
            settings.prefetch,
            self._workers.size,
        )
        cancelled = False
        while True:
            self._telemetry.loop_tick()
            if self._stopped_at is not None and not cancelled:
                # No new deliveries; the ones received but not started go back at once.
                channel.basic_cancel(consumer_tag)
                for job in self._workers.take_unstarted():
                    settlement.give_back(job.received)
                cancelled = True
            # Stopping, each held message goes back at once: nothing more will be handled.
            settlement.hand_back_held(due_by=float("inf") if cancelled else time.monotonic())
            if cancelled and self._finished(grace_seconds):
                return
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the channel closed")
            channel.connection.process_data_events(time_limit=self._poll_interval)

    def _on_message(
        self, settlement: Settlement, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        received = Received(method.delivery_tag, properties, body)
        self._workers.submit(Job(received, self._ordering_key(body), settlement))

    def _work(self, job: Job) -> None:
        """On a worker: handle the delivery, then have the I/O thread settle it on the connection
        it came on, and wait. Once the consumer stops, it goes back to the queue unstarted."""
        if self._stopped_at is not None:
            settle = partial(job.settlement.give_back, job.received)
        else:
            started = time.monotonic()  # the event's duration: its work, not its wait
            delivery = delivery_of(job.received.body, job.received.properties)
            try:
                outcome = self._handler(delivery)
            except BaseException as error:  # settled as that message's failure, never dropped
                log.error(
                    "message %d: the handler raised; handled as a transient failure",
                    job.delivery_tag,
                    exc_info=error,
                )
                outcome = transient_outcome(delivery, error, self._settings.retries)
            settle = partial(self._settle, job, outcome, started)
        try:
            call_on_io_thread(job.settlement.channel.connection, settle)
        except Exception as error:
            if not connection_lost(error):
                raise  # a bug: the worker logs it
            log.debug("message %d: not settled, its connection is gone", job.delivery_tag)

    def _settle(self, job: Job, outcome: Outcome, started: float) -> None:
        """On the I/O thread: carry out the outcome, then account for it."""
        settled = job.settlement.carry_out(job.received, outcome)
        if settled is None:  # held back: no queue takes it
            return
        self.messages_handled += 1
        _account(self._telemetry, job, settled, started)

    def _finished(self, grace_seconds: float | None) -> bool:
        """Stopping: whether the loop may end, all in hand settled or the grace run out."""
        assert self._stopped_at is not None  # asked only once stopping
        in_hand = self._workers.in_hand()
        stopped_for = time.monotonic() - self._stopped_at
        if not in_hand:
            log.info("stopped consuming; closing the broker connection")
        elif grace_seconds is None or stopped_for < grace_seconds:
            return False
        else:
            log.warning(
                "messages %s not finished %s s after stop; left unacked for redelivery",
                _tags(in_hand),
                grace_seconds,
            )
        return True

    def _sleep_unless_stopped(self, seconds: float) -> None:
        left = seconds
        while left > 0 and self._stopped_at is None:
            self._telemetry.loop_tick()
            step = min(left, 0.25)
            self._sleep(step)
            left -= step


def _log_failure(error: Exception, secret: str, telemetry: Telemetry) -> None:
    """Why a connection's loop ended: the broker (counted as its error), or a bug."""
    text = reason_of(error, [secret])
    if isinstance(error, (pika.exceptions.AMQPError, OSError)):
        telemetry.downstream_error(System.BROKER)
        log.warning("broker connection lost: %s", text)
    else:
        log.error("consumer failed, starting over: %s", text, exc_info=error)


def _account(telemetry: Telemetry, job: Job, settled: Settled, started: float) -> None:
    """A settled event's metrics and its one INFO line (contract §7), its facts as fields. The
    fault suite parses the message too: keep its shape and this logger."""
    seconds = time.monotonic() - started
    report = EventReport.of(settled.outcome, correlation_id=settled.correlation_id, seconds=seconds)
    telemetry.event_finished(report)
    log.info(
        "%s: message %d (correlation id %s) -> %s",
        settled.kind,
        job.delivery_tag,
        settled.correlation_id,
        settled.destination,
        extra=with_fields(report.log_fields()),
    )


def _tags(jobs: Sequence[Job]) -> str:
    return ", ".join(str(tag) for tag in sorted(job.delivery_tag for job in jobs))
