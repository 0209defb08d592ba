"""`check-config`: are the settings right, and does every system the consumer needs answer?

It only reads, so it is safe against production at any time: what each check does, and
why that and no more, is in docs/operations.md ("Checking a deployment").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from s3_events_handler.adapters.config import ConfigError
from s3_events_handler.adapters.ledger_postgres import inspect_database
from s3_events_handler.adapters.ledger_sqlite import inspect_location
from s3_events_handler.adapters.logs import SHORTEST_MASKED_SECRET
from s3_events_handler.adapters.organisations import NoMamLabel
from s3_events_handler.adapters.pid import accepts_connections, uses_pid_service
from s3_events_handler.adapters.rabbitmq.connection import BrokerCertificateError, check_certificate
from s3_events_handler.adapters.rabbitmq.inspection import Found, inspect_topology
from s3_events_handler.application.reasons import Redactor, one_line
from s3_events_handler.domain.errors import Rejected, S3EventsHandlerError, System
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


# A check yields the detail of its own line when it passes, and any line of its own making
# (the broker's, one per queue and exchange); it raises when it fails.
Check = Callable[[Container], Iterator[str | Finding]]


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
    # Each system's subject, where it is when its lines should say so, and its check.
    checks: list[tuple[str, str, Check]] = [
        ("destination table", "", _destination_table),
        ("ledger", "", _ledger),
        ("broker", "", _broker),
        ("MediaHaven", settings.mediahaven.host, _mediahaven),
        ("PID service", "", _pid_service),
        ("Organisations API", settings.organisations_host, _organisations),
        ("FTP server", "", _ftp),
    ]
    try:
        for subject, where, check in checks:
            report.run(subject, where, check, container)
    finally:
        container.shutdown_resources()
    return report.finish()


class _Report:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._findings: list[Finding] = []
        self.mask: Callable[[str], str] = str

    def run(self, subject: str, where: str, check: Check, container: Container) -> None:
        """The lines of `check`, or the one that says why it failed: a setting to fix for a
        `ConfigError` or a broker certificate never accepted, else a system that does not
        answer as it should (a failure nobody foresaw among them, rather than the command's)."""
        at = f"{where}: " if where else ""
        try:
            for line in check(container):
                ok = line if isinstance(line, Finding) else Finding(subject, True, at + line)
                self.add(ok)
        except (ConfigError, BrokerCertificateError) as error:
            self.add(Finding(subject, False, at + str(error), wrong_setting=True))
        except S3EventsHandlerError as error:
            self.add(Finding(subject, False, at + str(error)))
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


def _destination_table(container: Container) -> Iterator[str]:
    settings, destinations = container.settings(), container.destinations()
    yield (
        f"{settings.destination_config}: {len(destinations.folders)} CP name(s) listed for "
        f"{settings.environment}, any other goes to {destinations.default_folder}"
    )


def _ledger(container: Container) -> Iterator[str]:
    ledger = container.settings().ledger
    try:
        if ledger.dsn:
            yield f"PostgreSQL (LEDGER_DSN): {inspect_database(ledger.dsn)}"
        else:
            yield f"SQLite (LEDGER_PATH): {inspect_location(ledger.path)}"
    except ValueError as error:  # the location or the DSN itself is wrong
        raise ConfigError.of(f"{ledger.variable}: {error}") from None


def _broker(container: Container) -> Iterator[str | Finding]:
    settings = container.broker_settings()
    check_certificate(settings)  # as `consume` at its start
    found = inspect_topology(settings)
    where = f"{settings.host}:{settings.port}, vhost {settings.vhost}, user {settings.user}"
    yield f"connected to {where}"
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


def _mediahaven(container: Container) -> Iterator[str]:
    probe = Query.any_of(Term("s3_object_key", PROBE_OBJECT_KEY))
    yield f"token granted, a search answered ({len(list(container.records().search(probe)))} found)"


def _pid_service(container: Container) -> Iterator[str]:
    settings = container.settings()
    if not uses_pid_service(settings.environment):
        yield f"not used: APP_ENVIRONMENT={settings.environment} mints locally"
        return
    where = accepts_connections(settings.pid_service_host, timeout=settings.http_timeout_seconds)
    yield f"{where} accepts connections (not asked: that mints a PID)"


def _organisations(container: Container) -> Iterator[str]:
    try:
        label = container.organisations().cp_name(PROBE_OR_ID)
    except NoMamLabel:
        label = "none, as expected"
    yield f"answered a lookup ({PROBE_OR_ID}: {label})"


def _ftp(container: Container) -> Iterator[str]:
    ftp = container.settings().ftp
    try:
        folders = container.destinations().folders
    except ConfigError:
        folders = {}  # reported by the destination table's check; the login is still worth it
    wanted = sorted({(cp, folder) for cp, kinds in folders.items() for folder in kinds.values()})
    found = container.transport().find_folders(wanted)
    missing = [f"/{cp}/{folder}" for (cp, folder), path in found.items() if path is None]
    if missing:
        raise Rejected(
            f"{ftp.host}: logged in as {ftp.user}, but no folder {', '.join(missing)} "
            "(CP name in any case); the service does not create them",
            system=System.FTP,
        )
    present = ", ".join(path for path in found.values() if path) or "none listed in the table"
    yield f"{ftp.host}: logged in as {ftp.user}; destination folders: {present}"
