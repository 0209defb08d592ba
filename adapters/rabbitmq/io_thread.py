"""The I/O thread: the one broker connection a consumer keeps open, and how other threads
reach it.

pika is not thread-safe. The thread that opens the connection (the I/O thread) is
the only one that touches it: it consumes, acks, republishes and keeps heartbeats
flowing. Another thread hands it a call with the connection's
`add_callback_threadsafe`, pika's one thread-safe method, and waits for the result
(`call_on_io_thread`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pika
import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import (
    JSON,
    PERSISTENT,
    BrokerSettings,
    connect,
    connection_lost,
    declare_topology,
    describe,
    publish_confirmed,
)
from s3_events_handler.domain.errors import ServiceUnavailable, System

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a worker waiting for the I/O thread looks whether the connection closed meanwhile.
_CLOSED_POLL_SECONDS = 0.1


class BrokerConnection:
    """One connection and one confirming channel, reopened (and the topology redeclared) on demand.

    The thread that calls `open()` is the I/O thread; only it touches pika. Other
    threads go through `run_on_io_thread`, which works while the I/O thread keeps
    calling `process_data_events` (the consumer loop does).
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        # The connection and its channel as one value, so another thread reading it once
        # never sees one connection's channel with another connection.
        self._opened: tuple[Any, Any] | None = None
        self._io_thread: int | None = None

    @property
    def settings(self) -> BrokerSettings:
        return self._settings

    def open(self) -> None:
        """Connect, declare the topology, and set up the channel (confirms, prefetch)."""
        self.close()
        settings = self._settings
        connection = connect(settings)
        try:
            channel = connection.channel()
            declare_topology(channel, settings)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=settings.prefetch)
        except BaseException:
            _close_quietly(connection)
            raise
        self._opened = (connection, channel)
        self._io_thread = threading.get_ident()
        log.info(
            "connected to the broker at %s:%s (vhost %s%s) as %s",
            settings.host,
            settings.port,
            settings.vhost,
            ", AMQPS" if settings.tls else "",
            settings.user,
        )

    def close(self) -> None:
        """Close if open; a connection that already died is simply forgotten.

        Whatever other threads handed to it and it did not run yet is never run (pika drops
        it), and `call_on_io_thread` tells them so.
        """
        opened, self._opened = self._opened, None
        if opened is not None:
            _close_quietly(opened[0])

    @property
    def is_open(self) -> bool:
        opened = self._opened
        return opened is not None and opened[0].is_open and opened[1].is_open

    @property
    def channel(self) -> Any:
        """The confirming channel (I/O thread only)."""
        return self._open()[1]

    def process_data_events(self, time_limit: float) -> None:
        """Pump I/O: heartbeats, deliveries, confirms, calls from other threads. I/O thread only."""
        self._open()[0].process_data_events(time_limit=time_limit)

    def publish(
        self,
        what: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None,
        correlation_id: str | None,
    ) -> None:
        """From any thread: a JSON message of our own (`what`), persistent, mandatory and
        confirmed, published on the I/O thread (`run_on_io_thread`). Whatever keeps it from a
        queue is `ServiceUnavailable` naming `what` and where it was sent."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=JSON,
            message_id=message_id,
            correlation_id=correlation_id,
        )
        target = f"exchange {exchange!r} with routing key {routing_key!r}"

        def publish_on_io_thread() -> None:
            publish_confirmed(self.channel, exchange, routing_key, body, properties)

        try:
            self.run_on_io_thread(publish_on_io_thread)
        except pika.exceptions.UnroutableError as error:
            raise _unavailable(f"{what} reached no queue via {target}") from error
        except pika.exceptions.NackError as error:
            raise _unavailable(f"broker refused the {what} via {target}") from error
        except (pika.exceptions.AMQPError, OSError) as error:
            reason = describe(error, self._settings.password)
            raise _unavailable(f"{what} not published via {target}: {reason}") from error
        log.debug(
            "%s %s published via %s (correlation id %s)", what, message_id, target, correlation_id
        )

    def run_on_io_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the I/O thread and return its result or raise its exception.

        On the I/O thread itself (or before any thread opened the connection) it
        runs `fn` directly, (re)opening a connection that is not open: a command
        without a consumer loop owns its connection. From another thread it is
        `call_on_io_thread` on the connection open now.
        """
        if self._io_thread in (None, threading.get_ident()):
            if not self.is_open:
                self.open()
            return fn()
        return call_on_io_thread(self._open()[0], fn)

    def _open(self) -> tuple[Any, Any]:
        opened = self._opened
        if opened is None:
            raise pika.exceptions.ConnectionWrongStateError("the broker connection is not open")
        return opened


def call_on_io_thread(connection: Any, fn: Callable[[], T]) -> T:
    """From a worker: run `fn` on the thread that pumps `connection`, wait, return its result.

    pika's own way across threads (`add_callback_threadsafe`), bound to this one
    connection: a callback handed to a connection that closes before running it is
    never run, so it can never act on a later connection's channel. Raises pika's
    ConnectionWrongStateError once the connection closed without running `fn`.
    A lost connection that `fn` runs into is raised on the I/O thread too, so that
    its loop reconnects at once.
    """
    future: Future[T] = Future()

    def call() -> None:
        try:
            future.set_result(fn())
        except BaseException as error:
            future.set_exception(error)
            if connection_lost(error) or not isinstance(error, Exception):
                raise

    connection.add_callback_threadsafe(call)
    while True:
        try:
            return future.result(timeout=_CLOSED_POLL_SECONDS)
        except TimeoutError:
            if connection.is_closed and not future.done():
                raise pika.exceptions.ConnectionWrongStateError(
                    "the broker connection closed before the call ran"
                ) from None


def _unavailable(message: str) -> ServiceUnavailable:
    return ServiceUnavailable(message, system=System.BROKER)


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as error:  # already dead: there is nothing left to close
        log.debug("closing the broker connection failed: %s", type(error).__name__)
