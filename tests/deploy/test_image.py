"""The image as OpenShift runs it: an arbitrary uid in group 0, a read-only root file
system, SIGTERM to stop. It consumes a golden event from the local broker, puts the sidecar
on the test FTP server, sends the transfer request and keeps its ledger in /data."""

from __future__ import annotations

import json
import random
import sqlite3
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from s3_events_handler.domain.model import Step
from tests.deploy.locks import BUILD_LOCK, RUNTIME_LOCK, normalized, pins
from tests.deploy.manifests import DEPLOY, REPO, env_file, kustomization
from tests.deploy.podman import RUN_FLAGS, build_image, podman, podman_result, remove_image
from tests.e2e.service import RunningService
from tests.e2e.test_consumer import GOLDEN_PID, golden_transfer_request
from tests.support import amqp
from tests.support.http_stubs import Canned

pytestmark = pytest.mark.image

# Where the test service's environment points at this checkout; the image has its own.
HOST_ONLY = {"PATH", "CONFIG_PATH", "DESTINATION_CONFIG", "LEDGER_PATH"}
PYTHON = ["--entrypoint", "python3"]

# Run in the image: every distribution installed in its venv, as `pip freeze` would list
# them (the image has no pip), as JSON.
INSTALLED = """
import importlib.metadata, json
found = importlib.metadata.distributions()
print(json.dumps(sorted([d.metadata["Name"], d.version] for d in found)))
"""

# Run in the image: import the service as `consume` does, then name every module whose
# bytecode is not there to use as it is (missing, or stale for its source), which Python
# would compile at every start. The header: magic, flags (bit 0 hash-based, bit 1 checked),
# then the source's hash, or its time stamp and size.
COMPILED_AT_START = """
import importlib.util, json, os, sys
import s3_events_handler.entrypoints.cli, s3_events_handler.entrypoints.container

def compiled(spec):
    try:
        with open(spec.cached, "rb") as pyc:
            head = pyc.read(16)
    except OSError:
        return False
    flags = int.from_bytes(head[4:8], "little")
    with open(spec.origin, "rb") as source:
        code = source.read()
    if head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if flags & 1:
        return not flags & 2 or head[8:16] == importlib.util.source_hash(code)
    stat = os.stat(spec.origin)
    stamp = int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF
    return (int.from_bytes(head[8:12], "little"), int.from_bytes(head[12:16], "little")) == stamp

specs = [m.__spec__ for m in list(sys.modules.values()) if getattr(m, "__spec__", None)]
sources = [s for s in specs if s.origin and s.origin.endswith(".py") and s.cached]
print(json.dumps({"modules": len(sources), "compiled at start": sorted(
    s.name for s in sources if not compiled(s))}))
"""


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


def test_the_image_holds_exactly_what_the_lock_pins(image: str) -> None:
    """The same set from every build of one commit: the lock's pins, and the project."""
    output = podman("run", "--rm", "--read-only", *RUN_FLAGS, *PYTHON, image, "-c", INSTALLED)
    installed = {normalized(name): version for name, version in json.loads(output)}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # pip and the build backend installed the project and were removed again.
    assert not set(pins(BUILD_LOCK)) & set(installed)
    assert installed == {**pins(RUNTIME_LOCK), normalized(project["name"]): project["version"]}


def test_the_image_starts_on_bytecode_compiled_when_it_was_built(image: str) -> None:
    output = podman(
        "run", "--rm", "--read-only", *RUN_FLAGS, *PYTHON, image, "-c", COMPILED_AT_START
    )
    found = json.loads(output)
    assert found["modules"] > 100
    assert found["compiled at start"] == []


def test_a_pod_of_the_postgres_ledger_without_ledger_dsn_stops_at_start(image: str) -> None:
    """Read-only, with the component's LEDGER_PATH: one line naming LEDGER_PATH, exit 2."""
    [literal] = kustomization(DEPLOY / "postgres-ledger" / "kustomization.yaml")[
        "configMapGenerator"
    ][0]["literals"]
    setting, _, ledger_path = literal.partition("=")
    assert setting == "LEDGER_PATH"
    env = {k: v for k, v in env_file(REPO / ".env.example").items() if k not in HOST_ONLY}
    env.update(LEDGER_DSN="", LEDGER_PATH=ledger_path, METRICS_PORT="0", RABBIT_MQ_PORT="1")
    flags = [f"--env={key}={value}" for key, value in env.items()]
    done = podman_result("run", "--rm", "--read-only", *RUN_FLAGS, *flags, image, "consume")
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = (done.stdout + done.stderr).splitlines()
    assert line.startswith("s3-events-handler: cannot start: LEDGER_PATH: ")
    assert ledger_path in line
