"""The FTP transport server's connections against a real FTP server: workers upload side by
side, each on a connection of its own, and the connections are kept for the next uploads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.domain.model import S3Object, Sidecar
from tests.support.ftp_server import FtpTestServer
from tests.support.threads import side_by_side

FOLDER = Path("VRT") / "TAPE-SHARE-EVENTS"
SIDECAR = Sidecar(
    name="template",
    cp_name="VRT",
    folder="TAPE-SHARE-EVENTS",
    or_id="OR-rf5kf25",
    pid="template",
    object=S3Object(domain="s3", bucket="mam-highresvideo", key="clip.mxf", owner="owner"),
    object_use="archive_master",
)
SIZE = 4


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FtpTestServer]:
    (tmp_path / FOLDER).mkdir(parents=True)
    with FtpTestServer(tmp_path) as running:
        yield running


@pytest.fixture
def pool(server: FtpTestServer) -> Iterator[FtpTransportServer]:
    opened = FtpTransportServer(
        host=server.host,
        user=server.user,
        password=server.password,
        timeout=5.0,
        connections=SIZE,
    )
    yield opened
    opened.close()


def upload_side_by_side(pool: FtpTransportServer, workers: int, each: int, label: str) -> None:
    def uploads(worker: int) -> None:
        for n in range(each):
            name = f"{label}{worker:02d}{n:04d}"
            pool.upload(replace(SIDECAR, name=name, pid=name))

    assert side_by_side(uploads, workers) == [None] * workers


def test_workers_upload_side_by_side_on_at_most_size_connections_kept_between_uploads(
    pool: FtpTransportServer, server: FtpTestServer
) -> None:
    upload_side_by_side(pool, workers=2 * SIZE, each=5, label="a")

    names = sorted(path.name for path in (server.root / FOLDER).iterdir())
    uploaded = [f"a{worker:02d}{n:04d}.xml" for worker in range(2 * SIZE) for n in range(5)]
    assert names == sorted(uploaded)
    assert 1 <= server.logins == pool.connections_opened <= SIZE


def test_after_a_server_restart_each_connection_logs_in_again_once_in_the_upload(
    pool: FtpTransportServer, server: FtpTestServer
) -> None:
    upload_side_by_side(pool, workers=SIZE, each=3, label="b")
    before = server.logins
    server.restart()

    upload_side_by_side(pool, workers=SIZE, each=3, label="c")

    assert len(list((server.root / FOLDER).iterdir())) == 2 * SIZE * 3
    assert server.logins - before <= SIZE


def test_the_destination_folders_are_looked_for_on_a_connection_of_the_pool(
    pool: FtpTransportServer, server: FtpTestServer
) -> None:
    found = pool.find_folders([("vrt", "TAPE-SHARE-EVENTS"), ("vrt", "NOWHERE")])

    assert found == {
        ("vrt", "TAPE-SHARE-EVENTS"): "/VRT/TAPE-SHARE-EVENTS",
        ("vrt", "NOWHERE"): None,
    }
    assert server.logins == 1


def test_a_pool_needs_room_for_a_connection(server: FtpTestServer) -> None:
    with pytest.raises(ValueError, match="room"):
        FtpTransportServer(
            host=server.host,
            user=server.user,
            password=server.password,
            timeout=5.0,
            connections=0,
        )
