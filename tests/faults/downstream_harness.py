"""What the downstream fault tests need beyond the end-to-end `RunningService`.

- `Relay` (from `tests.support.relay`): a TCP relay on a loopback port that survives
  outages.
- `TimedMediaHaven`: the fake MediaHaven, noting when each request arrived.
- `CuttingFtpServer`: the FTP test server, able to cut uploads off half-way and
  noting what each rename put under a final name.
- `FaultyService`: the consumer process among those fakes (PID service and
  Organisations API reached through relays), with a tally of where every event ended.

Waiting is bounded polling, never a guessed sleep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.e2e.service import RunningService
from tests.support import amqp
from tests.support.ftp_server import FtpTestServer
from tests.support.mediahaven_server import FakeMediaHaven
from tests.support.relay import Relay

with warnings.catch_warnings():
    # pyftpdlib still imports asyncore/asynchat, deprecated since Python 3.6.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.handlers import DTPHandler

POLL_SECONDS = 0.05
ESSENCE_FOLDER = ("VRT", "TAPE-SHARE-EVENTS")


def port_of(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url!r}")
    return port


# -- MediaHaven with arrival times --------------------------------------------------------------


class TimedMediaHaven(FakeMediaHaven):
    """The fake MediaHaven, noting (monotonic time, method, path) of every request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, str, str]] = []

    def _take_fault(self, method: str, path: str) -> Any:
        with self._lock:
            self.arrivals.append((time.monotonic(), method, path))
        return super()._take_fault(method, path)

    def arrival_times(self, path: str) -> list[float]:
        with self._lock:
            return [at for at, _method, seen in self.arrivals if seen.startswith(path)]


# -- an FTP server that cuts uploads off -----------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """An upload whose data connection the server dropped after writing `kept` bytes."""

    path: str
    kept: int
    received: int


class CuttingFtpServer(FtpTestServer):
    """The FTP test server; `cut_next(n)` cuts the next n uploads off half-way.

    A cut upload keeps half of the first chunk it received, drops the data
    connection and answers `426`, as a server does whose data connection broke.
    `finals` holds, for every rename, the target path and the bytes it got.
    """

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self._cuts_left = 0
        self._cuts: list[Cut] = []
        self._finals: list[tuple[str, bytes]] = []

    def cut_next(self, uploads: int) -> None:
        with self._lock:
            self._cuts_left = uploads

    @property
    def cuts(self) -> list[Cut]:
        return self._snapshot(self._cuts)

    @property
    def finals(self) -> list[tuple[str, bytes]]:
        return self._snapshot(self._finals)

    def _take_cut(self) -> bool:
        with self._lock:
            if self._cuts_left <= 0:
                return False
            self._cuts_left -= 1
            return True

    def _handler_class(self, authorizer: Any) -> type[Any]:
        base = super()._handler_class(authorizer)
        owner = self

        class RecordingFileSystem(base.abstracted_fs):  # type: ignore[misc, name-defined]
            def rename(self, src: str, dst: str) -> None:
                content = Path(src).read_bytes()
                super().rename(src, dst)
                owner._record(owner._finals, (self.fs2ftp(dst), content))

        class CuttingDataChannel(DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
            cutting: bool | None = None

            def handle_read(self) -> None:
                if self.receive and self.cutting is None:
                    self.cutting = owner._take_cut()
                if not self.cutting:
                    super().handle_read()
                    return
                try:
                    chunk = self.recv(self.ac_in_buffer_size)
                except Exception:  # nothing to read after all: wait for the next event
                    return
                if not chunk:
                    return
                kept = chunk[: len(chunk) // 2]
                self.file_obj.write(kept)
                self.file_obj.flush()
                cut = Cut(self.cmd_channel.fs.fs2ftp(self.file_obj.name), len(kept), len(chunk))
                owner._record(owner._cuts, cut)
                self.transfer_finished = False
                self._resp = ("426 Connection closed; transfer aborted.", logging.debug)
                self.close()

            handle_read_event = handle_read

        class Handler(base):  # type: ignore[misc, valid-type]
            dtp_handler = CuttingDataChannel
            abstracted_fs = RecordingFileSystem

        return Handler


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    key: str
    body: bytes


def essence_events(examples: Path, count: int, label: str = "faults") -> list[Event]:
    """`count` distinct essence events shaped like the golden one (own key, request id, md5)."""
    template = json.loads((examples / "event-essence-created.json").read_text())
    events = []
    run = uuid.uuid4().hex[:8]
    for number in range(count):
        message = json.loads(json.dumps(template))
        record = message["Records"][0]
        key = f"{label}-{run}-{number:05d}.MXF"
        digest = hashlib.md5(key.encode()).hexdigest()
        record["responseElements"]["x-viaa-request-id"] = f"{run}{number:024d}"
        record["s3"]["object"]["key"] = key
        record["s3"]["object"]["eTag"] = digest
        record["s3"]["object"]["metadata"]["md5sum"] = digest
        events.append(Event(key, json.dumps(message).encode()))
    return events


def golden_event(examples: Path) -> Event:
    body = (examples / "event-essence-created.json").read_bytes()
    key = json.loads(body)["Records"][0]["s3"]["object"]["key"]
    return Event(str(key), body)


# -- where every event ended ---------------------------------------------------------------------


@dataclass
class Tally:
    """After the consumer stopped: where each published event ended up."""

    events: int
    transfers: list[amqp.Message]
    dead: list[amqp.Message]
    waiting: int

    @property
    def transferred_keys(self) -> Counter[str]:
        return Counter(str(m.json()["source"]["object"]["key"]) for m in self.transfers)

    @property
    def processed(self) -> int:
        return len(self.transferred_keys)

    @property
    def duplicated(self) -> int:
        return sum(count - 1 for count in self.transferred_keys.values())

    @property
    def dead_lettered(self) -> int:
        return len(self.dead)

    @property
    def lost(self) -> int:
        return self.events - self.processed - self.dead_lettered - self.waiting

    def figures(self) -> str:
        return (
            f"events={self.events} processed={self.processed} duplicated={self.duplicated} "
            f"dead-lettered={self.dead_lettered} waiting={self.waiting} lost={self.lost}"
        )


_OUTCOME = re.compile(r"^(done|retry|dead-letter|split): message \d+ \(correlation id [^)]*\) -> ")


@dataclass
class FaultyService(RunningService):
    """The consumer process among fakes whose faults a test can turn on and off."""

    mediahaven: TimedMediaHaven = field(default_factory=TimedMediaHaven)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cutting_ftp = CuttingFtpServer(self.workdir / "ftp")
        self.ftp = self.cutting_ftp
        self.pid_relay = Relay()
        self.organisations_relay = Relay()

    def start_fakes(self) -> None:
        super().start_fakes()
        self.pid_relay = Relay(port_of(self.pid_service.url)).up()
        self.organisations_relay = Relay(port_of(self.organisations.url)).up()

    def environment(self, **overrides: str) -> dict[str, str]:
        through_relays = {
            "PID_SERVICE_HOST": self.pid_relay.url(),
            "ORGANISATIONS_API_HOST": self.organisations_relay.url(),
            "LOG_FORMAT": "json",  # `log_messages` reads it
        }
        return super().environment(**{**through_relays, **overrides})

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.pid_relay.down()
            self.organisations_relay.down()

    # -- in and out ---------------------------------------------------------------------------

    def publish_events(self, events: Iterable[Event]) -> None:
        """Publish through the incoming exchange on one connection, each confirmed."""
        amqp.publish_persistent(self.settings, (event.body for event in events))

    @property
    def essence_folder(self) -> Path:
        return self.ftp.root.joinpath(*ESSENCE_FOLDER)

    def sidecars(self) -> list[str]:
        """Names of the files in the essence folder, hidden ones included."""
        return sorted(path.name for path in self.essence_folder.iterdir())

    # -- the consumer's account -------------------------------------------------------------

    def log_messages(self) -> list[str]:
        """The `message` of each JSON log line of the consumer."""
        return [e["message"] for e in self.log_entries() if isinstance(e.get("message"), str)]

    def outcomes(self) -> Counter[str]:
        """How many messages the consumer settled as done, retry, dead-letter, split."""
        found: Counter[str] = Counter()
        for message in self.log_messages():
            match = _OUTCOME.match(message)
            if match is not None:
                found[match.group(1)] += 1
        return found

    def retried_to(self) -> list[str]:
        """The retry queue of each retry, in order."""
        return [
            m.rsplit(" -> ", 1)[1] for m in self.log_messages() if m.startswith("retry: message")
        ]

    # -- waiting -------------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Poll `condition` until true, the timeout, or the consumer's death."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline or not self._alive():
                return condition()
            time.sleep(POLL_SECONDS)
        return True

    def wait_for_outcome(self, kind: str, count: int = 1, *, timeout: float = 20) -> None:
        if not self.wait_for(lambda: self.outcomes()[kind] >= count, timeout=timeout):
            raise AssertionError(
                f"{self.outcomes()[kind]} of {count} {kind!r} outcomes came\n{self.log()}"
            )

    def wait_for_queue(self, queue: str, count: int, *, timeout: float = 20) -> None:
        """Until `queue` holds at least `count` ready messages (one connection for all polls)."""
        s = self.settings
        deadline = time.monotonic() + timeout
        with amqp.channel(s.host, s.port) as ch:
            while True:
                held = int(ch.queue_declare(queue=queue, passive=True).method.message_count)
                if held >= count:
                    return
                if time.monotonic() >= deadline or not self._alive():
                    raise AssertionError(f"{queue} holds {held} of {count} messages\n{self.log()}")
                ch.connection.sleep(POLL_SECONDS)

    def wait_for_transfers(self, count: int, *, timeout: float = 20) -> None:
        self.wait_for_queue(self.settings.transfer_queue, count, timeout=timeout)

    # -- the end of a run ------------------------------------------------------------------------

    def settle(self, events: int) -> Tally:
        """Stop the consumer (it must exit 0), then take everything out of its queues."""
        status = self.stop_consumer()
        if status != 0:
            raise AssertionError(f"the consumer exited with {status}\n{self.log()}")
        s = self.settings
        transfers = amqp.get_messages(s.host, s.port, s.transfer_queue)
        dead = amqp.get_messages(s.host, s.port, s.dead_letter_queue)
        waiting = sum(
            amqp.message_count(s.host, s.port, queue)
            for queue in (s.incoming_queue, *(s.retry_queue(d) for d in s.retries.delays))
        )
        return Tally(events, transfers, dead, waiting)

    def assert_each_event_once(self, tally: Tally, events: list[Event]) -> None:
        """One transfer request, one sidecar (no temporary left), one distinct PID per event."""
        where = f"{tally.figures()}\n{self.log()}"
        assert tally.transferred_keys == Counter(e.key for e in events), where
        assert (tally.duplicated, tally.dead_lettered, tally.waiting, tally.lost) == (
            0,
            0,
            0,
            0,
        ), where
        pids = [str(m.properties.message_id) for m in tally.transfers]
        assert len(set(pids)) == len(events), where
        assert self.sidecars() == sorted(f"{pid}.xml" for pid in pids), where
        for message in tally.transfers:
            path = message.json()["destination"]["path"]
            assert path.endswith(f"/{message.properties.message_id}.MXF"), path


def amqp_connections_of(pid: int, broker_port: int) -> tuple[int, int]:
    """(connections process `pid` holds to the broker, how many of them the broker lists)."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( dport = :{broker_port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    ports = {
        line.split()[2].rsplit(":", 1)[1] for line in listing.splitlines() if f"pid={pid}," in line
    }
    known = amqp.rabbitmqctl("list_connections", "peer_port", "--quiet", "--no-table-headers")
    return len(ports), len(ports & {line.strip() for line in known.splitlines()})
