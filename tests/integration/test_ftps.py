"""The FTP adapter over explicit FTPS (MEDIAHAVEN_FTP_TLS): real TLS on loopback, against a
pyftpdlib server with a certificate from a CA made for the run (trustme)."""

from __future__ import annotations

import ftplib
import io
import re
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.domain.errors import ServiceUnavailable, TransientError
from tests.integration.test_ftp import ESSENCE, FINAL, TIMEOUT, essence, files_under
from tests.support.certificates import TlsFiles, make_tls_files
from tests.support.ftp_server import FtpTestServer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "VRT" / "TAPE-SHARE-EVENTS").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def server(root: Path, tls_files: TlsFiles) -> Iterator[FtpTestServer]:
    """FTPS only: no login before AUTH TLS, no data connection before PROT P."""
    with FtpTestServer(root, tls_pem=tls_files.server_pem) as running:
        yield running


def adapter_for(
    server: FtpTestServer, *, tls: bool = True, ca_file: Path | str = ""
) -> FtpTransportServer:
    return FtpTransportServer(
        host=server.host,
        user=server.user,
        password=server.password,
        timeout=TIMEOUT,
        tls=tls,
        ca_file=str(ca_file),
    )


def test_a_sidecar_lands_over_ftps_trusting_the_ca_file(
    server: FtpTestServer, root: Path, tls_files: TlsFiles, examples: Path
) -> None:
    with adapter_for(server, ca_file=tls_files.ca_file) as ftp:
        ftp.upload(ESSENCE)
        ftp.upload(essence("pid0000002"))

    assert (root / FINAL.lstrip("/")).read_bytes() == (
        examples / "sidecar-essence.xml"
    ).read_bytes()
    assert server.protected_stores == [True, True]
    assert server.logins == 1


def test_the_data_channel_is_protected_even_where_the_server_would_allow_it_clear(
    root: Path, tls_files: TlsFiles
) -> None:
    """PROT P is the adapter's own choice, not something the server forced."""
    with (
        FtpTestServer(root, tls_pem=tls_files.server_pem, tls_required=False) as server,
        adapter_for(server, ca_file=tls_files.ca_file) as ftp,
    ):
        ftp.upload(ESSENCE)

        assert server.protected_stores == [True]


def test_a_client_without_tls_is_refused_before_it_sends_its_password(
    server: FtpTestServer, root: Path
) -> None:
    """What the server above enforces: the same adapter without MEDIAHAVEN_FTP_TLS fails."""
    with (
        adapter_for(server, tls=False) as ftp,
        pytest.raises(ServiceUnavailable, match="SSL/TLS required on the control channel"),
    ):
        ftp.upload(ESSENCE)

    assert server.logins == 0
    assert files_under(root) == ["VRT", "VRT/TAPE-SHARE-EVENTS"]


def test_a_client_that_leaves_the_data_channel_clear_is_refused(
    server: FtpTestServer, tls_files: TlsFiles
) -> None:
    """So a sidecar that reached this server went over a protected data channel."""
    client = ftplib.FTP_TLS(
        context=ssl.create_default_context(cafile=str(tls_files.ca_file)), timeout=TIMEOUT
    )
    try:
        client.connect("127.0.0.1", server.port)
        client.login(server.user, server.password)  # AUTH TLS first: the control channel is
        with pytest.raises(ftplib.error_perm, match="SSL/TLS required on the data channel"):
            client.storbinary("STOR /VRT/TAPE-SHARE-EVENTS/clear.xml", io.BytesIO(b"<x/>"))
    finally:
        client.close()
    assert server.stored == []


def test_a_server_certificate_from_an_unknown_ca_is_a_transient_failure_naming_the_settings(
    root: Path, tls_files: TlsFiles, unknown_ca: TlsFiles
) -> None:
    with (
        FtpTestServer(root, tls_pem=unknown_ca.server_pem) as server,
        adapter_for(server, ca_file=tls_files.ca_file) as ftp,
        pytest.raises(ServiceUnavailable) as raised,
    ):
        ftp.upload(ESSENCE)

    message = str(raised.value)
    assert isinstance(raised.value, TransientError)
    assert "MEDIAHAVEN_FTP_TLS=true" in message
    assert f"MEDIAHAVEN_FTP_CA_FILE='{tls_files.ca_file}'" in message
    assert "certificate verify failed: unable to get local issuer certificate" in message
    assert "retried" in message
    assert len(message.splitlines()) == 1
    assert server.password not in message
    assert server.logins == 0  # the password never left


def test_the_system_ca_store_alone_does_not_trust_the_test_ca(server: FtpTestServer) -> None:
    """Without MEDIAHAVEN_FTP_CA_FILE the upload above fails: the CA file is what makes it work."""
    with (
        adapter_for(server) as ftp,
        pytest.raises(ServiceUnavailable, match="no MEDIAHAVEN_FTP_CA_FILE, the system's CA"),
    ):
        ftp.upload(ESSENCE)


def test_a_certificate_for_another_host_name_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = make_tls_files(tmp_path / "tls", names=("transport.example.org",))
    with (
        FtpTestServer(root, tls_pem=elsewhere.server_pem) as server,
        adapter_for(server, ca_file=elsewhere.ca_file) as ftp,
        pytest.raises(ServiceUnavailable, match=re.escape("not valid for '127.0.0.1'")),
    ):
        ftp.upload(ESSENCE)


def test_once_the_ca_file_is_fixed_the_next_upload_goes_through(
    server: FtpTestServer, root: Path, tmp_path: Path, tls_files: TlsFiles, unknown_ca: TlsFiles
) -> None:
    """The CA file is read at each connection: a mounted file fixed in place needs no restart."""
    mounted = tmp_path / "mounted-ca.pem"
    shutil.copyfile(unknown_ca.ca_file, mounted)
    with adapter_for(server, ca_file=mounted) as ftp:
        with pytest.raises(ServiceUnavailable, match="certificate verify failed"):
            ftp.upload(ESSENCE)

        shutil.copyfile(tls_files.ca_file, mounted)
        ftp.upload(ESSENCE)

    assert (root / FINAL.lstrip("/")).exists()


def test_a_ca_file_gone_since_the_start_is_a_transient_failure_naming_it(
    server: FtpTestServer, tmp_path: Path
) -> None:
    with (
        adapter_for(server, ca_file=tmp_path / "gone.pem") as ftp,
        pytest.raises(ServiceUnavailable, match=r"MEDIAHAVEN_FTP_CA_FILE='.*gone\.pem'"),
    ):
        ftp.upload(ESSENCE)


def test_after_a_server_restart_the_next_upload_reconnects_over_ftps(
    server: FtpTestServer, root: Path, tls_files: TlsFiles
) -> None:
    with adapter_for(server, ca_file=tls_files.ca_file) as ftp:
        ftp.upload(essence("pid0000001"))
        server.restart()

        ftp.upload(essence("pid0000002"))

        assert ftp.connections_opened == 2
    assert server.protected_stores == [True, True]
    assert (root / "VRT" / "TAPE-SHARE-EVENTS" / "pid0000002.xml").exists()
