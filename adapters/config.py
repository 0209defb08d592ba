"""Settings from `config.yml`, with values from the environment through `!ENV ${NAME}` tags.

Every problem is collected before anything is reported, so an operator fixes
a deployment in one round instead of one variable per restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from s3_events_handler.adapters.tls import readable_ca_file
from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.model import (
    DEFAULT_FOLDER,
    Destinations,
    FileKind,
    require_path_segment,
)

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
    """Empty: follow CONCURRENCY (see `prefetch_for`)."""
    return _positive_int(value) if value.strip() else None


def prefetch_for(prefetch: int | None, concurrency: int) -> int:
    """Messages the broker hands over before any is acked: one per worker, unless set."""
    return concurrency if prefetch is None else prefetch


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


def _delays(value: str) -> list[int]:
    delays = [_positive_int(part.strip()) for part in value.split(",")]
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


# Dotted path in config.yml -> (variable it usually comes from, conversion).
CONVERSIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # the service
    "app.shutdown_grace_seconds": ("SHUTDOWN_GRACE_SECONDS", _positive_float),
    "app.retry_delays": ("RETRY_DELAYS", _delays),
    "app.retry_max_attempts": ("RETRY_MAX_ATTEMPTS", _positive_int),
    "app.max_message_bytes": ("MAX_MESSAGE_BYTES", _positive_int),
    "app.max_records": ("MAX_RECORDS", _positive_int),
    "app.poison_limit": ("POISON_LIMIT", _positive_int),
    "ledger.retention_days": ("LEDGER_RETENTION_DAYS", _retention_days),
    "ledger.claim_lease_seconds": ("CLAIM_LEASE_SECONDS", _claim_lease),
    "app.concurrency": ("CONCURRENCY", _concurrency),
    "app.pin_cpu": ("PIN_CPU", _flag),
    # what operators see
    "logging.level": ("LOG_LEVEL", _choice(LOG_LEVELS, upper=True)),
    "logging.format": ("LOG_FORMAT", _choice(LOG_FORMATS)),
    "metrics.port": ("METRICS_PORT", _port_or_off),
    # the broker
    "rabbitmq.port": ("RABBIT_MQ_PORT", _positive_int),
    "rabbitmq.prefetch": ("RABBIT_MQ_PREFETCH", _prefetch),
    "rabbitmq.heartbeat": ("RABBIT_MQ_HEARTBEAT", _positive_int),
    "rabbitmq.ssl": ("RABBIT_MQ_SSL", _flag),
    "rabbitmq.ca_file": ("RABBIT_MQ_CA_FILE", readable_ca_file),
    # the transport server
    "mediahaven.ftp.timeout_seconds": ("FTP_TIMEOUT_SECONDS", _positive_float),
    "mediahaven.ftp.tls": ("MEDIAHAVEN_FTP_TLS", _flag),
    "mediahaven.ftp.ca_file": ("MEDIAHAVEN_FTP_CA_FILE", readable_ca_file),
    # the HTTP services
    "organisations_api.cache_seconds": ("ORGANISATIONS_CACHE_SECONDS", _positive_float),
    "http.timeout_seconds": ("HTTP_TIMEOUT_SECONDS", _positive_float),
    "mediahaven.api.max_search_pages": ("MAX_SEARCH_PAGES", _positive_int),
}

# CA file -> the TLS switch it belongs to (dotted paths). A CA file without its switch
# would leave an operator believing in a protection that is not there: refused.
CA_FILE_SWITCHES = {
    "rabbitmq.ca_file": "rabbitmq.ssl",
    "mediahaven.ftp.ca_file": "mediahaven.ftp.tls",
}


class _EnvLoader(yaml.SafeLoader):
    """A safe loader that knows `!ENV`; one per load, as it remembers what was missing."""

    def __init__(self, stream: Any, environ: Mapping[str, str]) -> None:
        super().__init__(stream)
        self.environ = environ
        self.missing: list[str] = []


def _substitute(loader: _EnvLoader, node: yaml.ScalarNode) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        value = loader.environ.get(name)
        if match.group("default") is not None:
            return value or match.group("default")
        if value is None or (not value and match.group("set") is None):
            loader.missing.append(name)
            return ""
        return value

    return _REFERENCE.sub(replace, loader.construct_scalar(node))


_EnvLoader.add_constructor("!ENV", _substitute)


def _walk(tree: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    *parents, leaf = path.split(".")
    node = tree
    for step in parents:
        child = node.get(step)
        if not isinstance(child, dict):
            return None
        node = child
    return (node, leaf) if leaf in node else None


def load_config(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings tree with values filled in and typed; raises `ConfigError`."""
    with path.open() as stream:
        loader = _EnvLoader(stream, environ)
        try:
            tree = loader.get_single_data()
        finally:
            loader.dispose()
    if not isinstance(tree, dict):
        raise ConfigError([], [f"{path} does not hold a mapping"])
    missing = sorted(set(loader.missing))
    problems = []
    for dotted, (variable, convert) in CONVERSIONS.items():
        found = _walk(tree, dotted)
        if found is None or found[1] not in found[0]:
            continue
        node, leaf = found
        if variable in missing:
            continue
        try:
            node[leaf] = convert(str(node[leaf]))
        except ValueError as error:
            problems.append(f"{variable}={node[leaf]!r} is not valid: {error}")
    problems.extend(_ca_files_without_tls(tree))
    if missing or problems:
        raise ConfigError(missing, problems)
    return tree


def _ca_files_without_tls(tree: dict[str, Any]) -> list[str]:
    problems = []
    for ca_path, switch_path in CA_FILE_SWITCHES.items():
        ca, switch = _walk(tree, ca_path), _walk(tree, switch_path)
        if ca is None or switch is None:
            continue
        if ca[0][ca[1]] and switch[0][switch[1]] is False:
            ca_variable, switch_variable = CONVERSIONS[ca_path][0], CONVERSIONS[switch_path][0]
            problems.append(
                f"{ca_variable} is set but {switch_variable} is not true: "
                f"set {switch_variable}=true to use it, or leave {ca_variable} empty"
            )
    return problems


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
