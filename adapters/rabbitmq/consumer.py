"""The consumer loop: one message at a time on a worker thread, its outcome settled on the
I/O thread (`settlement.py`), reconnecting whenever the broker goes away (SPEC 6)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

import pika.exceptions

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerConnection,
    BrokerSettings,
    describe,
)
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settlement
from s3_events_handler.application.messages import Delivery, Outcome
from s3_events_handler.application.telemetry import EventReport, NoTelemetry, System, Telemetry

log = logging.getLogger(__name__)


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer (e.g. the queue was deleted): start over."""


@dataclass
class _Work:
    """The message in hand and its worker's result."""

    received: Received
    outcome: Future[Outcome] = field(default_factory=Future)
    started: float = field(default_factory=time.monotonic)


class Consumer:
    """Consumes the incoming queue until stopped; survives the broker going away.

    Every message ends acked after its outcome was carried out (republishes
    confirmed first), or unacked when anything went wrong, for the broker to
    redeliver (SPEC 6).
    """

    def __init__(
        self,
        connection: BrokerConnection,
        settings: BrokerSettings,
        handler: Callable[[Delivery], Outcome],
        *,
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
        self._reconnect_delays = tuple(reconnect_delays)
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._telemetry = telemetry or NoTelemetry()
        self._stopping = False
        self._stop_requested_at = 0.0
        self._inbox: deque[Received] = deque()
        self._work: _Work | None = None
        self._cancelled_by_broker = False
        self.ready = threading.Event()
        """Set once consuming; cleared when the connection is lost."""
        self.messages_handled = 0
        """Messages whose outcome was carried out and acked."""
        self.connects = 0
        """Successful connections so far; more than one means the consumer reconnected."""

    def stop(self) -> None:
        """Ask `run()` to finish; only sets attributes, so it is safe in a signal handler."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
            self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run(self, grace_seconds: float | None = None) -> None:
        """Consume until `stop()`; then finish the message in hand within `grace_seconds`.

        Past the grace the connection is closed without acking: the broker redelivers.
        Broker trouble never ends this: it reconnects with backoff.
        """
        failures = 0
        try:
            while not self._stopping:
                try:
                    self._connection.open()
                    self.connects += 1
                    failures = 0
                    self._consume(grace_seconds)
                    return
                except Exception as error:
                    self.ready.clear()
                    self._telemetry.disconnected()
                    self._connection.close()
                    self._log_failure(error)
                    if not self._wait_for_worker(grace_seconds):
                        return
                delay = self._reconnect_delays[min(failures, len(self._reconnect_delays) - 1)]
                failures += 1
                if self._stopping:
                    break
                log.warning("reconnecting to the broker in %s s", delay)
                self._sleep_unless_stopped(delay)
        finally:
            self.ready.clear()
            self._telemetry.disconnected()
            self._inbox.clear()
            self._connection.close()
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
        self._inbox.clear()
        self._cancelled_by_broker = False
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        consumer_tag = channel.basic_consume(
            queue=settings.incoming_queue, on_message_callback=self._on_message, auto_ack=False
        )
        self.ready.set()
        self._telemetry.connected()
        log.info("consuming from %s (prefetch %d)", settings.incoming_queue, settings.prefetch)
        cancelled = False
        while True:
            self._telemetry.loop_tick()
            if self._stopping and not cancelled:
                self._cancel(channel, consumer_tag)
                cancelled = True
            if self._work is None and self._inbox and not self._stopping:
                self._start(self._inbox.popleft())
            work = self._work
            if work is not None and work.outcome.done():
                self._work = None
                self._settle(settlement, work)
                continue
            if self._stopping:
                if work is None:
                    log.info("stopped consuming; closing the broker connection")
                    return
                if self._grace_expired(grace_seconds):
                    log.warning(
                        "message %d not finished %s s after stop; left unacked for redelivery",
                        work.received.delivery_tag,
                        grace_seconds,
                    )
                    self._work = None
                    return
            if self._cancelled_by_broker:
                raise _ConsumerCancelled(
                    f"the broker cancelled consuming {settings.incoming_queue}"
                )
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the channel closed")
            self._connection.process_data_events(self._poll_interval)

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._inbox.append(Received(method.delivery_tag, properties, body))

    def _on_cancelled_by_broker(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _cancel(self, channel: Any, consumer_tag: str) -> None:
        """No new deliveries; the ones received but not started go back to the queue at once."""
        channel.basic_cancel(consumer_tag)
        while self._inbox:
            channel.basic_reject(delivery_tag=self._inbox.popleft().delivery_tag, requeue=True)

    def _start(self, received: Received) -> None:
        delivery = Delivery(
            body=received.body,
            headers=dict(received.properties.headers or {}),
            correlation_id=received.properties.correlation_id,
        )
        work = _Work(received=received)
        self._work = work

        def handle() -> None:
            try:
                work.outcome.set_result(self._handler(delivery))
            except BaseException as error:
                work.outcome.set_exception(error)
            finally:
                self._connection.wake()

        worker = threading.Thread(
            target=handle, name=f"message-{received.delivery_tag}", daemon=True
        )
        worker.start()

    def _settle(self, settlement: Settlement, work: _Work) -> None:
        """Carry out the outcome (confirmed republishes, then the ack), and account for it."""
        outcome = work.outcome.result()  # a handler that raised: start over, the broker redelivers
        settled = settlement.settle(work.received, outcome)
        self.messages_handled += 1
        seconds = time.monotonic() - work.started
        report = EventReport.of(outcome, correlation_id=settled.correlation_id, seconds=seconds)
        self._telemetry.event_finished(report)
        # The event's one INFO line (SPEC 7), its facts as fields. The fault suite parses
        # the message too: keep its shape and this logger.
        log.info(
            "%s: message %d (correlation id %s) -> %s",
            settled.kind,
            work.received.delivery_tag,
            settled.correlation_id,
            settled.destination,
            extra=with_fields(report.log_fields()),
        )

    def _grace_expired(self, grace_seconds: float | None) -> bool:
        if grace_seconds is None:
            return False
        return time.monotonic() - self._stop_requested_at >= grace_seconds

    def _wait_for_worker(self, grace_seconds: float | None) -> bool:
        """After losing the connection, let the message in hand finish before consuming again.

        Its outcome is dropped (its delivery tag died with the connection; the
        broker redelivers it), but starting the redelivered copy while the old
        worker still runs would handle one event twice at once. False: stopped
        and the grace ran out.
        """
        work, self._work = self._work, None
        self._inbox.clear()
        if work is None:
            return True
        log.warning(
            "waiting for message %d to finish; its outcome is dropped, the broker redelivers it",
            work.received.delivery_tag,
        )
        while not work.outcome.done():
            self._telemetry.loop_tick()
            if self._stopping and self._grace_expired(grace_seconds):
                return False
            wait([work.outcome], timeout=0.1)
        return True

    def _sleep_unless_stopped(self, seconds: float) -> None:
        left = seconds
        while left > 0 and not self._stopping:
            self._telemetry.loop_tick()
            step = min(left, 0.25)
            self._sleep(step)
            left -= step
