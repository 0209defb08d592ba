"""The broker connection: settings, topology, and one confirming channel (contract §4.5).

pika is not thread-safe. One thread owns the connection (the "I/O thread"): it
consumes, acks, republishes and keeps heartbeats flowing; other threads hand it
work through `BrokerConnection.run_on_io_thread`.

With `tls` set the connection is AMQPS (contract §7): the broker's certificate and host
name are verified, and a certificate that fails is reported as `BrokerCertificateError`,
naming the settings to fix.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pika
import pika.exceptions

from s3_events_handler.adapters.tls import client_context, describe_failure, verification_failure
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.application.retries import RetrySchedule

log = logging.getLogger(__name__)

T = TypeVar("T")

PERSISTENT = 2
DIRECT = "direct"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and what this service calls its queues (contract §4.5, §5).

    Checked where it is read (`adapters/config.py`), not here.
    """

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
    tls: bool = False
    ca_file: str = ""
    retries: RetrySchedule = field(default_factory=RetrySchedule)
    """Its delays are the retry queues declared."""
    blocked_connection_timeout: float = 300.0
    socket_timeout: float = 10.0
    connection_name: str = "s3-events-handler"

    def retry_queue(self, seconds: int) -> str:
        return f"{self.incoming_queue}.retry.{seconds}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.incoming_queue}.dead-letter"


class ConfirmingChannel(Protocol):
    """What the service asks of pika's BlockingChannel once `confirm_delivery()` is on.

    In confirm mode `basic_publish` returns only once the broker confirmed the
    message. It raises UnroutableError when a mandatory message reached no queue,
    NackError when the broker refused it, and ChannelClosed or AMQPConnectionError
    when the channel or the connection went away first.
    """

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, *, mandatory: bool
    ) -> None: ...

    def basic_ack(self, *, delivery_tag: int) -> None: ...

    def basic_reject(self, *, delivery_tag: int, requeue: bool) -> None: ...


def publish_confirmed(
    channel: ConfirmingChannel, exchange: str, routing_key: str, body: bytes, properties: Any
) -> None:
    """Publish mandatory on a confirming channel; returns once the broker took the message.

    Mandatory, so a message that reaches no queue (an unbound exchange, a queue
    deleted under us) fails instead of being confirmed and dropped.
    """
    channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)


# What pika raises, before anything is sent, for properties it cannot encode (some it decodes,
# such as floats from other clients, it cannot encode again).
UNENCODABLE = (
    pika.exceptions.ProtocolSyntaxError,
    pika.exceptions.ShortStringTooLong,
    UnicodeEncodeError,
    struct.error,
)


# pika is untyped: to mypy its exceptions are Any.
class BrokerCertificateError(pika.exceptions.AMQPConnectionError):  # type: ignore[misc]
    """The broker's certificate cannot be verified: a setting to fix, not an outage to wait out."""

    def __init__(self, settings: BrokerSettings, failure: ssl.SSLCertVerificationError) -> None:
        ca_file = (
            f"RABBIT_MQ_CA_FILE={settings.ca_file!r}"
            if settings.ca_file
            else "no RABBIT_MQ_CA_FILE, the system's CA store only"
        )
        super().__init__(
            f"the certificate of the broker at {settings.host}:{settings.port} cannot be "
            f"verified (RABBIT_MQ_SSL=true, {ca_file}): {describe_failure(failure)}"
        )


def declare_topology(channel: Any, settings: BrokerSettings) -> None:
    """Declare exactly what contract §4.5 says: shared queues and exchanges as today's service does.

    A declaration that differs from what exists on the live broker fails with
    PRECONDITION_FAILED, so durability and arguments here are not a matter of taste.
    """
    _declare_queue_with_exchange(channel, settings.incoming_queue, settings.incoming_exchange)
    _declare_queue_with_exchange(channel, settings.transfer_queue, settings.transfer_exchange)
    for seconds in settings.retries.delays:
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


def connect(settings: BrokerSettings) -> Any:
    """A plain blocking connection, nothing declared: for the consumer, which declares its
    topology next, and for commands that must leave the broker as they found it.

    AMQPS when `settings.tls`; a certificate that fails verification raises
    `BrokerCertificateError`.
    """
    ssl_options = (
        pika.SSLOptions(client_context(settings.ca_file), server_hostname=settings.host)
        if settings.tls
        else None
    )
    parameters = pika.ConnectionParameters(
        host=settings.host,
        port=settings.port,
        virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.user, settings.password, erase_on_connect=True),
        heartbeat=settings.heartbeat,
        blocked_connection_timeout=settings.blocked_connection_timeout,
        socket_timeout=settings.socket_timeout,
        connection_attempts=1,
        client_properties={"connection_name": settings.connection_name},
        ssl_options=ssl_options,
    )
    try:
        return pika.BlockingConnection(parameters)
    except Exception as error:
        failure = verification_failure(error)
        if failure is not None:
            raise BrokerCertificateError(settings, failure) from error
        raise


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
        connection = connect(settings)
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
            "connected to the broker at %s:%s (vhost %s%s) as %s",
            settings.host,
            settings.port,
            settings.vhost,
            ", AMQPS" if settings.tls else "",
            settings.user,
        )

    def check_certificate(self) -> None:
        """Shake hands with the broker over TLS once, before consuming starts.

        The consumer reconnects forever, which suits an outage but not a certificate
        that will never be accepted: that raises `BrokerCertificateError` here, so the
        start stops. Anything else (refused, unreachable) is left to the reconnect loop.
        """
        settings = self._settings
        if not settings.tls:
            return
        context = client_context(settings.ca_file)
        address = (settings.host, settings.port)
        try:
            with (
                socket.create_connection(address, timeout=settings.socket_timeout) as plain,
                context.wrap_socket(plain, server_hostname=settings.host),
            ):
                pass
        except ssl.SSLCertVerificationError as failure:
            raise BrokerCertificateError(settings, failure) from None
        except OSError as error:
            log.debug("no TLS handshake with the broker yet: %s", describe(error))

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
        publish_confirmed(self.channel, exchange, routing_key, body, properties)

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
    return reason_of(error, [secret])
