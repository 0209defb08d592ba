"""The consumer as a process, with every outside system it talks to running on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from s3_events_handler.adapters.config import load_settings
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.application.retries import RetrySchedule
from tests.support import amqp
from tests.support.ftp_server import FtpTestServer
from tests.support.http_stubs import FakeOrganisationsApi, FakePidService
from tests.support.loopback import LOOPBACK, free_port
from tests.support.mediahaven_server import FakeMediaHaven

REPO = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).parent / "s3-events-handler"
OR_ID = "OR-rf5kf25"
CONSUMER_LOGGER = "s3_events_handler.adapters.rabbitmq.consumer"
FOLDERS = ("VRT/TAPE-SHARE-EVENTS", "VRT/DISK-SHARE-EVENTS")


def default_concurrency() -> int:
    """How many events the consumer handles at once when CONCURRENCY is not set."""
    from tests.unit.test_config import REQUIRED

    return load_settings(REPO / "config.yml", REQUIRED).concurrency


def command() -> list[str]:
    """The installed console script, as operators run it."""
    if COMMAND.exists():
        return [str(COMMAND)]
    return [sys.executable, "-m", "s3_events_handler.entrypoints"]


@dataclass
class RunningService:
    """Fakes of MediaHaven, PID, Organisations and FTP, queue names, and the consumer process."""

    workdir: Path
    broker: tuple[str, int]
    mediahaven: FakeMediaHaven = field(default_factory=FakeMediaHaven)
    pid_service: FakePidService = field(default_factory=FakePidService)
    organisations: FakeOrganisationsApi = field(
        default_factory=lambda: FakeOrganisationsApi({OR_ID: "VRT"})
    )
    process: subprocess.Popen[bytes] | None = None
    label: str = "e2e"
    """In the queue names (`s3eh-{label}-…`), so a look at the broker tells who made them."""
    ftp_root: Path | None = None
    """Where the FTP server keeps its files; `workdir/ftp` unless said."""

    def __post_init__(self) -> None:
        self.ftp = FtpTestServer(self.ftp_root or self.workdir / "ftp")
        self.settings: BrokerSettings = amqp.settings_like_production(
            *self.broker, self.label, retries=RetrySchedule(delays=(1, 2))
        )
        self.log_path = self.workdir / "consumer.log"
        # A port of its own, not the default 9100: tests (and checkouts) side by side
        # each run a consumer.
        self.metrics_port = free_port()

    def start_fakes(self) -> None:
        for folder in FOLDERS:
            (self.ftp.root / folder).mkdir(parents=True, exist_ok=True)
        self.ftp.start()
        self.mediahaven.start()
        self.pid_service.start()
        self.organisations.start()
        # What exists on the live broker before this service ever starts (contract §4.5).
        amqp.pre_declare_like_todays_service(self.settings)

    def environment(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RABBIT_MQ_HOST": s.host,
            "RABBIT_MQ_PORT": str(s.port),
            "RABBIT_MQ_USER": amqp.USER,
            "RABBIT_MQ_PASSWD": amqp.PASSWORD,
            "S3_EVENTS_QUEUE": s.incoming_queue,
            "S3_EVENTS_EXCHANGE": s.incoming_exchange,
            "FILETRANSFER_QUEUE": s.transfer_queue,
            "FILETRANSFER_EXCHANGE": s.transfer_exchange,
            "MEDIAHAVEN_API_HOST": self.mediahaven.base_url,
            "MEDIAHAVEN_API_CLIENT_ID": self.mediahaven.client_id,
            "MEDIAHAVEN_API_CLIENT_SECRET": self.mediahaven.client_secret,
            "MEDIAHAVEN_API_USERNAME": self.mediahaven.username,
            "MEDIAHAVEN_API_PASSWD": self.mediahaven.password,
            "MEDIAHAVEN_API_USER_PREFIX": "ignored-",
            "MEDIAHAVEN_FTP_HOST": self.ftp.host,
            "MEDIAHAVEN_FTP_USER": self.ftp.user,
            "MEDIAHAVEN_FTP_PASSWD": self.ftp.password,
            "PID_SERVICE_HOST": self.pid_service.url,
            "ORGANISATIONS_API_HOST": self.organisations.url,
            "APP_ENVIRONMENT": "production",
            "RETRY_DELAYS": ",".join(str(d) for d in s.retries.delays),
            "RETRY_MAX_ATTEMPTS": "3",
            "HTTP_TIMEOUT_SECONDS": "5",
            "FTP_TIMEOUT_SECONDS": "5",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "CONFIG_PATH": str(REPO / "config.yml"),
            "DESTINATION_CONFIG": str(REPO / "destination_config.yml"),
            "LOG_LEVEL": "INFO",
            "LEDGER_PATH": str(self.workdir / "ledger.sqlite3"),
            # A consumer killed by a test holds its events this long: short, so the one
            # started after it need not wait out the production lease.
            "CLAIM_LEASE_SECONDS": "3",
            "METRICS_PORT": str(self.metrics_port),
        }
        env.update(overrides)
        return env

    def start_consumer(self, *, argv: list[str] | None = None, **env: str) -> None:
        """Run `argv` (default: `s3-events-handler consume`) and wait until it consumes.

        Each process gets a METRICS_PORT of its own (two may run side by side); `get`
        asks the last one started.
        """
        self.metrics_port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv or [*command(), "consume"],
                env=self.environment(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        host, port = self.broker
        ready = amqp.wait_until(
            lambda: self._consumers(host, port) > 0 or self.process.poll() is not None,  # type: ignore[union-attr]
            timeout=20,
        )
        if not ready or self.process.poll() is not None:
            raise AssertionError(f"the consumer did not start:\n{self.log()}")

    def refused_start(self, **env: str) -> str:
        """Run `consume` expecting it to refuse to start: exit 2, one line, no traceback.
        Returns that line."""
        finished = subprocess.run(
            [*command(), "consume"],
            env=self.environment(**env),
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=30,
        )
        assert finished.returncode == 2, finished.stderr
        assert "Traceback" not in finished.stderr
        [line] = finished.stderr.strip().splitlines()
        return line

    def _consumers(self, host: str, port: int) -> int:
        try:
            return amqp.consumer_count(host, port, self.settings.incoming_queue)
        except Exception:  # the queue may not exist yet
            return 0

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`s3-events-handler ARGS` to its end, in this service's environment.

        Standard input is empty, not a terminal: never the terminal pytest may have been
        started from, where a command that asks (`dead-letters drop`) would wait for ever.
        """
        return subprocess.run(
            [*command(), *args],
            env=self.environment(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=120,
        )

    def park(self, body: bytes, **properties: Any) -> None:
        """Put a message straight into the dead-letter queue, as the consumer would have."""
        import pika

        s = self.settings
        amqp.publish(
            s.host, s.port, s.dead_letter_queue, body, properties=pika.BasicProperties(**properties)
        )

    def park_many(self, messages: Iterable[tuple[bytes, dict[str, Any]]]) -> None:
        """`park` each (body, properties), in order, on one connection: thousands in seconds."""
        import pika

        s = self.settings
        with amqp.channel(s.host, s.port) as ch:
            ch.confirm_delivery()
            for body, properties in messages:
                ch.basic_publish(
                    "",
                    s.dead_letter_queue,
                    body,
                    pika.BasicProperties(**properties),
                    mandatory=True,
                )

    def publish_event(self, body: bytes, **properties: Any) -> None:
        import pika

        s = self.settings
        amqp.publish(
            s.host,
            s.port,
            s.incoming_queue,
            body,
            exchange=s.incoming_exchange,
            properties=pika.BasicProperties(**properties) if properties else None,
        )

    def stop_consumer(self) -> int | None:
        """SIGTERM, then the exit status (None when it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON lines of the log (`LOG_FORMAT=json`, the default), parsed."""
        entries = []
        for line in self.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def outcome_lines(self) -> list[dict[str, Any]]:
        """The consumer's one line an event (contract §7): its outcome and facts as fields."""
        return [
            entry
            for entry in self.log_entries()
            if entry.get("logger") == CONSUMER_LOGGER and "outcome" in entry
        ]

    def get(self, path: str) -> tuple[int, str]:
        """Status and body of `GET path` on the consumer's METRICS_PORT."""
        url = f"http://{LOOPBACK}:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def close(self) -> None:
        self.stop_consumer()
        for fake in (self.organisations, self.pid_service, self.mediahaven, self.ftp):
            fake.stop()
        amqp.delete_topology(self.settings)


Service = TypeVar("Service", bound=RunningService)


def running(service: Service) -> Iterator[Service]:
    """For a fixture to `yield from`: `service` with its fakes started, closed afterwards
    (consumer stopped, fakes stopped, its queues deleted)."""
    service.start_fakes()
    try:
        yield service
    finally:
        service.close()
