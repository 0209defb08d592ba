"""Settings: `config.yml` read once, at start, into one frozen `Settings`.

Each `!ENV ${NAME}` value keeps NAME (`env_yaml.py`), so a problem with it names the variable
an operator sets; every problem is collected first, so a deployment is fixed in one round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast, dataclass_transform

from s3_events_handler.adapters import setting_values as values
from s3_events_handler.adapters.env_yaml import load_with_env
from s3_events_handler.adapters.ftp import parse_ftp_host
from s3_events_handler.adapters.ledger_postgres import password_in
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.adapters.tls import readable_ca_file
from s3_events_handler.application.limits import MessageLimits
from s3_events_handler.application.retries import RetrySchedule

T = TypeVar("T")


class ConfigError(Exception):
    """The settings cannot start the service; the message names every problem."""

    def __init__(self, missing: list[str], problems: list[str]) -> None:
        self.missing = missing
        self.problems = problems
        lines = []
        if missing:
            lines.append("missing or empty environment variables: " + ", ".join(missing))
        lines.extend(problems)
        super().__init__("; ".join(lines))

    @classmethod
    def of(cls, problem: str) -> ConfigError:
        """Settings with one problem, and no variable missing."""
        return cls([], [problem])


def _at(dotted: str, convert: Callable[[str], Any] = str, *, secret: bool = False) -> Any:
    """A setting: where `config.yml` has it, and how its text becomes its type."""
    return field(repr=not secret, metadata={"at": dotted, "convert": convert})


@dataclass_transform(frozen_default=True, field_specifiers=(_at,))
def _settings(cls: type[T]) -> type[T]:
    """A frozen dataclass whose `_at` fields `_Reader.build` reads from `config.yml`."""
    return dataclass(frozen=True)(cls)


@_settings
class MediaHavenSettings:
    host: str = _at("mediahaven.api.host")
    client_id: str = _at("mediahaven.api.client_id")
    client_secret: str = _at("mediahaven.api.client_secret", secret=True)
    username: str = _at("mediahaven.api.username")
    password: str = _at("mediahaven.api.passwd", secret=True)
    max_search_pages: int = _at("mediahaven.api.max_search_pages", values.positive_int)


@_settings
class FtpSettings:
    """The transport server MediaHaven takes sidecars from."""

    host: str = _at("mediahaven.ftp.host", values.checked(parse_ftp_host))
    user: str = _at("mediahaven.ftp.user")
    password: str = _at("mediahaven.ftp.passwd", secret=True)
    timeout_seconds: float = _at("mediahaven.ftp.timeout_seconds", values.positive_float)
    tls: bool = _at("mediahaven.ftp.tls", values.flag)
    ca_file: str = _at("mediahaven.ftp.ca_file", readable_ca_file)


@_settings
class LedgerSettings:
    path: str = _at("ledger.path")
    dsn: str = _at("ledger.dsn", secret=True)
    retention_days: float = _at("ledger.retention_days", values.retention_days)
    claim_lease_seconds: float = _at("ledger.claim_lease_seconds", values.claim_lease)

    @property
    def variable(self) -> str:
        """The variable that chose the ledger: PostgreSQL when LEDGER_DSN is set, else SQLite."""
        return "LEDGER_DSN" if self.dsn else "LEDGER_PATH"


@_settings
class S3Settings:
    """The S3 API `reconcile` lists a bucket through (contract §8); only it needs `S3_NEEDED`."""

    endpoint_url: str = _at("s3.endpoint_url")
    access_key_id: str = _at("s3.access_key_id")
    secret_access_key: str = _at("s3.secret_access_key", secret=True)
    region: str = _at("s3.region")
    domain: str = _at("s3.domain")


S3_NEEDED = ("s3.endpoint_url", "s3.access_key_id", "s3.secret_access_key")


@_settings
class Settings:
    """Everything the service is told, typed and checked; what the container is built from."""

    environment: str = _at("app.environment")
    collateral_bucket: str = _at("app.collateral_bucket")
    destination_config: Path = _at("app.destination_config", Path)
    shutdown_grace_seconds: float = _at("app.shutdown_grace_seconds", values.positive_float)
    pin_cpu: bool = _at("app.pin_cpu", values.flag)
    log_level: str = _at(
        "logging.level", values.choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True)
    )
    log_format: str = _at("logging.format", values.choice("json", "text"))
    metrics_port: int = _at("metrics.port", values.port_or_off)
    pid_service_host: str = _at("pid_service.host")
    organisations_host: str = _at("organisations_api.host")
    organisations_cache_seconds: float = _at(
        "organisations_api.cache_seconds", values.positive_float
    )
    http_timeout_seconds: float = _at("http.timeout_seconds", values.positive_float)
    concurrency: int
    limits: MessageLimits
    broker: BrokerSettings
    mediahaven: MediaHavenSettings
    ftp: FtpSettings
    ledger: LedgerSettings
    s3: S3Settings

    @property
    def secrets(self) -> list[str]:
        """What no log line or report may show."""
        dsn, s3_secret = self.ledger.dsn, self.s3.secret_access_key
        return [
            self.broker.password,
            self.mediahaven.client_secret,
            self.mediahaven.password,
            self.ftp.password,
            *([dsn, password_in(dsn) or ""] if dsn else []),
            *([s3_secret] if s3_secret else []),
        ]


class _Reader:
    """`config.yml` as loaded, read one value at a time into its type; each problem is kept
    for `check`, and a value with a problem reads as None meanwhile."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        tree, self._missing = load_with_env(path, environ)
        if not isinstance(tree, dict):
            raise ConfigError.of(f"{path} does not hold a mapping")
        self._path, self._tree = path, tree
        self._problems: list[str] = []

    def __call__(self, dotted: str, convert: Callable[[str], T]) -> T:
        value = self._value(dotted)
        if value is None:
            self._problems.append(f"{self._path} has no value for {dotted}")
        elif self._name(dotted) not in self._missing:
            try:
                return convert(str(value))
            except ValueError as error:
                self._problems.append(f"{self._name(dotted)}={str(value)!r} is not valid: {error}")
        return cast(T, None)  # never seen: `check` raises

    def build(self, cls: type[T], **given: Any) -> T:
        """A `_settings` class: each `_at` field read, the others `given`."""
        for setting in fields(cls):  # type: ignore[arg-type]
            if "at" in setting.metadata:
                given[setting.name] = self(setting.metadata["at"], setting.metadata["convert"])
        return cls(**given)

    def refuse_ca_file_without_tls(self, switch: str, ca_file: str, on: bool, ca: str) -> None:
        """An operator who set the CA file would believe in a protection that is not there."""
        if ca and on is False:
            switch_name, ca_name = self._name(switch), self._name(ca_file)
            self._problems.append(
                f"{ca_name} is set but {switch_name} is not true: "
                f"set {switch_name}=true to use it, or leave {ca_name} empty"
            )

    def require(self, needed: tuple[str, ...]) -> None:
        """Values `config.yml` may leave empty that one command cannot do without: named
        with the missing ones, in the order asked."""
        for dotted in needed:  # a value that is not there at all is a problem already
            name = self._name(dotted)
            if self._value(dotted) == "" and name not in self._missing:
                self._missing.append(name)

    def check(self) -> None:
        if self._missing or self._problems:
            raise ConfigError(self._missing, self._problems)

    def _value(self, dotted: str) -> Any:
        node: Any = self._tree
        for step in dotted.split("."):
            if not isinstance(node, dict) or step not in node:
                return None
            node = node[step]
        return node

    def _name(self, dotted: str) -> str:
        """The variable behind a value, else its place in `config.yml`."""
        return getattr(self._value(dotted), "variable", "") or dotted


def load_settings(
    path: Path, environ: Mapping[str, str], *, needs: tuple[str, ...] = ()
) -> Settings:
    """The settings from `config.yml` at `path` and `environ`; raises `ConfigError`.
    `needs`: optional values the caller cannot do without (as `S3_NEEDED`)."""
    read = _Reader(path, environ)
    concurrency = read("app.concurrency", values.concurrency)
    prefetch = read("rabbitmq.prefetch", values.prefetch)
    broker = BrokerSettings(
        host=read("rabbitmq.host", str),
        port=read("rabbitmq.port", values.positive_int),
        user=read("rabbitmq.user", str),
        password=read("rabbitmq.passwd", str),
        vhost=read("rabbitmq.vhost", str),
        prefetch=prefetch or concurrency,
        heartbeat=read("rabbitmq.heartbeat", values.positive_int),
        tls=read("rabbitmq.ssl", values.flag),
        ca_file=read("rabbitmq.ca_file", readable_ca_file),
        incoming_queue=read("rabbitmq.incoming.queue", str),
        incoming_exchange=read("rabbitmq.incoming.exchange", str),
        transfer_queue=read("rabbitmq.outgoing.queue", str),
        transfer_exchange=read("rabbitmq.outgoing.exchange", str),
        retries=RetrySchedule(
            delays=read("app.retry_delays", values.delays),
            max_attempts=read("app.retry_max_attempts", values.positive_int),
        ),
    )
    limits = MessageLimits(
        max_bytes=read("app.max_message_bytes", values.positive_int),
        max_records=read("app.max_records", values.positive_int),
        poison_limit=read("app.poison_limit", values.positive_int),
    )
    ftp = read.build(FtpSettings)
    settings = read.build(
        Settings,
        concurrency=concurrency,
        limits=limits,
        broker=broker,
        mediahaven=read.build(MediaHavenSettings),
        ftp=ftp,
        ledger=read.build(LedgerSettings),
        s3=read.build(S3Settings),
    )
    read.refuse_ca_file_without_tls("rabbitmq.ssl", "rabbitmq.ca_file", broker.tls, broker.ca_file)
    read.refuse_ca_file_without_tls(
        "mediahaven.ftp.tls", "mediahaven.ftp.ca_file", ftp.tls, ftp.ca_file
    )
    read.require(needs)
    read.check()
    return settings
