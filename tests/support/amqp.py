"""Broker helpers for the integration and end-to-end tests.

Each helper opens its own short-lived connection, so tests never share pika state
with the code under test. Waiting is always bounded polling, never a guessed sleep.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings, declare_topology
from s3_events_handler.application.retries import RetrySchedule

USER = "guest"
PASSWORD = "guest"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Message:
    """One message taken from a queue."""

    body: bytes
    properties: Any
    exchange: str
    routing_key: str
    redelivered: bool

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    def json(self) -> Any:
        return json.loads(self.body)


def unique_prefix(label: str = "test") -> str:
    """Queue names no other test (or earlier run) uses."""
    return f"s3eh-{label}-{uuid.uuid4().hex[:12]}"


def settings_for(host: str, port: int, prefix: str, **overrides: Any) -> BrokerSettings:
    """Broker settings with queue names under `prefix`; keyword arguments override."""
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": USER,
        "password": PASSWORD,
        "incoming_queue": f"{prefix}.events",
        "transfer_queue": f"{prefix}.transfers",
        "incoming_exchange": "",
        "transfer_exchange": "",
        "retries": RetrySchedule(delays=(1, 30)),
        "connection_name": prefix,
    }
    values.update(overrides)
    return BrokerSettings(**values)


def settings_like_production(host: str, port: int, label: str, **overrides: Any) -> BrokerSettings:
    """Fresh names under a new prefix, with both exchanges set as in production."""
    prefix = unique_prefix(label)
    values: dict[str, Any] = {
        "incoming_exchange": f"{prefix}.s3-events",
        "transfer_exchange": f"{prefix}.filetransfer",
    }
    values.update(overrides)
    return settings_for(host, port, prefix, **values)


def all_queues(settings: BrokerSettings) -> list[str]:
    """Every queue the service declares for `settings`."""
    return [
        settings.incoming_queue,
        settings.transfer_queue,
        *(settings.retry_queue(seconds) for seconds in settings.retries.delays),
        settings.dead_letter_queue,
    ]


@contextmanager
def channel(host: str, port: int) -> Iterator[Any]:
    """A plain channel on a connection of its own, closed afterwards."""
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            host=host,
            port=port,
            credentials=pika.PlainCredentials(USER, PASSWORD),
            connection_attempts=1,
            client_properties={"connection_name": "s3eh-test-helper"},
        )
    )
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def publish(
    host: str,
    port: int,
    queue_or_routing_key: str,
    body: bytes,
    *,
    exchange: str = "",
    properties: Any = None,
) -> None:
    """Publish one message, confirmed and mandatory (fails loudly when nothing takes it)."""
    with channel(host, port) as ch:
        ch.confirm_delivery()
        ch.basic_publish(
            exchange=exchange,
            routing_key=queue_or_routing_key,
            body=body,
            properties=properties,
            mandatory=True,
        )


def publish_persistent(
    settings: BrokerSettings,
    bodies: Iterable[bytes],
    *,
    properties: Callable[[int], Any] | None = None,
) -> None:
    """Publish as the gateway does: through the incoming exchange, persistent and mandatory,
    each confirmed; all on one connection.

    `properties(n)`, called just before the `n`-th body is sent, gives its properties
    (a benchmark stamps the publish time there); the default is persistent and nothing else.
    """
    with channel(settings.host, settings.port) as ch:
        ch.confirm_delivery()
        for n, body in enumerate(bodies):
            ch.basic_publish(
                exchange=settings.incoming_exchange,
                routing_key=settings.incoming_queue,
                body=body,
                properties=(
                    pika.BasicProperties(delivery_mode=2) if properties is None else properties(n)
                ),
                mandatory=True,
            )


def get_messages(host: str, port: int, queue: str, *, limit: int | None = None) -> list[Message]:
    """Take (ack) what is in `queue` now, at most `limit` messages."""
    taken: list[Message] = []
    with channel(host, port) as ch:
        while limit is None or len(taken) < limit:
            message = _get_one(ch, queue)
            if message is None:
                break
            taken.append(message)
    return taken


def peek_messages(host: str, port: int, queue: str) -> list[Message]:
    """What is in `queue` now, head first, left there: taken unacked, then handed back
    (the broker requeues what a closing channel held, each where it was)."""
    seen: list[Message] = []
    with channel(host, port) as ch:
        while True:
            method, properties, body = ch.basic_get(queue=queue, auto_ack=False)
            if method is None:
                return seen
            seen.append(
                Message(body, properties, method.exchange, method.routing_key, method.redelivered)
            )


def wait_for_messages(
    host: str, port: int, queue: str, count: int, *, timeout: float = 5.0
) -> list[Message]:
    """Take messages from `queue` until `count` arrived or `timeout` passed; returns what came."""
    taken: list[Message] = []
    deadline = time.monotonic() + timeout
    with channel(host, port) as ch:
        while len(taken) < count:
            message = _get_one(ch, queue)
            if message is not None:
                taken.append(message)
                continue
            if time.monotonic() >= deadline:
                break
            ch.connection.sleep(POLL_SECONDS)
    return taken


def _get_one(ch: Any, queue: str) -> Message | None:
    method, properties, body = ch.basic_get(queue=queue, auto_ack=True)
    if method is None:
        return None
    return Message(
        body=body,
        properties=properties,
        exchange=method.exchange,
        routing_key=method.routing_key,
        redelivered=bool(method.redelivered),
    )


def message_count(host: str, port: int, queue: str) -> int:
    """Ready messages in `queue` (unacked ones are not counted)."""
    with channel(host, port) as ch:
        return int(ch.queue_declare(queue=queue, passive=True).method.message_count)


def consumer_count(host: str, port: int, queue: str) -> int:
    with channel(host, port) as ch:
        return int(ch.queue_declare(queue=queue, passive=True).method.consumer_count)


def wait_until(condition: Callable[[], bool], *, timeout: float = 5.0) -> bool:
    """Poll `condition` until true or `timeout`; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(POLL_SECONDS)
    return True


def purge(host: str, port: int, *queues: str) -> None:
    with channel(host, port) as ch:
        for queue in queues:
            ch.queue_purge(queue=queue)


def delete_queues(host: str, port: int, *queues: str) -> None:
    """Delete queues; ones that do not exist are fine."""
    with channel(host, port) as ch:
        for queue in queues:
            ch.queue_delete(queue=queue)


def delete_exchanges(host: str, port: int, *exchanges: str) -> None:
    with channel(host, port) as ch:
        for exchange in exchanges:
            if exchange:
                ch.exchange_delete(exchange=exchange)


def delete_topology(settings: BrokerSettings) -> None:
    """Remove everything `declare_topology` (or `pre_declare_like_todays_service`) made."""
    delete_queues(settings.host, settings.port, *all_queues(settings))
    delete_exchanges(
        settings.host, settings.port, settings.incoming_exchange, settings.transfer_exchange
    )


def pre_declare_like_todays_service(settings: BrokerSettings) -> None:
    """What exists on the live broker (contract §4.5): durable queues without arguments,
    direct non-durable exchanges that are neither auto-delete nor internal, bound by queue name.
    """
    with channel(settings.host, settings.port) as ch:
        for queue, exchange in (
            (settings.incoming_queue, settings.incoming_exchange),
            (settings.transfer_queue, settings.transfer_exchange),
        ):
            ch.queue_declare(queue=queue, durable=True)
            if exchange:
                ch.exchange_declare(
                    exchange=exchange,
                    exchange_type="direct",
                    durable=False,
                    auto_delete=False,
                    internal=False,
                )
                ch.queue_bind(queue=queue, exchange=exchange, routing_key=queue)


def declare_service_topology(settings: BrokerSettings) -> None:
    """Everything the service declares at start (its own retry and dead-letter queues too),
    as a consumer that ran once leaves the broker."""
    with channel(settings.host, settings.port) as ch:
        declare_topology(ch, settings)


def queue_exists(host: str, port: int, queue: str) -> bool:
    try:
        message_count(host, port, queue)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return False
        raise
    return True


def rabbitmqctl(*args: str, timeout: float = 30.0) -> str:
    """Run `rabbitmqctl` (the broker's admin tool) and return its output."""
    completed = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return completed.stdout


def rabbitmqctl_json(*args: str) -> list[dict[str, Any]]:
    """A `rabbitmqctl list_*` answer as a list of objects."""
    answer = json.loads(rabbitmqctl(*args, "--formatter", "json", "--quiet"))
    if not isinstance(answer, list):
        raise AssertionError(f"rabbitmqctl {args!r} did not answer a list: {answer!r}")
    return answer


def connection_pids(connection_name: str) -> list[str]:
    """The broker's ids of the client connections that call themselves `connection_name`.

    The table output, not JSON: only it prints pids in the form `close_connection` takes.
    """
    listing = rabbitmqctl(
        "list_connections", "pid", "client_properties", "--quiet", "--no-table-headers"
    )
    wanted = f'{{"connection_name","{connection_name}"}}'
    return [line.split("\t", 1)[0] for line in listing.splitlines() if wanted in line]


def close_connections(connection_name: str, reason: str = "closed by a test") -> int:
    """Make the broker close the connections named `connection_name`; how many it closed."""
    pids = connection_pids(connection_name)
    for pid in pids:
        rabbitmqctl("close_connection", pid, reason)
    return len(pids)
