"""The I/O thread: the one broker connection a consumer keeps open, and how other threads reach
it. pika is not thread-safe: the thread that opens the connection is the only one that touches
it; another hands it a call with `add_callback_threadsafe`, pika's one thread-safe method, and
waits for the result (docs/architecture.md, "The threads")."""

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
)
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.domain.errors import ServiceUnavailable, System

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a worker waiting for the I/O thread looks whether the connection closed meanwhile.
_CLOSED_POLL_SECONDS = 0.1


class BrokerConnection:
    """One connection and one confirming channel, opened again (and the topology declared) on
    demand, by the thread that then is the I/O thread."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._channel: Any = None
        """The confirming channel open now; `channel.connection` is its connection."""
        self._io_thread: int | None = None

    def open(self) -> Any:
        """Connect, declare the topology, and set up the channel (confirms, prefetch); returns
        the channel, for this thread alone."""
        self.close()
        settings = self.settings
        connection = connect(settings)
        try:
            channel = connection.channel()
            declare_topology(channel, settings)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=settings.prefetch)
        except BaseException:
            _close_quietly(connection)
            raise
        self._channel = channel
        self._io_thread = threading.get_ident()
        log.info(
            "connected to the broker at %s:%s (vhost %s%s) as %s",
            settings.host,
            settings.port,
            settings.vhost,
            ", AMQPS" if settings.tls else "",
            settings.user,
        )
        return channel

    def close(self) -> None:
        """Close if open; a connection that already died is simply forgotten. What other threads
        handed to it and it did not run is never run (`call_on_io_thread` tells them so)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            _close_quietly(channel.connection)

    @property
    def is_open(self) -> bool:
        channel = self._channel
        return channel is not None and channel.connection.is_open and channel.is_open

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
        confirmed, on the I/O thread: at once on the thread that opened the connection, or
        before any did (a command without a consumer loop owns its connection, opened here
        if need be). Whatever keeps it from a queue is `ServiceUnavailable` naming `what`."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=JSON,
            message_id=message_id,
            correlation_id=correlation_id,
        )
        target = f"exchange {exchange!r} with routing key {routing_key!r}"

        def publish_on_io_thread() -> None:
            self._open().basic_publish(exchange, routing_key, body, properties, mandatory=True)

        try:
            if self._io_thread not in (None, threading.get_ident()):
                call_on_io_thread(self._open().connection, publish_on_io_thread)
            else:
                if not self.is_open:
                    self.open()
                publish_on_io_thread()
        except pika.exceptions.UnroutableError as error:
            raise _unavailable(f"{what} reached no queue via {target}") from error
        except pika.exceptions.NackError as error:
            raise _unavailable(f"broker refused the {what} via {target}") from error
        except (pika.exceptions.AMQPError, OSError) as error:
            reason = reason_of(error, [self.settings.password])
            raise _unavailable(f"{what} not published via {target}: {reason}") from error
        log.debug(
            "%s %s published via %s (correlation id %s)", what, message_id, target, correlation_id
        )

    def _open(self) -> Any:
        if self._channel is None:
            raise pika.exceptions.ConnectionWrongStateError("the broker connection is not open")
        return self._channel


def call_on_io_thread(connection: Any, fn: Callable[[], T]) -> T:
    """From a worker: run `fn` on the thread that pumps `connection`, wait, return its result.

    A connection that closes first never runs `fn` (so it never acts on a later connection's
    channel): then this raises pika's ConnectionWrongStateError. A lost connection that `fn`
    runs into is raised on the I/O thread too, so that its loop reconnects at once."""
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
