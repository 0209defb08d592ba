"""The `TransportServer` port: the in-memory fake, and the FTP adapter against pyftpdlib."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import pytest

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.adapters.memory import InMemoryTransportServer
from s3_events_handler.domain.errors import Rejected
from s3_events_handler.domain.model import Sidecar
from s3_events_handler.domain.ports import TransportServer
from tests.support.ftp_server import FtpTestServer
from tests.support.sidecars import GOLDEN_ESSENCE_SIDECAR

FOLDERS = ["/VRT/TAPE-SHARE-EVENTS", "/VRT/DISK-SHARE-EVENTS"]

ESSENCE = GOLDEN_ESSENCE_SIDECAR
COLLATERAL = replace(
    ESSENCE,
    name="k98z0d4w1q_closedOt",
    folder="DISK-SHARE-EVENTS",
    media_id="closedOt",
    related_pid="k98z0d4w1q",
    object_use="metadata",
)


class Transport(Protocol):
    @property
    def server(self) -> TransportServer: ...

    def files(self) -> dict[str, bytes]:
        """Every file on the server, by its path from the root: `/{cp}/{folder}/{name}`."""
        ...


class InMemoryTransport:
    def __init__(self) -> None:
        self.server = self.fake = InMemoryTransportServer(FOLDERS)

    def files(self) -> dict[str, bytes]:
        return dict(self.fake.uploaded)


class FtpTransport:
    def __init__(self, root: Path, server: FtpTransportServer) -> None:
        self.root = root
        self.server = server

    def files(self) -> dict[str, bytes]:
        return {
            "/" + str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


@pytest.fixture(params=["memory", "ftp"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    if request.param == "memory":
        yield InMemoryTransport()
        return
    for folder in FOLDERS:
        (tmp_path / folder.lstrip("/")).mkdir(parents=True)
    with (
        FtpTestServer(tmp_path) as running,
        FtpTransportServer(
            host=running.host, user=running.user, password=running.password, timeout=5.0
        ) as adapter,
    ):
        yield FtpTransport(tmp_path, adapter)


@pytest.mark.parametrize("sidecar", [ESSENCE, COLLATERAL], ids=["essence", "collateral"])
def test_the_sidecar_lands_whole_under_its_name_with_the_rendered_bytes(
    transport: Transport, sidecar: Sidecar
) -> None:
    transport.server.upload(sidecar)
    path = f"/VRT/{sidecar.folder}/{sidecar.name}.xml"
    assert transport.files() == {path: sidecar_xml.render(sidecar)}


def test_the_essence_sidecar_is_the_golden_one(transport: Transport, examples: Path) -> None:
    transport.server.upload(ESSENCE)
    golden = (examples / "sidecar-essence.xml").read_bytes()
    assert transport.files() == {"/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml": golden}


@pytest.mark.parametrize(
    "sidecar",
    [replace(ESSENCE, folder="GONE"), replace(ESSENCE, cp_name="NOBODY")],
    ids=["folder", "content-partner"],
)
def test_a_missing_folder_is_rejected_and_nothing_lands(
    transport: Transport, sidecar: Sidecar
) -> None:
    with pytest.raises(Rejected):
        transport.server.upload(sidecar)
    assert transport.files() == {}
    transport.server.upload(ESSENCE)  # the next upload goes through
    assert list(transport.files()) == ["/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]


def test_a_second_upload_of_the_same_name_replaces_the_first(transport: Transport) -> None:
    transport.server.upload(ESSENCE)
    changed = replace(
        ESSENCE, object=replace(ESSENCE.object, md5="ffffffffffffffffffffffffffffffff")
    )
    transport.server.upload(changed)
    assert transport.files() == {
        "/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml": sidecar_xml.render(changed)
    }
    assert sidecar_xml.render(changed) != sidecar_xml.render(ESSENCE)
