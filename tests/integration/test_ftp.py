"""The FTP adapter against a real pyftpdlib server, over real sockets."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.ftp import FtpTransportServer, parse_ftp_host
from domain.errors import Rejected, ServiceUnavailable
from domain.model import S3Object, Sidecar
from tests.support.ftp_server import FtpTestServer

FOLDER = "/VRT/TAPE-SHARE-EVENTS"
FINAL = f"{FOLDER}/k98z0d4w1q.xml"
TEMPORARY = f"{FOLDER}/.k98z0d4w1q.xml.part"
TIMEOUT = 5.0

ESSENCE = Sidecar(
    name="k98z0d4w1q",
    cp_name="VRT",
    folder="TAPE-SHARE-EVENTS",
    or_id="OR-rf5kf25",
    pid="k98z0d4w1q",
    object=S3Object(
        domain="s3",
        bucket="mam-highresvideo",
        key="20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF",
        owner="ingest-robot+OR-rf5kf25",
        md5="0cc175b9c0f1b6a831c399e269772661",
        etag="4f1c2e9a7b3d5e6f8a9b0c1d2e3f4a5b",
    ),
    object_use="archive_master",
)


def essence(name: str) -> Sidecar:
    return replace(ESSENCE, name=name, pid=name)


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "VRT" / "TAPE-SHARE-EVENTS").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def server(root: Path) -> Iterator[FtpTestServer]:
    with FtpTestServer(root) as running:
        yield running


def adapter_for(server: FtpTestServer, *, password: str | None = None) -> FtpTransportServer:
    return FtpTransportServer(
        host=server.host,
        user=server.user,
        password=server.password if password is None else password,
        timeout=TIMEOUT,
    )


@pytest.fixture
def ftp(server: FtpTestServer) -> Iterator[FtpTransportServer]:
    with adapter_for(server) as adapter:
        yield adapter


def test_the_essence_sidecar_lands_byte_for_byte_under_its_final_name(
    ftp: FtpTransportServer, root: Path, examples: Path
) -> None:
    ftp.upload(ESSENCE)

    landed = root / FINAL.lstrip("/")
    assert landed.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()


def test_no_temporary_file_is_left_behind(ftp: FtpTransportServer, root: Path) -> None:
    ftp.upload(ESSENCE)

    assert files_under(root) == ["VRT", "VRT/TAPE-SHARE-EVENTS", FINAL.lstrip("/")]


def test_the_sidecar_is_written_under_a_hidden_temporary_name_then_renamed(
    ftp: FtpTransportServer, server: FtpTestServer
) -> None:
    ftp.upload(ESSENCE)

    assert server.stored == [TEMPORARY]
    temporary_name = TEMPORARY.rsplit("/", 1)[1]
    assert temporary_name.startswith(".")
    assert not temporary_name.endswith(".xml")
    assert server.renamed == [(TEMPORARY, FINAL)]


def test_uploading_the_same_sidecar_twice_leaves_one_file_with_the_same_bytes(
    ftp: FtpTransportServer, root: Path, examples: Path
) -> None:
    ftp.upload(ESSENCE)
    ftp.upload(ESSENCE)

    assert files_under(root / "VRT" / "TAPE-SHARE-EVENTS") == ["k98z0d4w1q.xml"]
    landed = root / FINAL.lstrip("/")
    assert landed.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()


def test_a_server_that_refuses_to_rename_over_a_file_gets_the_old_one_deleted_first(
    root: Path, examples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.ftp")
    with FtpTestServer(root, rename_replaces=False) as server, adapter_for(server) as ftp:
        ftp.upload(ESSENCE)
        ftp.upload(ESSENCE)

    assert "refused to rename over k98z0d4w1q.xml" in caplog.text
    assert files_under(root / "VRT" / "TAPE-SHARE-EVENTS") == ["k98z0d4w1q.xml"]
    landed = root / FINAL.lstrip("/")
    assert landed.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()


def test_a_missing_folder_is_rejected_and_nothing_is_created(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    before = files_under(root)

    with pytest.raises(Rejected, match="/VRT/DISK-SHARE-EVENTS"):
        ftp.upload(replace(ESSENCE, folder="DISK-SHARE-EVENTS"))

    assert files_under(root) == before
    assert server.stored == []


def test_a_missing_content_partner_folder_is_rejected(ftp: FtpTransportServer, root: Path) -> None:
    with pytest.raises(Rejected, match="/NOBODY/DISK-SHARE-EVENTS"):
        ftp.upload(replace(ESSENCE, cp_name="NOBODY", folder="DISK-SHARE-EVENTS"))

    assert not (root / "NOBODY").exists()


def test_a_rejected_upload_keeps_the_connection_for_the_next_one(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    with pytest.raises(Rejected):
        ftp.upload(replace(ESSENCE, folder="GONE"))
    ftp.upload(ESSENCE)

    assert (root / FINAL.lstrip("/")).exists()
    assert ftp.connections_opened == 1
    assert server.logins == 1


def test_a_server_that_refuses_writes_rejects_the_upload(root: Path) -> None:
    with (
        FtpTestServer(root, perm="elr") as server,
        adapter_for(server) as ftp,
        pytest.raises(Rejected, match="refused"),
    ):
        ftp.upload(ESSENCE)

    assert files_under(root) == ["VRT", "VRT/TAPE-SHARE-EVENTS"]


def test_twenty_uploads_share_one_login(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    for number in range(20):
        ftp.upload(essence(f"pid{number:07d}"))

    assert len(files_under(root / "VRT" / "TAPE-SHARE-EVENTS")) == 20
    assert ftp.connections_opened == 1
    assert server.logins == 1


def test_the_connection_is_opened_on_the_first_upload_not_before(
    server: FtpTestServer,
) -> None:
    with adapter_for(server) as ftp:
        assert ftp.connections_opened == 0
        assert server.logins == 0

        ftp.upload(ESSENCE)

        assert ftp.connections_opened == 1


def test_after_a_server_restart_the_next_upload_reconnects_and_succeeds(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    ftp.upload(essence("pid0000001"))
    server.restart()

    ftp.upload(essence("pid0000002"))

    assert (root / "VRT" / "TAPE-SHARE-EVENTS" / "pid0000002.xml").exists()
    assert ftp.connections_opened == 2
    assert server.logins == 2


def test_a_connection_the_server_closed_for_idleness_is_reopened(root: Path) -> None:
    with FtpTestServer(root, idle_timeout=0.2) as server, adapter_for(server) as ftp:
        ftp.upload(essence("pid0000001"))
        time.sleep(0.5)

        ftp.upload(essence("pid0000002"))

        assert ftp.connections_opened == 2
    assert (root / "VRT" / "TAPE-SHARE-EVENTS" / "pid0000002.xml").exists()


def test_a_server_that_is_down_is_unavailable(server: FtpTestServer) -> None:
    server.stop()

    with adapter_for(server) as ftp, pytest.raises(ServiceUnavailable):
        ftp.upload(ESSENCE)


def test_a_server_gone_since_the_last_upload_is_unavailable_then_used_again_once_back(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    ftp.upload(essence("pid0000001"))
    server.stop()

    with pytest.raises(ServiceUnavailable):
        ftp.upload(essence("pid0000002"))

    server.start()
    ftp.upload(essence("pid0000002"))
    assert (root / "VRT" / "TAPE-SHARE-EVENTS" / "pid0000002.xml").exists()


def test_a_server_that_never_answers_is_unavailable_after_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        ftp = FtpTransportServer(
            host=f"127.0.0.1:{port}", user="robot", password="secret", timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            ftp.upload(ESSENCE)
        assert time.monotonic() - started < 3


def test_a_wrong_password_is_unavailable_and_the_message_does_not_repeat_it(
    server: FtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-Pa55word-xyz"
    caplog.set_level(logging.DEBUG)

    with adapter_for(server, password=wrong) as ftp, pytest.raises(ServiceUnavailable) as raised:
        ftp.upload(ESSENCE)

    assert "530" in str(raised.value)
    chain: BaseException | None = raised.value
    while chain is not None:
        assert wrong not in str(chain)
        assert wrong not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    assert wrong not in caplog.text
    assert server.logins == 0


def test_uploads_from_several_threads_do_not_mix_up_the_connection(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    errors: list[BaseException] = []

    def upload_batch(batch: int) -> None:
        try:
            for number in range(5):
                ftp.upload(essence(f"pid{batch}{number:06d}"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upload_batch, args=(batch,)) for batch in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(files_under(root / "VRT" / "TAPE-SHARE-EVENTS")) == 15
    assert server.logins == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ftp://transport.example.org", ("transport.example.org", 21)),
        ("ftp://transport.example.org/", ("transport.example.org", 21)),
        ("ftp://transport.example.org:2121", ("transport.example.org", 2121)),
        ("FTP://Transport.Example.org:2121/", ("transport.example.org", 2121)),
        ("transport.example.org", ("transport.example.org", 21)),
        ("transport.example.org:2121", ("transport.example.org", 2121)),
        ("127.0.0.1:2121/", ("127.0.0.1", 2121)),
        ("ftp://[::1]:2121", ("::1", 2121)),
        ("  ftp://transport.example.org  ", ("transport.example.org", 21)),
    ],
)
def test_an_ftp_host_is_read_as_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_ftp_host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ftp://",
        "sftp://transport.example.org",
        "ftp://transport.example.org/incoming",
        "ftp://user@transport.example.org",
        "transport.example.org:",
        "transport.example.org:ftp",
        "transport.example.org:70000",
        "transport.example.org:0",
    ],
)
def test_a_malformed_ftp_host_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="FTP host"):
        parse_ftp_host(value)
