"""`check-config`: are the settings right, and does every system the consumer needs answer?

It must be safe to run against production at any time, so it only reads:

- the broker: with TLS, the certificate check `consume` makes at its start (a certificate
  that cannot be verified is a setting to fix, as there); then passive declares, on a
  connection that declares nothing (a missing queue is reported, not created);
- MediaHaven: a token grant and one authenticated search. A grant alone proves the
  credentials; the search also proves the records API is where MEDIAHAVEN_API_HOST says and
  that the API user may search, which is the first thing every event needs;
- the PID service: a TCP connection only. Every request to it mints a PID, and HEAD runs the
  same handler as GET in many frameworks;
- the Organisations API: one lookup (a query, nothing stored) of an OR-id nobody has;
- the FTP server: a login and a listing of the destination folders, nothing uploaded;
- the ledger: its location looked at (a SQLite file is not created) or one SELECT in its
  database; opening it for real would create it and prune it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from s3_events_handler.adapters.config import ConfigError
from s3_events_handler.adapters.ledger_postgres import inspect_database
from s3_events_handler.adapters.ledger_sqlite import inspect_location
from s3_events_handler.adapters.logs import SHORTEST_MASKED_SECRET
from s3_events_handler.adapters.organisations import NoMamLabel
from s3_events_handler.adapters.pid import accepts_connections, uses_pid_service
from s3_events_handler.adapters.rabbitmq import BrokerCertificateError, check_certificate
from s3_events_handler.adapters.rabbitmq.inspection import Found, inspect_topology
from s3_events_handler.application.reasons import Redactor, one_line
from s3_events_handler.domain.errors import S3EventsHandlerError
from s3_events_handler.domain.model import Query, Term
from s3_events_handler.entrypoints.container import Container, build_container
from s3_events_handler.entrypoints.exit_codes import ExitCode

# Looked up to see the Organisations API answer; a well-formed OR-id no organisation has.
PROBE_OR_ID = "OR-chk0cfg"
# Searched for to see MediaHaven answer; no archived object has this key.
PROBE_OBJECT_KEY = "s3-events-handler check-config probe"


@dataclass(frozen=True)
class Finding:
    """One line of the report. A failure with `wrong_setting` is a setting to fix (exit 2);
    any other failure is a system that does not answer as it should (exit 1)."""

    subject: str
    ok: bool
    detail: str
    wrong_setting: bool = False


Check = Callable[[Container], Iterable[Finding]]


def check_config(config_path: Path, out: TextIO) -> int:
    """Print one line per check as it completes, then a summary; the exit status."""
    report = _Report(out)
    try:
        container = build_container(config_path, quiet=True)
    except (ConfigError, OSError) as error:
        report.add(Finding("settings", False, str(error), wrong_setting=True))
        return report.finish()
    settings = container.settings()
    # As in the log: whatever a server echoed, no password reaches the terminal.
    report.mask = Redactor(settings.secrets, shortest=SHORTEST_MASKED_SECRET).redact
    environment = settings.environment
    report.add(Finding("settings", True, f"read {config_path}; APP_ENVIRONMENT={environment}"))
    checks: list[Check] = [
        _destination_table,
        _ledger,
        _broker,
        _mediahaven,
        _pid_service,
        _organisations,
        _ftp,
    ]
    try:
        for check in checks:
            report.run(check, container)
    finally:
        container.shutdown_resources()
    return report.finish()


class _Report:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._findings: list[Finding] = []
        self.mask: Callable[[str], str] = str

    def run(self, check: Check, container: Container) -> None:
        """Every finding of `check`; one it did not foresee fails it rather than the command."""
        subject = check.__name__.strip("_").replace("_", " ")
        try:
            for finding in check(container):
                self.add(finding)
        except Exception as error:
            self.add(Finding(subject, False, f"unexpected {type(error).__name__}: {error}"))

    def add(self, finding: Finding) -> None:
        self._findings.append(finding)
        status = "ok" if finding.ok else "failed"
        line = f"{status:<7} {finding.subject}: {one_line(finding.detail)}"
        print(self.mask(line), file=self._out, flush=True)

    def finish(self) -> int:
        failed = [finding for finding in self._findings if not finding.ok]
        if not failed:
            print(f"all {len(self._findings)} checks passed", file=self._out)
            return ExitCode.OK
        subjects = ", ".join(dict.fromkeys(finding.subject for finding in failed))
        print(f"{len(failed)} of {len(self._findings)} checks failed: {subjects}", file=self._out)
        if any(finding.wrong_setting for finding in failed):
            return ExitCode.SETTINGS
        return ExitCode.FAILED


def _destination_table(container: Container) -> Iterator[Finding]:
    settings = container.settings()
    try:
        destinations = container.destinations()
    except ConfigError as error:
        yield Finding("destination table", False, str(error), wrong_setting=True)
        return
    yield Finding(
        "destination table",
        True,
        f"{settings.destination_config}: {len(destinations.folders)} CP name(s) listed for "
        f"{settings.environment}, any other goes to {destinations.default_folder}",
    )


def _ledger(container: Container) -> Iterator[Finding]:
    ledger = container.settings().ledger
    try:
        if ledger.dsn:
            yield Finding(
                "ledger", True, f"PostgreSQL (LEDGER_DSN): {inspect_database(ledger.dsn)}"
            )
        else:
            yield Finding("ledger", True, f"SQLite (LEDGER_PATH): {inspect_location(ledger.path)}")
    except ValueError as error:
        yield Finding("ledger", False, f"{ledger.variable}: {error}", wrong_setting=True)
    except S3EventsHandlerError as error:
        yield Finding("ledger", False, str(error))


def _broker(container: Container) -> Iterator[Finding]:
    settings = container.broker_settings()
    try:
        # As `consume` at its start: a certificate it will never accept is a setting to fix.
        check_certificate(settings)
        found = inspect_topology(settings)
    except BrokerCertificateError as error:
        yield Finding("broker", False, str(error), wrong_setting=True)
        return
    except S3EventsHandlerError as error:
        yield Finding("broker", False, str(error))
        return
    where = f"{settings.host}:{settings.port}, vhost {settings.vhost}, user {settings.user}"
    yield Finding("broker", True, f"connected to {where}")
    own = set(settings.own_queues)
    yield from (_presence(item, own) for item in found)


def _presence(item: Found, own_queues: set[str]) -> Finding:
    subject = f"{item.kind} {item.name}"
    if not item.exists and item.kind == "queue" and item.name in own_queues:
        # The service's own queues: a new deployment has none until its first `consume`.
        return Finding(subject, True, "not declared yet; `consume` declares it at start")
    if not item.exists:
        return Finding(subject, False, "not on the broker (`consume` declares it at start)")
    if item.kind == "queue":
        return Finding(subject, True, f"{item.messages} message(s), {item.consumers} consumer(s)")
    return Finding(subject, True, "exists")


def _mediahaven(container: Container) -> Iterator[Finding]:
    host = container.settings().mediahaven.host
    try:
        records = list(
            container.records().search(Query.any_of(Term("s3_object_key", PROBE_OBJECT_KEY)))
        )
    except S3EventsHandlerError as error:
        yield Finding("MediaHaven", False, f"{host}: {error}")
        return
    yield Finding(
        "MediaHaven", True, f"{host}: token granted, a search answered ({len(records)} found)"
    )


def _pid_service(container: Container) -> Iterator[Finding]:
    settings = container.settings()
    if not uses_pid_service(settings.environment):
        yield Finding(
            "PID service", True, f"not used: APP_ENVIRONMENT={settings.environment} mints locally"
        )
        return
    try:
        where = accepts_connections(
            settings.pid_service_host, timeout=settings.http_timeout_seconds
        )
    except S3EventsHandlerError as error:
        yield Finding("PID service", False, str(error))
        return
    yield Finding("PID service", True, f"{where} accepts connections (not asked: that mints a PID)")


def _organisations(container: Container) -> Iterator[Finding]:
    url = container.settings().organisations_host
    try:
        label = container.organisations().cp_name(PROBE_OR_ID)
    except NoMamLabel:
        label = "none, as expected"
    except S3EventsHandlerError as error:
        yield Finding("Organisations API", False, f"{url}: {error}")
        return
    yield Finding("Organisations API", True, f"{url}: answered a lookup ({PROBE_OR_ID}: {label})")


def _ftp(container: Container) -> Iterator[Finding]:
    host, user = container.settings().ftp.host, container.settings().ftp.user
    try:
        folders = container.destinations().folders
    except ConfigError:
        folders = {}  # reported by the destination table's check; the login is still worth it
    wanted = sorted({(cp, folder) for cp, kinds in folders.items() for folder in kinds.values()})
    try:
        found = container.transport().find_folders(wanted)
    except S3EventsHandlerError as error:
        yield Finding("FTP server", False, str(error))
        return
    missing = [f"/{cp}/{folder}" for (cp, folder), path in found.items() if path is None]
    if missing:
        yield Finding(
            "FTP server",
            False,
            f"{host}: logged in as {user}, but no folder "
            f"{', '.join(missing)} (CP name in any case); the service does not create them",
        )
        return
    present = ", ".join(path for path in found.values() if path) or "none listed in the table"
    yield Finding(
        "FTP server", True, f"{host}: logged in as {user}; destination folders: {present}"
    )
