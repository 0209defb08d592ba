"""`s3-events-handler consume` with RABBIT_MQ_SSL and MEDIAHAVEN_FTP_TLS: the golden event over
AMQPS and FTPS, and what an operator sees when a certificate or a CA file is wrong."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import RunningService, command, running
from tests.e2e.test_consumer import GOLDEN_PID, golden_transfer_request, transfers
from tests.support import amqp
from tests.support.certificates import TlsFiles
from tests.support.http_stubs import Canned
from tests.support.tls_proxy import TlsProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_service(
    tmp_path: Path, broker: tuple[str, int], tls_files: TlsFiles, tls_proxy: TlsProxy
) -> Iterator[RunningService]:
    """The fakes, with an FTP server that only speaks FTPS (control and data channel).

    It takes `tls_proxy` so that the consumer stops before the proxy does.
    """
    service = RunningService(workdir=tmp_path, broker=broker)
    service.ftp.tls_pem = tls_files.server_pem
    yield from running(service)


def over_tls(tls_proxy: TlsProxy, ca_file: Path, **changes: str) -> dict[str, str]:
    """The settings that turn both on, trusting `ca_file`; `changes` override."""
    settings = {
        "RABBIT_MQ_PORT": str(tls_proxy.port),
        "RABBIT_MQ_SSL": "true",
        "RABBIT_MQ_CA_FILE": str(ca_file),
        "MEDIAHAVEN_FTP_TLS": "true",
        "MEDIAHAVEN_FTP_CA_FILE": str(ca_file),
    }
    settings.update(changes)
    return settings


def test_the_golden_event_goes_through_over_amqps_and_ftps(
    tls_service: RunningService, tls_proxy: TlsProxy, tls_files: TlsFiles, examples: Path
) -> None:
    service = tls_service
    service.pid_service.queue(Canned(body=[{"id": GOLDEN_PID, "number": 1}]))
    service.start_consumer(argv=None, **over_tls(tls_proxy, tls_files.ca_file))
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    [request] = transfers(service, 1)
    # MEDIAHAVEN_FTP_HOST is still the transfer request's host, as configured.
    assert request.json() == golden_transfer_request(examples, service.ftp.host)
    sidecar = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS" / f"{GOLDEN_PID}.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()
    assert service.ftp.protected_stores == [True]
    assert tls_proxy.handshakes >= 1
    assert "AMQPS" in service.log()
    assert "over FTPS" in service.log()
    assert service.stop_consumer() == 0


def test_a_broker_certificate_from_an_unknown_ca_stops_the_start_with_one_line(
    tls_service: RunningService, tls_proxy: TlsProxy, unknown_ca: TlsFiles
) -> None:
    """Not the reconnect loop of an outage: the CA will not fix itself."""
    line = tls_service.refused_start(**over_tls(tls_proxy, unknown_ca.ca_file))

    assert "RABBIT_MQ_SSL=true" in line
    assert f"RABBIT_MQ_CA_FILE='{unknown_ca.ca_file}'" in line
    assert "certificate verify failed" in line
    assert tls_proxy.handshakes == 0


@pytest.mark.parametrize("setting", ["RABBIT_MQ_CA_FILE", "MEDIAHAVEN_FTP_CA_FILE"])
def test_a_ca_file_that_is_not_there_stops_the_start_with_one_line(
    tls_service: RunningService, tls_proxy: TlsProxy, tls_files: TlsFiles, setting: str
) -> None:
    missing = str(tls_service.workdir / "no-such-ca.pem")
    line = tls_service.refused_start(**over_tls(tls_proxy, tls_files.ca_file, **{setting: missing}))

    assert line.startswith("s3-events-handler: cannot start: ")
    assert f"{setting}={missing!r} is not valid: cannot be read" in line


def test_an_ftps_certificate_failure_waits_in_the_retry_queue_until_the_ca_is_fixed(
    tls_service: RunningService,
    tls_proxy: TlsProxy,
    tls_files: TlsFiles,
    unknown_ca: TlsFiles,
    examples: Path,
) -> None:
    """The FTP connection opens at the first upload: there a wrong CA is transient, named."""
    service = tls_service
    mounted = service.workdir / "ftp-ca.pem"  # a file an operator can fix in place
    shutil.copyfile(unknown_ca.ca_file, mounted)
    service.start_consumer(
        argv=None, **over_tls(tls_proxy, tls_files.ca_file, MEDIAHAVEN_FTP_CA_FILE=str(mounted))
    )
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    retried = f"-> {service.settings.retry_queue(1)}"
    assert amqp.wait_until(lambda: retried in service.log(), timeout=20), service.log()
    log = service.log()
    assert "MEDIAHAVEN_FTP_TLS=true" in log
    assert f"MEDIAHAVEN_FTP_CA_FILE='{mounted}'" in log
    assert "go through once the CA is fixed" in log

    shutil.copyfile(tls_files.ca_file, mounted)
    transfers(service, 1)
    assert service.ftp.protected_stores == [True]


def test_a_tls_broker_that_is_down_is_waited_for_as_without_tls(
    tls_service: RunningService, tls_proxy: TlsProxy, tls_files: TlsFiles, examples: Path
) -> None:
    """A refused connection is an outage: the start goes on and the consumer reconnects."""
    service = tls_service
    tls_proxy.stop()
    with service.log_path.open("ab") as log:
        service.process = subprocess.Popen(
            [*command(), "consume"],
            env=service.environment(**over_tls(tls_proxy, tls_files.ca_file)),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=service.workdir,
        )
    assert amqp.wait_until(lambda: "reconnecting to the broker" in service.log(), timeout=20)
    assert service.process.poll() is None, service.log()

    tls_proxy.start()  # the same port
    service.publish_event((examples / "event-essence-created.json").read_bytes())
    transfers(service, 1, timeout=30)
