"""Settings: `config.yml` read once, at start, into one frozen `Settings`.

`config.yml` gives the shape and the defaults; each `!ENV ${NAME}` tag fills a value in from
the environment, and the value keeps NAME, so a problem with it names the variable an operator
sets. Every problem is collected before anything is reported, so an operator fixes a
deployment in one round instead of one variable per restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from s3_events_handler.adapters.ledger_postgres import password_in
from s3_events_handler.adapters.rabbitmq import BrokerSettings
from s3_events_handler.adapters.tls import readable_ca_file
from s3_events_handler.application.limits import MessageLimits
from s3_events_handler.application.reasons import one_line
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.model import (
    DEFAULT_FOLDER,
    Destinations,
    FileKind,
    require_path_segment,
)

T = TypeVar("T")
# ${NAME} required; ${NAME?} must be set but may be empty; ${NAME:-default} optional.
_REFERENCE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<set>\?)|:-(?P<default>[^}]*))?\}"
)
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


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


@dataclass(frozen=True)
class MediaHavenSettings:
    host: str
    client_id: str
    client_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    max_search_pages: int


@dataclass(frozen=True)
class FtpSettings:
    """The transport server MediaHaven takes sidecars from."""

    host: str
    user: str
    password: str = field(repr=False)
    timeout_seconds: float
    tls: bool
    ca_file: str


@dataclass(frozen=True)
class LedgerSettings:
    path: str
    dsn: str = field(repr=False)
    retention_days: float
    claim_lease_seconds: float

    @property
    def variable(self) -> str:
        """The variable that chose the ledger: PostgreSQL when LEDGER_DSN is set, else SQLite."""
        return "LEDGER_DSN" if self.dsn else "LEDGER_PATH"


@dataclass(frozen=True)
class Settings:
    """Everything the service is told, typed and checked; what the container is built from."""

    environment: str
    collateral_bucket: str
    destination_config: Path
    shutdown_grace_seconds: float
    concurrency: int
    pin_cpu: bool
    limits: MessageLimits
    log_level: str
    log_format: str
    metrics_port: int
    broker: BrokerSettings
    mediahaven: MediaHavenSettings
    ftp: FtpSettings
    pid_service_host: str
    organisations_host: str
    organisations_cache_seconds: float
    http_timeout_seconds: float
    ledger: LedgerSettings

    @property
    def secrets(self) -> list[str]:
        """What no log line or report may show."""
        dsn = self.ledger.dsn
        return [
            self.broker.password,
            self.mediahaven.client_secret,
            self.mediahaven.password,
            self.ftp.password,
            *([dsn, password_in(dsn) or ""] if dsn else []),
        ]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _port_or_off(value: str) -> int:
    """A TCP port, or 0 for none."""
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port (1 to 65535), or 0 for off")
    return number


# Each worker may hold an FTP connection and an HTTP connection to each service of its own.
MAX_CONCURRENCY = 64


def _concurrency(value: str) -> int:
    workers = _positive_int(value)
    if workers > MAX_CONCURRENCY:
        raise ValueError(f"must be at most {MAX_CONCURRENCY}")
    return workers


def _prefetch(value: str) -> int | None:
    """Messages the broker hands over before any is acked; empty: one per worker (CONCURRENCY)."""
    return _positive_int(value) if value.strip() else None


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be above 0")
    return number


def _retention_days(value: str) -> float:
    """Days, fractions allowed; under one day a redelivered event could outlive its PID."""
    days = float(value)
    if not 1 <= days < math.inf:
        raise ValueError("must be at least 1 day, so the ledger outlives the longest retry chain")
    return days


def _claim_lease(value: str) -> float:
    """At least 3 s: the heartbeat renews a claim every third of it, one statement each."""
    seconds = _positive_float(value)
    if seconds < 3:
        raise ValueError("must be at least 3 seconds")
    return seconds


def _delays(value: str) -> tuple[int, ...]:
    delays = tuple(_positive_int(part.strip()) for part in value.split(","))
    if not delays:
        raise ValueError("needs at least one delay")
    return delays


def _flag(value: str) -> bool:
    """true/false, 1/0, yes/no in any case; anything else may be a typo that turns TLS off."""
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError("must be true or false (or 1/0, yes/no)")


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert


class _FromEnv(str):
    """A value an `!ENV` tag filled in, with the variable it came from."""

    variable: str


class _EnvLoader(yaml.SafeLoader):
    """A safe loader that knows `!ENV`; one per load, as it remembers what was missing."""

    def __init__(self, stream: Any, environ: Mapping[str, str]) -> None:
        super().__init__(stream)
        self.environ = environ
        self.missing: list[str] = []


def _substitute(loader: _EnvLoader, node: yaml.ScalarNode) -> _FromEnv:
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        names.append(name)
        value = loader.environ.get(name)
        if match.group("default") is not None:
            return value or match.group("default")
        if value is None or (not value and match.group("set") is None):
            loader.missing.append(name)
            return ""
        return value

    value = _FromEnv(_REFERENCE.sub(replace, loader.construct_scalar(node)))
    value.variable = names[0] if names else ""
    return value


_EnvLoader.add_constructor("!ENV", _substitute)


class _Reader:
    """`config.yml` as loaded, read one value at a time into its type; each problem is kept
    for `check`, and a value with a problem reads as None meanwhile."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        with path.open() as stream:
            loader = _EnvLoader(stream, environ)
            try:
                tree = loader.get_single_data()
            finally:
                loader.dispose()
        if not isinstance(tree, dict):
            raise ConfigError([], [f"{path} does not hold a mapping"])
        self._path, self._tree = path, tree
        self._missing = sorted(set(loader.missing))
        self._problems: list[str] = []
        self._conflicts: list[str] = []

    @overload
    def __call__(self, dotted: str) -> str: ...
    @overload
    def __call__(self, dotted: str, convert: Callable[[str], T]) -> T: ...
    def __call__(self, dotted: str, convert: Callable[[str], Any] = str) -> Any:
        value = self._value(dotted)
        if value is None or self._name(dotted) in self._missing:
            return None
        try:
            return convert(str(value))
        except ValueError as error:
            self._problems.append(f"{self._name(dotted)}={str(value)!r} is not valid: {error}")
            return None

    def tls(self, switch: str, ca_file: str) -> tuple[bool, str]:
        """A TLS switch and its CA file. A CA file without its switch is refused: an operator
        who set it would believe in a protection that is not there."""
        on, ca = self(switch, _flag), self(ca_file, readable_ca_file)
        if ca and on is False:
            switch_name, ca_name = self._name(switch), self._name(ca_file)
            self._conflicts.append(
                f"{ca_name} is set but {switch_name} is not true: "
                f"set {switch_name}=true to use it, or leave {ca_name} empty"
            )
        return on, ca

    def check(self) -> None:
        if self._missing or self._problems or self._conflicts:
            raise ConfigError(self._missing, self._problems + self._conflicts)

    def _value(self, dotted: str) -> Any:
        node: Any = self._tree
        for step in dotted.split("."):
            if not isinstance(node, dict) or step not in node:
                self._problems.append(f"{self._path} has no {dotted}")
                return None
            node = node[step]
        return node

    def _name(self, dotted: str) -> str:
        """The variable behind a value, else its place in `config.yml`."""
        value = self._value(dotted)
        return getattr(value, "variable", "") or dotted


def load_settings(path: Path, environ: Mapping[str, str]) -> Settings:
    """The settings from `config.yml` at `path` and `environ`; raises `ConfigError`."""
    read = _Reader(path, environ)
    concurrency = read("app.concurrency", _concurrency)
    prefetch = read("rabbitmq.prefetch", _prefetch)
    broker_tls, broker_ca_file = read.tls("rabbitmq.ssl", "rabbitmq.ca_file")
    ftp_tls, ftp_ca_file = read.tls("mediahaven.ftp.tls", "mediahaven.ftp.ca_file")
    settings = Settings(
        environment=read("app.environment"),
        collateral_bucket=read("app.collateral_bucket"),
        destination_config=read("app.destination_config", Path),
        shutdown_grace_seconds=read("app.shutdown_grace_seconds", _positive_float),
        concurrency=concurrency,
        pin_cpu=read("app.pin_cpu", _flag),
        limits=MessageLimits(
            max_bytes=read("app.max_message_bytes", _positive_int),
            max_records=read("app.max_records", _positive_int),
            poison_limit=read("app.poison_limit", _positive_int),
        ),
        log_level=read("logging.level", _choice(LOG_LEVELS, upper=True)),
        log_format=read("logging.format", _choice(LOG_FORMATS)),
        metrics_port=read("metrics.port", _port_or_off),
        broker=BrokerSettings(
            host=read("rabbitmq.host"),
            port=read("rabbitmq.port", _positive_int),
            user=read("rabbitmq.user"),
            password=read("rabbitmq.passwd"),
            vhost=read("rabbitmq.vhost"),
            prefetch=concurrency if prefetch is None else prefetch,
            heartbeat=read("rabbitmq.heartbeat", _positive_int),
            tls=broker_tls,
            ca_file=broker_ca_file,
            incoming_queue=read("rabbitmq.incoming.queue"),
            incoming_exchange=read("rabbitmq.incoming.exchange"),
            transfer_queue=read("rabbitmq.outgoing.queue"),
            transfer_exchange=read("rabbitmq.outgoing.exchange"),
            retries=RetrySchedule(
                delays=read("app.retry_delays", _delays),
                max_attempts=read("app.retry_max_attempts", _positive_int),
            ),
        ),
        mediahaven=MediaHavenSettings(
            host=read("mediahaven.api.host"),
            client_id=read("mediahaven.api.client_id"),
            client_secret=read("mediahaven.api.client_secret"),
            username=read("mediahaven.api.username"),
            password=read("mediahaven.api.passwd"),
            max_search_pages=read("mediahaven.api.max_search_pages", _positive_int),
        ),
        ftp=FtpSettings(
            host=read("mediahaven.ftp.host"),
            user=read("mediahaven.ftp.user"),
            password=read("mediahaven.ftp.passwd"),
            timeout_seconds=read("mediahaven.ftp.timeout_seconds", _positive_float),
            tls=ftp_tls,
            ca_file=ftp_ca_file,
        ),
        pid_service_host=read("pid_service.host"),
        organisations_host=read("organisations_api.host"),
        organisations_cache_seconds=read("organisations_api.cache_seconds", _positive_float),
        http_timeout_seconds=read("http.timeout_seconds", _positive_float),
        ledger=LedgerSettings(
            path=read("ledger.path"),
            dsn=read("ledger.dsn"),
            retention_days=read("ledger.retention_days", _retention_days),
            claim_lease_seconds=read("ledger.claim_lease_seconds", _claim_lease),
        ),
    )
    read.check()
    return settings


def load_destinations(path: Path, *, environment: str, transfer_host: str) -> Destinations:
    """The destination table of one environment, CP names lower-cased for matching; the caller
    logs it once the start has succeeded.

    A table that cannot be read or is not the documented shape stops the start, naming
    `DESTINATION_CONFIG`: guessing would send sidecars to the wrong folder.
    """
    try:
        with path.open() as stream:
            table = yaml.safe_load(stream)
    except OSError as error:
        problems = [f"cannot be read: {error.strerror}"]
    except yaml.YAMLError as error:
        problems = [f"cannot be parsed as YAML: {_yaml_problem(error)}"]
    else:
        folders, problems = _folders(table, environment)
    if problems:
        raise ConfigError(
            [], [f"DESTINATION_CONFIG={str(path)!r} is not valid: " + "; ".join(problems)]
        )
    return Destinations(transfer_host=transfer_host, folders=folders)


def _folders(table: object, environment: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """environment -> CP name -> {essence, collateral} -> folder; also every shape problem."""
    table = {} if table is None else table
    if not isinstance(table, dict):
        return {}, ["it does not hold a mapping of environments"]
    # APP_ENVIRONMENT is compared case-insensitively, here as for the PID service.
    section = table.get(environment)
    if section is None:
        wanted = environment.lower()
        section = next((v for k, v in table.items() if str(k).lower() == wanted), None)
    section = {} if section is None else section
    if not isinstance(section, dict):
        return {}, [f"{environment} is not a mapping of CP names"]
    kinds = [kind.value for kind in FileKind]
    folders: dict[str, dict[str, str]] = {}
    problems = []
    for cp_name, by_kind in section.items():
        where = f"{environment}.{cp_name}"
        if not isinstance(by_kind, dict):
            problems.append(f"{where} is not a mapping of {' and '.join(kinds)}")
            continue
        problems.extend(
            f"{where}.{key} is not one of {', '.join(kinds)}" for key in by_kind if key not in kinds
        )
        entry = {}
        for kind in kinds:
            folder = by_kind.get(kind, DEFAULT_FOLDER)
            if not isinstance(folder, str):
                problems.append(f"{where}.{kind} is not a folder name")
                continue
            try:
                entry[kind] = require_path_segment(folder, "folder")
            except BadInput as error:
                problems.append(f"{where}.{kind}: {error}")
        folders[str(cp_name).lower()] = entry
    return folders, problems


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message spans lines and repeats the path; where and what fit on one."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return one_line(str(error))
