"""What the broker fault tests share: distinct events, the consumer's own broker connections,
stopping the broker app, and an account of what came out (transfer requests, sidecars).

The consumer process calls its connection "s3-events-handler", as every other consumer
process on this broker does; its connections are found by their client ports instead,
read from /proc for the process's own sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from tests.e2e.service import RunningService
from tests.support import amqp

ESSENCE_FOLDER = Path("VRT") / "TAPE-SHARE-EVENTS"


# -- events in -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    key: str
    request_id: str
    body: bytes


def essence_events(examples: Path, label: str, count: int) -> list[Event]:
    """`count` essence events, each with its own object key and x-viaa-request-id."""
    template = json.loads((examples / "event-essence-created.json").read_text())
    events = []
    for n in range(count):
        message = json.loads(json.dumps(template))
        record = message["Records"][0]
        key, request_id = f"{label}-{n:03d}.MXF", f"{label}-request-{n:03d}"
        record["s3"]["object"]["key"] = key
        record["responseElements"]["x-viaa-request-id"] = request_id
        events.append(Event(key, request_id, json.dumps(message).encode()))
    return events


def publish_persistent(service: RunningService, events: list[Event]) -> None:
    """As the gateway does, through the incoming exchange; persistent, confirmed, mandatory."""
    amqp.publish_persistent(service.settings, (event.body for event in events))


# -- the consumer's broker connections -------------------------------------------------


@dataclass(frozen=True)
class ClientConnection:
    """One AMQP connection as the broker lists it."""

    pid: str  # the broker's id of the connection, as `close_connection` takes it
    peer_port: int
    heartbeat: int  # seconds, as negotiated


def _socket_inodes(process_id: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{process_id}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink()
        except OSError:  # closed meanwhile
            continue
        name = str(target)
        if name.startswith("socket:["):
            inodes.add(name[len("socket:[") : -1])
    return inodes


def client_ports(process_id: int, remote_port: int) -> set[int]:
    """Local ports of the process's TCP connections to `remote_port`."""
    inodes = _socket_inodes(process_id)
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{process_id}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def connections_of(process_id: int, broker_port: int) -> list[ClientConnection]:
    """The broker's connections whose client is the process `process_id`."""
    ports = client_ports(process_id, broker_port)
    if not ports:
        return []
    listing = amqp.rabbitmqctl(
        "list_connections", "pid", "peer_port", "timeout", "--quiet", "--no-table-headers"
    )
    found = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in ports:
            found.append(ClientConnection(parts[0], int(parts[1]), int(parts[2])))
    return found


def close_connections_of(process_id: int, broker_port: int) -> list[ClientConnection]:
    """Make the broker close the process's connections; the ones it closed."""
    closing = connections_of(process_id, broker_port)
    for connection in closing:
        amqp.rabbitmqctl("close_connection", connection.pid, "closed by a broker fault test")
    return closing


def wait_for_new_connection(
    process_id: int, broker_port: int, old: list[ClientConnection], timeout: float
) -> ClientConnection | None:
    """A connection of the process that is none of `old`, or None after `timeout`."""
    old_pids = {connection.pid for connection in old}
    fresh: list[ClientConnection] = []

    def reconnected() -> bool:
        fresh[:] = [c for c in connections_of(process_id, broker_port) if c.pid not in old_pids]
        return bool(fresh)

    amqp.wait_until(reconnected, timeout=timeout)
    return fresh[0] if fresh else None


# -- the broker app ----------------------------------------------------------------------


@dataclass
class Outage:
    stopped_in: float = 0.0  # seconds `stop_app` took
    started_in: float = 0.0  # seconds from `start_app` until the broker accepted clients


@contextmanager
def broker_app_stopped() -> Iterator[Outage]:
    """The RabbitMQ app stopped (every connection closed, the Erlang node still up), and
    started again on the way out, whatever happened inside: other tests need it."""
    outage = Outage()
    began = time.monotonic()
    try:
        amqp.rabbitmqctl("stop_app", timeout=120)
        outage.stopped_in = time.monotonic() - began
        yield outage
    finally:
        began = time.monotonic()
        amqp.rabbitmqctl("start_app", timeout=120)
        amqp.rabbitmqctl("await_startup", "--timeout", "120", timeout=150)
        outage.started_in = time.monotonic() - began


def durable_queues(settings: BrokerSettings) -> dict[str, bool]:
    """Which of the service's queues the broker keeps across a restart."""
    names = set(amqp.all_queues(settings))
    return {
        str(row["name"]): bool(row["durable"])
        for row in amqp.rabbitmqctl_json("list_queues", "name", "durable")
        if row["name"] in names
    }


def queue_depths(settings: BrokerSettings) -> dict[str, tuple[int, int]]:
    """(ready, unacked) of each of the service's queues."""
    names = set(amqp.all_queues(settings))
    return {
        str(row["name"]): (int(row["messages_ready"]), int(row["messages_unacknowledged"]))
        for row in amqp.rabbitmqctl_json(
            "list_queues", "name", "messages_ready", "messages_unacknowledged"
        )
        if row["name"] in names
    }


def wait_until_settled(settings: BrokerSettings, timeout: float) -> dict[str, tuple[int, int]]:
    """Wait until nothing is in the incoming or a retry queue, ready or in hand; the depths."""
    waiting = [settings.incoming_queue, *map(settings.retry_queue, settings.retries.delays)]
    depths: dict[str, tuple[int, int]] = {}

    def settled() -> bool:
        depths.update(queue_depths(settings))
        return all(sum(depths.get(queue, (0, 0))) == 0 for queue in waiting)

    amqp.wait_until(settled, timeout=timeout)
    return depths


# -- what came out -----------------------------------------------------------------------


@dataclass
class Transfers:
    """Transfer requests taken from the transfer queue so far."""

    settings: BrokerSettings
    messages: list[amqp.Message] = field(default_factory=list)

    def message_ids_by_key(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for message in self.messages:
            key = message.json()["source"]["object"]["key"]
            found.setdefault(key, set()).add(str(message.properties.message_id))
        return found

    @property
    def keys(self) -> set[str]:
        return set(self.message_ids_by_key())

    def take_until(self, distinct_keys: int, timeout: float) -> int:
        """Take requests until `distinct_keys` objects have one, or `timeout`; how many have."""
        s = self.settings
        deadline = time.monotonic() + timeout
        while len(self.keys) < distinct_keys:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wanted = distinct_keys - len(self.keys)
            self.messages.extend(
                amqp.wait_for_messages(s.host, s.port, s.transfer_queue, wanted, timeout=left)
            )
        return len(self.keys)

    def take_rest(self) -> None:
        s = self.settings
        self.messages.extend(amqp.get_messages(s.host, s.port, s.transfer_queue))


def sidecars(service: RunningService) -> dict[str, str]:
    """File name -> the s3_object_key it describes, for every file in the essence folder."""
    found = {}
    for path in sorted((service.ftp.root / ESSENCE_FOLDER).iterdir()):
        if not path.name.endswith(".xml"):
            found[path.name] = ""  # a leftover temporary file: reported by the caller
            continue
        key = etree.parse(str(path)).getroot().findtext(".//s3_object_key")
        found[path.name] = key or ""
    return found


@dataclass(frozen=True)
class Tally:
    """Events sent, and what became of them."""

    sent: int
    processed: int  # distinct object keys with a transfer request
    requests: int  # transfer requests in all
    duplicated: int  # requests beyond one per key (each with the key's own message_id)
    conflicting: list[str]  # keys with two different message_ids (PIDs)
    lost: list[str]  # keys without a transfer request
    sidecar_problems: list[str]

    @property
    def clean(self) -> bool:
        return not (self.conflicting or self.lost or self.sidecar_problems)


def tally(events: list[Event], transfers: Transfers, service: RunningService) -> Tally:
    """One transfer request (or repeats of it) and one sidecar per event, consistent."""
    by_key = transfers.message_ids_by_key()
    sent = {event.key for event in events}
    files = sidecars(service)
    problems = [f"unexpected file {name}" for name, key in files.items() if key not in sent]
    for key in sorted(sent & set(by_key)):
        named = sorted(name for name, described in files.items() if described == key)
        wanted = [f"{message_id}.xml" for message_id in sorted(by_key[key])]
        if named != wanted:
            problems.append(f"{key}: sidecars {named}, transfer requests for {wanted}")
    return Tally(
        sent=len(events),
        processed=len(sent & set(by_key)),
        requests=len(transfers.messages),
        duplicated=len(transfers.messages) - len(by_key),
        conflicting=sorted(key for key, ids in by_key.items() if len(ids) > 1),
        lost=sorted(sent - set(by_key)),
        sidecar_problems=problems,
    )


# -- the consumer's log ------------------------------------------------------------------


def log_messages(service: RunningService) -> list[str]:
    """The consumer's log lines (JSON lines read for their message)."""
    messages = []
    for line in service.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        messages.append(str(entry.get("message", line)) if isinstance(entry, dict) else line)
    return messages


def count_in_log(service: RunningService, text: str) -> int:
    return sum(text in message for message in log_messages(service))


def reconnect_delays(service: RunningService) -> list[float]:
    """The backoff the consumer announced, in order ("reconnecting to the broker in N s")."""
    prefix = "reconnecting to the broker in "
    return [
        float(message[len(prefix) :].split()[0])
        for message in log_messages(service)
        if message.startswith(prefix)
    ]
