"""`s3-events-handler check-config`: one line per check, an exit status an operator can act on,
and nothing changed anywhere while it looks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import RunningService, running
from tests.support import amqp
from tests.support.certificates import TlsFiles
from tests.support.tls_proxy import TlsProxy

pytestmark = pytest.mark.e2e

# Every folder the production table of destination_config.yml names, as the MAM labels spell
# the CP names (the table lists them lower-cased).
TABLE_FOLDERS = ("VRT/TAPE-SHARE-EVENTS", "VRT/DISK-SHARE-EVENTS", "TESTBEELD/DISK-SHARE-EVENTS")


@pytest.fixture
def healthy(service: RunningService) -> RunningService:
    """Everything the consumer needs is there: its queues (as after one run) and folders."""
    for folder in TABLE_FOLDERS:
        (service.ftp.root / folder).mkdir(parents=True, exist_ok=True)
    amqp.declare_service_topology(service.settings)
    return service


def lines_of(output: str) -> dict[str, str]:
    """`status subject: detail` lines -> {subject: status}; the summary line left out."""
    checks = {}
    for line in output.splitlines()[:-1]:
        status, rest = line.split(maxsplit=1)
        checks[rest.split(": ", 1)[0]] = status
    return checks


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def test_a_healthy_setup_passes_every_check_and_nothing_is_changed(
    healthy: RunningService,
) -> None:
    service = healthy
    s = service.settings
    service.publish_event(b'{"an": "event waiting"}')
    amqp.publish(s.host, s.port, s.dead_letter_queue, b"a dead letter")
    ledger = service.workdir / "ledger.sqlite3"

    checked = service.run("check-config")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    checks = lines_of(checked.stdout)
    assert set(checks.values()) == {"ok"}
    assert {"settings", "destination table", "ledger", "broker", "MediaHaven", "PID service",
            "Organisations API", "FTP server"} <= set(checks)  # fmt: skip
    assert {f"queue {name}" for name in amqp.all_queues(s)} <= set(checks)
    assert f"exchange {s.incoming_exchange}" in checks
    assert checked.stdout.splitlines()[-1] == f"all {len(checks)} checks passed"
    assert "/VRT/TAPE-SHARE-EVENTS" in checked.stdout
    # Read-only: no PID minted, nothing on the FTP server, no ledger, the queues as they were.
    assert service.pid_service.request_count == 0
    assert service.ftp.stored == [] and files_under(service.ftp.root) == []
    assert not ledger.exists()
    assert amqp.message_count(s.host, s.port, s.incoming_queue) == 1
    assert amqp.message_count(s.host, s.port, s.dead_letter_queue) == 1
    assert service.mediahaven.deleted == [] and service.mediahaven.relations == []
    assert len(service.mediahaven.searches) == 1


def test_an_unreachable_broker_is_named_and_exits_1(healthy: RunningService) -> None:
    checked = healthy.run("check-config", RABBIT_MQ_PORT="1", RABBIT_MQ_PASSWD="pw-not-shown")
    assert checked.returncode == 1
    assert lines_of(checked.stdout)["broker"] == "failed"
    assert "cannot reach the broker at 127.0.0.1:1" in checked.stdout
    assert "pw-not-shown" not in checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == "1 of 8 checks failed: broker"
    # The other systems were still checked.
    assert lines_of(checked.stdout)["FTP server"] == "ok"


def test_a_missing_setting_is_named_and_exits_2(healthy: RunningService) -> None:
    checked = healthy.run("check-config", MEDIAHAVEN_FTP_HOST="")
    assert checked.returncode == 2
    [line, summary] = checked.stdout.splitlines()
    assert line.startswith("failed  settings: ") and "MEDIAHAVEN_FTP_HOST" in line
    assert summary == "1 of 1 checks failed: settings"
    assert "Traceback" not in checked.stderr


def test_a_destination_table_that_cannot_be_read_exits_2(healthy: RunningService) -> None:
    checked = healthy.run("check-config", DESTINATION_CONFIG="no-such-table.yml")
    assert checked.returncode == 2
    assert lines_of(checked.stdout)["destination table"] == "failed"
    assert "DESTINATION_CONFIG" in checked.stdout


def test_a_ledger_folder_that_does_not_exist_exits_2(healthy: RunningService) -> None:
    checked = healthy.run("check-config", LEDGER_PATH="no-such-folder/ledger.sqlite3")
    assert checked.returncode == 2
    assert lines_of(checked.stdout)["ledger"] == "failed"
    assert "LEDGER_PATH" in checked.stdout and "no-such-folder" in checked.stdout
    assert not (healthy.workdir / "no-such-folder").exists()


def test_a_missing_destination_folder_is_named_and_exits_1(healthy: RunningService) -> None:
    (healthy.ftp.root / "TESTBEELD" / "DISK-SHARE-EVENTS").rmdir()
    checked = healthy.run("check-config")
    assert checked.returncode == 1
    assert lines_of(checked.stdout)["FTP server"] == "failed"
    assert "/testbeeld/DISK-SHARE-EVENTS" in checked.stdout
    assert healthy.ftp.stored == []


def test_refused_mediahaven_credentials_are_named_and_exit_1(healthy: RunningService) -> None:
    checked = healthy.run("check-config", MEDIAHAVEN_API_PASSWD="wrong-password")
    assert checked.returncode == 1
    assert lines_of(checked.stdout)["MediaHaven"] == "failed"
    assert "refused the API credentials" in checked.stdout
    assert "wrong-password" not in checked.stdout


def test_a_new_deployment_passes_before_its_own_queues_exist_and_they_are_not_created(
    service: RunningService,
) -> None:
    """Before the first `consume` only today's shared queues are there: the service's own
    retry and dead-letter queues are named as not declared yet, which is no failure."""
    for folder in TABLE_FOLDERS:
        (service.ftp.root / folder).mkdir(parents=True, exist_ok=True)
    s = service.settings

    checked = service.run("check-config")

    assert checked.returncode == 0, checked.stdout
    checks = lines_of(checked.stdout)
    assert checks[f"queue {s.incoming_queue}"] == "ok"
    assert checks[f"queue {s.dead_letter_queue}"] == "ok"
    assert "not declared yet" in checked.stdout
    assert not amqp.queue_exists(s.host, s.port, s.dead_letter_queue)
    assert not amqp.queue_exists(s.host, s.port, s.retry_queue(1))


def test_where_pids_are_made_locally_the_pid_service_is_not_checked(
    healthy: RunningService,
) -> None:
    checked = healthy.run("check-config", APP_ENVIRONMENT="int", PID_SERVICE_HOST="http://nowhere")
    assert checked.returncode == 0, checked.stdout
    assert "PID service: not used: APP_ENVIRONMENT=int mints locally" in checked.stdout


@pytest.fixture
def healthy_over_tls(
    tmp_path: Path, broker: tuple[str, int], tls_files: TlsFiles, tls_proxy: TlsProxy
) -> Iterator[RunningService]:
    """As `healthy`, with an FTP server that speaks only FTPS and the broker behind AMQPS."""
    service = RunningService(workdir=tmp_path, broker=broker)
    service.ftp.tls_pem = tls_files.server_pem
    for started in running(service):
        for folder in TABLE_FOLDERS:
            (started.ftp.root / folder).mkdir(parents=True, exist_ok=True)
        amqp.declare_service_topology(started.settings)
        yield started


def over_tls(tls_proxy: TlsProxy, ca_file: Path) -> dict[str, str]:
    return {
        "RABBIT_MQ_PORT": str(tls_proxy.port),
        "RABBIT_MQ_SSL": "true",
        "RABBIT_MQ_CA_FILE": str(ca_file),
        "MEDIAHAVEN_FTP_TLS": "true",
        "MEDIAHAVEN_FTP_CA_FILE": str(ca_file),
    }


def test_the_checks_speak_amqps_and_ftps_when_the_settings_say_so(
    healthy_over_tls: RunningService, tls_proxy: TlsProxy, tls_files: TlsFiles
) -> None:
    checked = healthy_over_tls.run("check-config", **over_tls(tls_proxy, tls_files.ca_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tls_proxy.handshakes >= 1


def test_a_certificate_from_an_unknown_ca_is_named_with_its_settings(
    healthy_over_tls: RunningService, tls_proxy: TlsProxy, unknown_ca: TlsFiles
) -> None:
    """The broker's certificate is a setting to fix, exit 2, as `consume` says at its start."""
    checked = healthy_over_tls.run("check-config", **over_tls(tls_proxy, unknown_ca.ca_file))
    assert checked.returncode == 2, checked.stdout
    checks = lines_of(checked.stdout)
    assert (checks["broker"], checks["FTP server"]) == ("failed", "failed")
    assert f"RABBIT_MQ_CA_FILE='{unknown_ca.ca_file}'" in checked.stdout
    assert f"MEDIAHAVEN_FTP_CA_FILE='{unknown_ca.ca_file}'" in checked.stdout


def test_an_ftps_certificate_alone_fails_its_line_with_exit_1(
    healthy_over_tls: RunningService, tls_proxy: TlsProxy, tls_files: TlsFiles, unknown_ca: TlsFiles
) -> None:
    """`consume` takes it as a transient failure of each upload, so here it is no setting."""
    settings = over_tls(tls_proxy, tls_files.ca_file)
    settings["MEDIAHAVEN_FTP_CA_FILE"] = str(unknown_ca.ca_file)
    checked = healthy_over_tls.run("check-config", **settings)
    assert checked.returncode == 1, checked.stdout
    checks = lines_of(checked.stdout)
    assert (checks["broker"], checks["FTP server"]) == ("ok", "failed")
