"""The FTP adapter against a real pyftpdlib server, over real sockets."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from s3_events_handler.adapters.ftp import FtpTransportServer, parse_ftp_host
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System
from s3_events_handler.domain.model import Sidecar
from s3_events_handler.domain.rules import MAX_SEGMENT_BYTES
from tests.support.ftp_server import FtpTestServer
from tests.support.sidecars import GOLDEN_ESSENCE_SIDECAR

FOLDER = "/VRT/TAPE-SHARE-EVENTS"
FINAL = f"{FOLDER}/k98z0d4w1q.xml"
TEMPORARY = re.compile(re.escape(f"{FOLDER}/.k98z0d4w1q.xml.") + "[0-9a-f]+" + re.escape(".part"))
TIMEOUT = 5.0

ESSENCE = GOLDEN_ESSENCE_SIDECAR


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


def adapter_for(
    server: FtpTestServer,
    *,
    password: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FtpTransportServer:
    return FtpTransportServer(
        host=server.host,
        user=server.user,
        password=server.password if password is None else password,
        timeout=TIMEOUT,
        sleep=sleep,
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

    [temporary] = server.stored
    assert TEMPORARY.fullmatch(temporary)
    temporary_name = temporary.rsplit("/", 1)[1]
    assert temporary_name.startswith(".")
    assert not temporary_name.endswith(".xml")
    assert server.renamed == [(temporary, FINAL)]


def test_each_upload_writes_under_a_temporary_name_of_its_own(
    ftp: FtpTransportServer, server: FtpTestServer
) -> None:
    ftp.upload(ESSENCE)
    ftp.upload(ESSENCE)

    first, second = server.stored
    assert TEMPORARY.fullmatch(first)
    assert TEMPORARY.fullmatch(second)
    assert first != second


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
    caplog.set_level(logging.INFO, logger="s3_events_handler.adapters.ftp_upload")
    with FtpTestServer(root, rename_replaces=False) as server, adapter_for(server) as ftp:
        ftp.upload(ESSENCE)
        ftp.upload(ESSENCE)

    assert "refused to rename over k98z0d4w1q.xml" in caplog.text
    assert files_under(root / "VRT" / "TAPE-SHARE-EVENTS") == ["k98z0d4w1q.xml"]
    landed = root / FINAL.lstrip("/")
    assert landed.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()


def test_the_longest_collateral_name_still_fits_a_file_name_while_temporary(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    longest = f"{'p' * MAX_SEGMENT_BYTES}_{'t' * MAX_SEGMENT_BYTES}"  # `{essence_pid}_{type}`

    ftp.upload(essence(longest))

    [temporary] = server.stored
    assert len(temporary.rsplit("/", 1)[1].encode()) <= 255
    assert (root / FOLDER.lstrip("/") / f"{longest}.xml").exists()


# -- two writers of one sidecar (two consumers handling the same event at once) --------------

SERVERS = pytest.mark.parametrize(
    "rename_replaces", [True, False], ids=["renames-over", "refuses-to-rename-over"]
)


def assert_only_the_sidecar_is_there(root: Path, examples: Path) -> None:
    """The final file is whole (the bytes every writer of it renders); no `.part` file is left."""
    assert files_under(root / FOLDER.lstrip("/")) == ["k98z0d4w1q.xml"]
    assert (root / FINAL.lstrip("/")).read_bytes() == (
        examples / "sidecar-essence.xml"
    ).read_bytes()


@SERVERS
@pytest.mark.parametrize(
    "renaming_order", [(0, 1), (1, 0)], ids=["first-stored-renames-first", "last-stored-first"]
)
def test_two_writers_of_one_sidecar_both_succeed_and_leave_it_whole(
    root: Path, examples: Path, rename_replaces: bool, renaming_order: tuple[int, int]
) -> None:
    with (
        FtpTestServer(root, rename_replaces=rename_replaces) as server,
        adapter_for(server) as writer_a,
        adapter_for(server) as writer_b,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        server.hold_next("RNFR", times=2)  # both have stored their sidecar, neither renamed
        uploads = [pool.submit(writer_a.upload, ESSENCE)]
        server.wait_until_held(1)
        uploads.append(pool.submit(writer_b.upload, ESSENCE))
        server.wait_until_held(2)

        for writer in renaming_order:
            server.release(writer)
            uploads[writer].result(timeout=3 * TIMEOUT)  # re-raises what the upload raised

    assert_only_the_sidecar_is_there(root, examples)
    assert [source for source, _ in server.renamed] == [server.stored[w] for w in renaming_order]


def test_two_writers_both_refused_over_an_earlier_copy_never_delete_each_others_sidecar(
    root: Path, examples: Path
) -> None:
    """The worst interleaving on a server that refuses to rename over a file.

    A and B are both refused over the copy a first attempt left; A deletes it and
    is about to rename when B's delete finds nothing; B renames into the empty
    place; A is refused again, over B's file, and replaces it with its own.
    """
    with FtpTestServer(root, rename_replaces=False) as server:
        with adapter_for(server) as earlier:
            earlier.upload(ESSENCE)
        with (
            adapter_for(server) as writer_a,
            adapter_for(server) as writer_b,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            server.hold_next("DELE", times=2)
            upload_a = pool.submit(writer_a.upload, ESSENCE)
            server.wait_until_held(1)  # 0: A's delete of the earlier copy
            upload_b = pool.submit(writer_b.upload, ESSENCE)
            server.wait_until_held(2)  # 1: B's delete of the earlier copy

            server.hold_next("RNFR")
            server.release(0)
            server.wait_until_held(3)  # 2: A's rename, the final name empty meanwhile
            server.release(1)
            upload_b.result(timeout=3 * TIMEOUT)
            server.release(2)
            upload_a.result(timeout=3 * TIMEOUT)

    assert_only_the_sidecar_is_there(root, examples)
    earlier_copy, copy_a, copy_b = server.stored
    assert server.renamed == [(earlier_copy, FINAL), (copy_b, FINAL), (copy_a, FINAL)]


def test_an_upload_whose_temporary_file_vanished_keeps_the_sidecar_another_writer_placed(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path, examples: Path
) -> None:
    with adapter_for(server) as other, ThreadPoolExecutor(max_workers=1) as pool:
        server.hold_next("RNFR")
        upload = pool.submit(ftp.upload, ESSENCE)
        server.wait_until_held(1)
        for temporary in (root / FOLDER.lstrip("/")).glob(".*.part"):
            temporary.unlink()  # someone else removed it behind the upload's back
        other.upload(ESSENCE)

        server.release(0)
        upload.result(timeout=3 * TIMEOUT)

    assert_only_the_sidecar_is_there(root, examples)


def test_an_upload_whose_temporary_file_vanished_with_no_sidecar_there_is_retried_later(
    ftp: FtpTransportServer, server: FtpTestServer, root: Path
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        server.hold_next("RNFR")
        upload = pool.submit(ftp.upload, ESSENCE)
        server.wait_until_held(1)
        for temporary in (root / FOLDER.lstrip("/")).glob(".*.part"):
            temporary.unlink()

        server.release(0)
        with pytest.raises(ServiceUnavailable, match="vanished"):
            upload.result(timeout=3 * TIMEOUT)

    assert files_under(root / FOLDER.lstrip("/")) == []


@pytest.mark.parametrize("reply", ["450 Renaming busy, try again.", "550 Renaming refused."])
def test_a_rename_refused_once_is_tried_again_on_the_same_connection(
    server: FtpTestServer, root: Path, examples: Path, sleeps: list[float], reply: str
) -> None:
    server.refuse_next("RNTO", reply)

    with adapter_for(server, sleep=sleeps.append) as ftp:
        ftp.upload(ESSENCE)

        assert ftp.connections_opened == 1
    assert_only_the_sidecar_is_there(root, examples)
    assert len(server.renamed) == 1
    assert len(sleeps) == 1
    assert sum(sleeps) < 1


def test_a_rename_refused_every_time_is_rejected_after_a_few_short_tries_leaving_nothing(
    server: FtpTestServer, root: Path, sleeps: list[float]
) -> None:
    server.refuse_next("RNTO", "550 Renaming not allowed here.", times=100)

    with (
        adapter_for(server, sleep=sleeps.append) as ftp,
        pytest.raises(Rejected, match="Renaming not allowed here"),
    ):
        ftp.upload(ESSENCE)

    assert files_under(root / FOLDER.lstrip("/")) == []
    assert 1 <= len(sleeps) <= 5
    assert sum(sleeps) < 2


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
    assert raised.value.system is System.FTP
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


def test_destination_folders_are_found_by_listing_with_the_cp_name_in_any_case(
    server: FtpTestServer, root: Path
) -> None:
    (root / "VRT" / "DISK-SHARE-EVENTS").mkdir()
    wanted = [("vrt", "TAPE-SHARE-EVENTS"), ("vrt", "tape-share-events"), ("testbeeld", "DISK")]
    with adapter_for(server) as transport:
        found = transport.find_folders(wanted)
    assert found == {
        ("vrt", "TAPE-SHARE-EVENTS"): FOLDER,
        ("vrt", "tape-share-events"): None,  # the folder's own case counts
        ("testbeeld", "DISK"): None,
    }
    assert server.stored == [] and files_under(root) == sorted(
        ["VRT", "VRT/TAPE-SHARE-EVENTS", "VRT/DISK-SHARE-EVENTS"]
    )


def test_looking_for_folders_with_refused_credentials_names_the_server(
    server: FtpTestServer,
) -> None:
    with (
        adapter_for(server, password="wrong-password") as transport,
        pytest.raises(
            ServiceUnavailable, match=f"cannot log in to FTP server 127.0.0.1:{server.port}"
        ),
    ):
        transport.find_folders([("vrt", "TAPE-SHARE-EVENTS")])
