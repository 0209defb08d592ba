"""`s3-events-handler process FILE|-`: one event by hand against the configured services."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.service import RunningService, command
from tests.support import amqp
from tests.support.http_stubs import Canned

pytestmark = pytest.mark.e2e

KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"


def process(service: RunningService, source: str, stdin: bytes = b"") -> tuple[int, str]:
    finished = subprocess.run(
        [*command(), "process", source],
        input=stdin,
        env=service.environment(),
        capture_output=True,
        cwd=service.workdir,
        timeout=60,
    )
    return finished.returncode, finished.stdout.decode()


def test_an_event_file_is_processed_and_reported(service: RunningService, examples: Path) -> None:
    service.pid_service.queue(Canned(body=[{"id": "k98z0d4w1q", "number": 1}]))
    code, out = process(service, str(examples / "event-essence-created.json"))
    assert code == 0
    assert json.loads(out) == {
        "outcome": "done",
        "result": "sent",
        "summary": f"sent VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml for {KEY}",
    }
    sidecar = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS" / "k98z0d4w1q.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()
    s = service.settings
    [request] = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=5)
    assert request.properties.message_id == "k98z0d4w1q"


def test_bad_input_on_standard_input_is_reported_with_its_reason(service: RunningService) -> None:
    code, out = process(service, "-", stdin=b'{"Records": [{"eventName": "ObjectCreated:Put"}]}')
    report = json.loads(out)
    assert (code, report["outcome"]) == (1, "dead-letter")
    assert "s3.object.key is missing" in report["reason"]


def test_an_unreachable_broker_is_reported_without_doing_anything(
    service: RunningService, examples: Path
) -> None:
    finished = subprocess.run(
        [*command(), "process", str(examples / "event-essence-created.json")],
        env=service.environment(RABBIT_MQ_PORT="1", RABBIT_MQ_PASSWD="pw-that-must-not-show"),
        capture_output=True,
        text=True,
        cwd=service.workdir,
        timeout=60,
    )
    assert finished.returncode == 75
    assert "cannot reach the broker" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert "pw-that-must-not-show" not in finished.stderr
    assert service.pid_service.request_count == 0


@pytest.mark.parametrize("name", ["missing.json", "."], ids=["missing", "a folder"])
def test_an_event_file_that_cannot_be_read_is_named_in_one_line(
    service: RunningService, name: str
) -> None:
    finished = service.run("process", name)
    assert finished.returncode == 2
    assert finished.stderr.startswith(f"s3-events-handler: cannot read {name}: ")
    assert finished.stderr.count("\n") == 1
    # Refused before the start: the ledger was not even opened.
    assert not (service.workdir / "ledger.sqlite3").exists()
    assert service.pid_service.request_count == 0


def test_python_dash_m_entrypoints_is_the_same_command(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "s3_events_handler.entrypoints", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert finished.returncode == 0
    assert all(name in finished.stdout for name in ("consume", "process", "demo"))
