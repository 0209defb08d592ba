"""The image as OpenShift runs it: an arbitrary uid in group 0, a read-only root file
system, SIGTERM to stop. It consumes a golden event from the local broker, puts the sidecar
on the test FTP server, sends the transfer request and keeps its ledger in /data."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from s3_events_handler.domain.model import Step
from tests.deploy.podman import RUN_FLAGS, build_image, podman, remove_image
from tests.e2e.service import RunningService
from tests.e2e.test_consumer import GOLDEN_PID, golden_transfer_request
from tests.support import amqp
from tests.support.http_stubs import Canned

pytestmark = pytest.mark.image

# Where the test service's environment points at this checkout; the image has its own.
HOST_ONLY = {"PATH", "CONFIG_PATH", "DESTINATION_CONFIG", "LEDGER_PATH"}


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    tag = build_image()
    yield tag
    remove_image(tag)


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"s3eh-image-test-{uuid.uuid4().hex[:8]}"
    yield name
    podman("rm", "--force", "--volumes", name, check=False)


def test_the_image_archives_an_event_as_an_arbitrary_uid_in_group_0(
    image: str, service: RunningService, examples: Path, container_name: str, tmp_path: Path
) -> None:
    uid = random.randint(100_000, 2_000_000_000)
    env_file = tmp_path / "container.env"
    env_file.touch(mode=0o600)
    env = {k: v for k, v in service.environment().items() if k not in HOST_ONLY}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    service.pid_service.queue(Canned(body=[{"id": GOLDEN_PID, "number": 1}]))

    podman(
        "run",
        "--detach",
        "--name",
        container_name,
        "--user",
        f"{uid}:0",
        "--read-only",
        *RUN_FLAGS,
        "--env-file",
        str(env_file),
        image,
        "consume",
    )

    def running() -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", container_name)
        return state.strip() == "true"

    def log() -> str:
        return podman("logs", container_name, check=False)

    s = service.settings
    consuming = amqp.wait_until(
        lambda: not running() or amqp.consumer_count(s.host, s.port, s.incoming_queue) > 0,
        timeout=60,
    )
    assert consuming and running(), f"the container did not start consuming:\n{log()}"

    service.publish_event((examples / "event-essence-created.json").read_bytes())
    got = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=30)
    assert len(got) == 1, f"no transfer request came:\n{log()}"
    assert got[0].json() == golden_transfer_request(examples, service.ftp.host)
    sidecar = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS" / f"{GOLDEN_PID}.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()
    owner = podman("exec", container_name, "stat", "-c", "%u:%g", "/data/ledger.sqlite3")
    assert owner.strip() == f"{uid}:0"

    podman("stop", "--time", "30", container_name, timeout=60)
    assert podman("wait", container_name).strip() == "0", log()

    # The volume's contents ("/data/."): this podman copies a volume's root beside the target.
    copied = tmp_path / "data"
    copied.mkdir()
    podman("cp", f"{container_name}:/data/.", str(copied))
    with closing(sqlite3.connect(copied / "ledger.sqlite3")) as ledger:
        rows = ledger.execute("SELECT pid, step FROM s3_events_ledger").fetchall()
    assert rows == [(GOLDEN_PID, int(Step.TRANSFER_REQUESTED))]
