"""The broker side: topology, the transfer-request publisher and the consumer loop (SPEC 4.5, 6).

pika is not thread-safe. One thread owns the connection (the "I/O thread"): it
consumes, acks, republishes and keeps heartbeats flowing while the application
handles a message on a worker thread. Whatever the worker needs from the broker
(the transfer request) is handed to the I/O thread and waited for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar, assert_never

import pika
import pika.exceptions

from application.messages import DeadLetter, Delivery, Done, Outcome, Retry, Split
from domain.errors import ServiceUnavailable
from domain.model import TransferRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

PERSISTENT = 2
JSON = "application/json"
DIRECT = "direct"

# Everything BasicProperties carries: a republished message keeps it all (see `_copy_properties`).
_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and what this service calls its queues (SPEC 4.5, 5)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    incoming_queue: str
    transfer_queue: str
    incoming_exchange: str = ""
    transfer_exchange: str = ""
    vhost: str = "/"
    prefetch: int = 1
    heartbeat: int = 60
    retry_delays: tuple[int, ...] = (10, 30, 90, 270, 810)
    blocked_connection_timeout: float = 300.0
    socket_timeout: float = 10.0
    connection_name: str = "s3-events-handler"

    def __post_init__(self) -> None:
        if not self.incoming_queue or not self.transfer_queue:
            raise ValueError("the incoming and the transfer queue need a name")
        if not self.retry_delays or any(delay <= 0 for delay in self.retry_delays):
            raise ValueError(f"retry delays must be positive seconds: {self.retry_delays!r}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be at least 1: {self.prefetch}")

    def retry_queue(self, seconds: int) -> str:
        return f"{self.incoming_queue}.retry.{seconds}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.incoming_queue}.dead-letter"

    def retry_level(self, seconds: int) -> int:
        """Only declared levels have a queue: the nearest not below `seconds`, else the longest."""
        return min(
            (level for level in self.retry_delays if level >= seconds),
            default=max(self.retry_delays),
        )


def declare_topology(channel: Any, settings: BrokerSettings) -> None:
    """Declare exactly what SPEC 4.5 says: the shared queues and exchanges as today's service does.

    A declaration that differs from what exists on the live broker fails with
    PRECONDITION_FAILED, so durability and arguments here are not a matter of taste.
    """
    _declare_queue_with_exchange(channel, settings.incoming_queue, settings.incoming_exchange)
    _declare_queue_with_exchange(channel, settings.transfer_queue, settings.transfer_exchange)
    for seconds in settings.retry_delays:
        channel.queue_declare(
            queue=settings.retry_queue(seconds),
            durable=True,
            arguments={
                "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.incoming_queue,
            },
        )
    channel.queue_declare(queue=settings.dead_letter_queue, durable=True)


def _declare_queue_with_exchange(channel: Any, queue: str, exchange: str) -> None:
    channel.queue_declare(queue=queue, durable=True)
    if exchange:
        channel.exchange_declare(
            exchange=exchange,
            exchange_type=DIRECT,
            durable=False,
            auto_delete=False,
            internal=False,
        )
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=queue)


class BrokerConnection:
    """One connection and one confirming channel, reopened (and the topology redeclared) on demand.

    The thread that calls `open()` is the I/O thread; only it touches pika. Other
    threads go through `run_on_io_thread`, which works while the I/O thread keeps
    calling `process_data_events` (the consumer loop does).
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None
        self._io_thread: int | None = None
        self._pending: set[Future[Any]] = set()

    @property
    def settings(self) -> BrokerSettings:
        return self._settings

    def open(self) -> None:
        """Connect, declare the topology, and set up the channel (confirms, prefetch)."""
        self.close()
        settings = self._settings
        parameters = pika.ConnectionParameters(
            host=settings.host,
            port=settings.port,
            virtual_host=settings.vhost,
            credentials=pika.PlainCredentials(
                settings.user, settings.password, erase_on_connect=True
            ),
            heartbeat=settings.heartbeat,
            blocked_connection_timeout=settings.blocked_connection_timeout,
            socket_timeout=settings.socket_timeout,
            connection_attempts=1,
            client_properties={"connection_name": settings.connection_name},
        )
        connection = pika.BlockingConnection(parameters)
        try:
            channel = connection.channel()
            declare_topology(channel, settings)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=settings.prefetch)
        except BaseException:
            _close_quietly(connection)
            raise
        with self._lock:
            self._connection = connection
            self._channel = channel
            self._io_thread = threading.get_ident()
        log.info(
            "connected to the broker at %s:%s (vhost %s) as %s",
            settings.host,
            settings.port,
            settings.vhost,
            settings.user,
        )

    def close(self) -> None:
        """Close if open; a connection that already died is simply forgotten."""
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
            pending, self._pending = self._pending, set()
        for future in pending:
            future.cancel()  # their callers must not wait for a connection that is gone
        if connection is not None:
            _close_quietly(connection)

    @property
    def is_open(self) -> bool:
        connection, channel = self._connection, self._channel
        return bool(
            connection is not None
            and connection.is_open
            and channel is not None
            and channel.is_open
        )

    @property
    def channel(self) -> Any:
        """The confirming channel (I/O thread only)."""
        channel = self._channel
        if channel is None:
            raise pika.exceptions.ConnectionWrongStateError("the broker connection is not open")
        return channel

    def process_data_events(self, time_limit: float) -> None:
        """Pump I/O: heartbeats, deliveries, confirms, calls from other threads. I/O thread only."""
        connection = self._connection
        if connection is None:
            raise pika.exceptions.ConnectionWrongStateError("the broker connection is not open")
        connection.process_data_events(time_limit=time_limit)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        """Publish mandatory and confirmed (I/O thread only).

        Raises pika's UnroutableError or NackError when the broker did not take it.
        """
        self.channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=properties,
            mandatory=True,
        )

    def wake(self) -> None:
        """Make the I/O thread's `process_data_events` return soon; safe from any thread."""
        connection = self._connection
        if connection is None:
            return
        try:
            connection.add_callback_threadsafe(_nothing)
        except Exception:  # closed meanwhile: nobody is waiting for the wake-up
            log.debug("no wake-up: the broker connection is closed")

    def run_on_io_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the I/O thread and return its result or raise its exception.

        On the I/O thread itself (or before any thread opened the connection) it
        runs `fn` directly, (re)opening a connection that is not open: a command
        without a consumer loop owns its connection. From another thread it waits
        until the I/O thread's loop ran `fn`; if the connection closes first it
        raises pika's ConnectionWrongStateError instead of waiting forever.
        """
        if self._io_thread in (None, threading.get_ident()):
            if not self.is_open:
                self.open()
            return fn()
        future: Future[T] = Future()

        def call() -> None:
            with self._lock:
                self._pending.discard(future)
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn()
            except BaseException as error:
                future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                future.set_result(result)

        with self._lock:
            connection = self._connection
            if connection is None:
                raise pika.exceptions.ConnectionWrongStateError("the broker connection is not open")
            self._pending.add(future)
        try:
            connection.add_callback_threadsafe(call)
        except BaseException:
            with self._lock:
                self._pending.discard(future)
            raise
        try:
            return future.result()
        except CancelledError as error:
            raise pika.exceptions.ConnectionWrongStateError(
                "the broker connection closed before the call ran"
            ) from error


def _nothing() -> None:
    """A callback whose only effect is ending the I/O thread's wait."""


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as error:  # already dead: there is nothing left to close
        log.debug("closing the broker connection failed: %s", type(error).__name__)


def describe(error: BaseException, secret: str = "") -> str:
    """A one-line account of a broker error; never shows the password."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if secret:
        text = text.replace(secret, "***")
    return text


def transfer_request_body(request: TransferRequest) -> bytes:
    """The file-transfer service's message body (SPEC 3.4)."""
    source = request.source
    message = {
        "source": {
            "domain": {"name": source.domain},
            "bucket": {"name": source.bucket},
            "object": {"key": source.key},
        },
        "destination": {"path": request.destination_path, "host": request.destination_host},
    }
    return json.dumps(message).encode("utf-8")


class AmqpTransferRequests:
    """The `TransferRequests` port on RabbitMQ: persistent, mandatory, confirmed."""

    def __init__(self, connection: BrokerConnection, *, exchange: str, routing_key: str) -> None:
        self._connection = connection
        self._exchange = exchange
        self._routing_key = routing_key

    @classmethod
    def for_settings(cls, connection: BrokerConnection) -> AmqpTransferRequests:
        """FILETRANSFER_EXCHANGE, FILETRANSFER_QUEUE as routing key ("" = default exchange)."""
        settings = connection.settings
        return cls(
            connection, exchange=settings.transfer_exchange, routing_key=settings.transfer_queue
        )

    def publish(self, request: TransferRequest) -> None:
        body = transfer_request_body(request)
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=JSON,
            correlation_id=request.correlation_id,
            message_id=request.message_id,
        )

        def publish_on_io_thread() -> None:
            self._connection.publish(self._exchange, self._routing_key, body, properties)

        target = f"exchange {self._exchange!r} with routing key {self._routing_key!r}"
        try:
            self._connection.run_on_io_thread(publish_on_io_thread)
        except pika.exceptions.UnroutableError as error:
            raise ServiceUnavailable(f"transfer request reached no queue via {target}") from error
        except pika.exceptions.NackError as error:
            raise ServiceUnavailable(f"broker refused the transfer request via {target}") from error
        except (pika.exceptions.AMQPError, OSError) as error:
            secret = self._connection.settings.password
            raise ServiceUnavailable(
                f"transfer request not published via {target}: {describe(error, secret)}"
            ) from error
        log.info(
            "transfer request %s published via %s (correlation id %s)",
            request.message_id,
            target,
            request.correlation_id,
        )


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer (e.g. the queue was deleted): start over."""


@dataclass
class _Work:
    """The message in hand and its worker's result."""

    delivery_tag: int
    properties: Any
    delivery: Delivery
    outcome: Future[Outcome] = field(default_factory=Future)


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
    ) -> None:
        if not reconnect_delays:
            raise ValueError("reconnect_delays needs at least one delay")
        self._connection = connection
        self._settings = settings
        self._handler = handler
        self._reconnect_delays = tuple(reconnect_delays)
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._stopping = False
        self._stop_requested_at = 0.0
        self._inbox: deque[tuple[int, Any, bytes]] = deque()
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
            self._inbox.clear()
            self._connection.close()
            log.info("consumer stopped after %d messages", self.messages_handled)

    def _log_failure(self, error: Exception) -> None:
        text = describe(error, self._settings.password)
        if isinstance(error, (pika.exceptions.AMQPError, OSError, _ConsumerCancelled)):
            log.warning("broker connection lost: %s", text)
        else:
            log.error("consumer failed, starting over: %s", text, exc_info=error)

    def _consume(self, grace_seconds: float | None) -> None:
        settings = self._settings
        channel = self._connection.channel
        self._inbox.clear()
        self._cancelled_by_broker = False
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        consumer_tag = channel.basic_consume(
            queue=settings.incoming_queue, on_message_callback=self._on_message, auto_ack=False
        )
        self.ready.set()
        log.info("consuming from %s (prefetch %d)", settings.incoming_queue, settings.prefetch)
        cancelled = False
        while True:
            if self._stopping and not cancelled:
                self._cancel(channel, consumer_tag)
                cancelled = True
            if self._work is None and self._inbox and not self._stopping:
                self._start(*self._inbox.popleft())
            work = self._work
            if work is not None and work.outcome.done():
                self._work = None
                self._settle(channel, work)
                continue
            if self._stopping:
                if work is None:
                    log.info("stopped consuming; closing the broker connection")
                    return
                if self._grace_expired(grace_seconds):
                    log.warning(
                        "message %d not finished %s s after stop; left unacked for redelivery",
                        work.delivery_tag,
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
        self._inbox.append((method.delivery_tag, properties, body))

    def _on_cancelled_by_broker(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _cancel(self, channel: Any, consumer_tag: str) -> None:
        """No new deliveries; the ones received but not started go back to the queue at once."""
        channel.basic_cancel(consumer_tag)
        while self._inbox:
            delivery_tag, _properties, _body = self._inbox.popleft()
            channel.basic_reject(delivery_tag=delivery_tag, requeue=True)

    def _start(self, delivery_tag: int, properties: Any, body: bytes) -> None:
        delivery = Delivery(
            body=body,
            headers=dict(properties.headers or {}),
            correlation_id=properties.correlation_id,
        )
        work = _Work(delivery_tag=delivery_tag, properties=properties, delivery=delivery)
        self._work = work

        def handle() -> None:
            try:
                work.outcome.set_result(self._handler(delivery))
            except BaseException as error:
                work.outcome.set_exception(error)
            finally:
                self._connection.wake()

        worker = threading.Thread(target=handle, name=f"message-{delivery_tag}", daemon=True)
        worker.start()

    def _settle(self, channel: Any, work: _Work) -> None:
        """Carry out the outcome (confirmed republishes first), then ack."""
        outcome = work.outcome.result()  # a handler that raised: start over, the broker redelivers
        original = work.properties
        user = self._settings.user
        correlation_id: str | None
        if isinstance(outcome, Done):
            kind, routing = "done", "-"
            correlation_id = outcome.correlation_id or original.correlation_id
        elif isinstance(outcome, Split):
            kind, routing = "split", f"{len(outcome.bodies)} x {self._settings.incoming_queue}"
            correlation_id = original.correlation_id
            for body in outcome.bodies:
                properties = _copy_properties(original, user)
                self._connection.publish("", self._settings.incoming_queue, body, properties)
        elif isinstance(outcome, Retry):
            level = self._settings.retry_level(outcome.delay_seconds)
            kind, routing = "retry", self._settings.retry_queue(level)
            correlation_id = outcome.correlation_id
            properties = _copy_properties(
                original,
                user,
                headers=dict(outcome.headers),
                correlation_id=correlation_id,
                delivery_mode=PERSISTENT,
                expiration=None,
            )
            self._connection.publish("", routing, work.delivery.body, properties)
        elif isinstance(outcome, DeadLetter):
            kind, routing = "dead-letter", self._settings.dead_letter_queue
            correlation_id = outcome.correlation_id or original.correlation_id
            properties = _copy_properties(
                original,
                user,
                headers=dict(outcome.headers),
                correlation_id=correlation_id,
                delivery_mode=PERSISTENT,
                expiration=None,
            )
            self._connection.publish("", routing, work.delivery.body, properties)
        else:
            assert_never(outcome)
        channel.basic_ack(delivery_tag=work.delivery_tag)
        self.messages_handled += 1
        log.info(
            "%s: message %d (correlation id %s) -> %s",
            kind,
            work.delivery_tag,
            correlation_id,
            routing,
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
            work.delivery_tag,
        )
        while not work.outcome.done():
            if self._stopping and self._grace_expired(grace_seconds):
                return False
            wait([work.outcome], timeout=0.1)
        return True

    def _sleep_unless_stopped(self, seconds: float) -> None:
        left = seconds
        while left > 0 and not self._stopping:
            step = min(left, 0.25)
            self._sleep(step)
            left -= step


def _copy_properties(original: Any, user: str, **changes: Any) -> Any:
    """The original's properties with `changes` applied.

    A `user_id` other than ours is dropped: the broker refuses a publish whose
    user_id is not the connection's user, and the message could never move on.
    """
    values = {name: getattr(original, name, None) for name in _PROPERTY_NAMES}
    if values["user_id"] != user:
        values["user_id"] = None
    values.update(changes)
    return pika.BasicProperties(**values)
