"""`s3-events-handler consume` as a process: events in through the broker, sidecars on the
FTP server, transfer requests in their queue, MediaHaven told what it must know."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.e2e.service import REPO, RunningService, command
from tests.support import amqp
from tests.support.http_stubs import Canned
from tests.support.mediahaven_server import RECORDS_PATH, Fault

pytestmark = pytest.mark.e2e

GOLDEN_PID = "k98z0d4w1q"
ESSENCE_KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"


def golden_transfer_request(examples: Path, host: str) -> dict[str, object]:
    expected: dict[str, Any] = json.loads((examples / "transfer-request-essence.json").read_text())
    expected["destination"]["host"] = host
    return expected


def transfers(service: RunningService, count: int, timeout: float = 20) -> list[amqp.Message]:
    s = service.settings
    got = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, count, timeout=timeout)
    assert len(got) == count, f"{len(got)} of {count} transfer requests came\n{service.log()}"
    return got


def test_an_essence_event_becomes_the_golden_sidecar_and_transfer_request(
    service: RunningService, examples: Path
) -> None:
    service.pid_service.queue(Canned(body=[{"id": GOLDEN_PID, "number": 1}]))
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    [request] = transfers(service, 1)
    assert request.json() == golden_transfer_request(examples, service.ftp.host)
    assert request.properties.delivery_mode == 2
    assert request.properties.content_type == "application/json"
    assert request.properties.message_id == GOLDEN_PID
    assert request.properties.correlation_id == "7c1f0a9e2b3d4c5e6f708192a3b4c5d6"
    sidecar = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS" / f"{GOLDEN_PID}.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()
    assert sorted(p.name for p in sidecar.parent.iterdir()) == [f"{GOLDEN_PID}.xml"]


def test_a_collateral_event_links_the_essence_and_sends_its_sidecar(
    service: RunningService, examples: Path
) -> None:
    service.mediahaven.add_record(
        "fragment-1",
        is_fragment=True,
        pid=GOLDEN_PID,
        local_id="MEDIA-0042",
        key=ESSENCE_KEY,
        bucket="mam-highresvideo",
    )
    service.start_consumer()
    service.publish_event(
        (examples / "event-collateral-created.json").read_bytes(), correlation_id="upstream-7"
    )

    [request] = transfers(service, 1)
    assert request.properties.correlation_id == "upstream-7"
    assert request.json()["destination"]["path"] == (
        "/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_closedOt.srt"
    )
    sidecar = service.ftp.root / "VRT" / "DISK-SHARE-EVENTS" / "k98z0d4w1q_closedOt.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-collateral.xml").read_bytes()
    [relation] = service.mediahaven.relations
    assert relation.fragment_id == "fragment-1"
    assert relation.metadata == (examples / "relation-update.xml").read_bytes()
    assert relation.reason == "[s3-events-handler] Voeg relatie van subtitle toe"
    assert service.pid_service.request_count == 0


def test_a_removal_deletes_the_collaterals_then_the_essence(
    service: RunningService, examples: Path
) -> None:
    mh = service.mediahaven
    mh.add_record("essence-1", pid=GOLDEN_PID, key=ESSENCE_KEY, bucket="mam-highresvideo")
    mh.add_record(
        "fragment-1",
        is_fragment=True,
        pid="fragpid001",
        local_id="MEDIA-0042",
        key=ESSENCE_KEY,
        bucket="mam-highresvideo",
    )
    mh.add_record(
        "collateral-1",
        pid="k98z0d4w1q_closedOt",
        local_id="MEDIA-0042",
        key="closedOt/MEDIA-0042/journaal-1900.srt",
        bucket="mam-collaterals",
    )
    mh.add_record(
        "near-miss", pid="other00001", key=ESSENCE_KEY + ".bak", bucket="mam-highresvideo"
    )
    service.start_consumer()
    service.publish_event((examples / "event-removed.json").read_bytes())

    assert amqp.wait_until(lambda: len(mh.deleted) == 2, timeout=20), service.log()
    assert [d.fragment_id for d in mh.deleted] == ["collateral-1", "essence-1"]
    assert [r["Internal"]["FragmentId"] for r in mh.records] == ["fragment-1", "near-miss"]


def test_bad_input_is_dead_lettered_while_the_next_event_is_processed(
    service: RunningService, examples: Path
) -> None:
    service.start_consumer()
    service.publish_event(b"this is not an S3 event", headers={"origin": "test"})
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    transfers(service, 1)
    s = service.settings
    [dead] = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 1, timeout=10)
    assert dead.body == b"this is not an S3 event"
    assert dead.headers["x-error-stage"] == "parse"
    assert "not JSON" in dead.headers["x-error"]
    assert dead.headers["origin"] == "test"
    assert service.process is not None and service.process.poll() is None


def test_an_object_named_like_its_own_sidecar_is_dead_lettered_before_anything_is_done(
    service: RunningService, examples: Path
) -> None:
    """An upload, or an EBU-TT subtitle, named `….xml`: its transfer would overwrite the
    sidecar `{pid}.xml` (contract §3.4). No PID, no sidecar, no question to MediaHaven."""
    service.mediahaven.add_record(
        "fragment-1",
        is_fragment=True,
        pid=GOLDEN_PID,
        local_id="MEDIA-0042",
        bucket="mam-highresvideo",
    )
    essence = json.loads((examples / "event-essence-created.json").read_text())
    essence["Records"][0]["s3"]["object"]["key"] = "pid0000001.xml"
    collateral = json.loads((examples / "event-collateral-created.json").read_text())
    collateral["Records"][0]["s3"]["object"]["key"] = "closedOt/MEDIA-0042/journaal.XML"
    service.start_consumer()
    service.publish_event(json.dumps(essence).encode())
    service.publish_event(json.dumps(collateral).encode())

    s = service.settings
    dead = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 2, timeout=20)
    assert len(dead) == 2, service.log()
    assert [(m.headers["x-error-stage"], m.headers["x-error"]) for m in dead] == [
        (
            "parse",
            f"the object's extension {extension} is the sidecar's: "
            "MediaHaven would take the file for its own sidecar",
        )
        for extension in (".xml", ".XML")
    ]
    assert all("x-pid" not in m.headers for m in dead)
    assert service.pid_service.minted == []
    assert service.ftp.stored == []
    assert service.mediahaven.searches == []
    assert service.mediahaven.relations == []


def test_a_message_with_several_records_is_handled_record_by_record(
    service: RunningService, examples: Path
) -> None:
    message = json.loads((examples / "event-essence-created.json").read_text())
    second = json.loads(json.dumps(message["Records"][0]))
    second["s3"]["object"]["key"] = "second.MXF"
    second["responseElements"]["x-viaa-request-id"] = "second-request"
    message["Records"].append(second)
    service.start_consumer()
    service.publish_event(json.dumps(message).encode())

    got = transfers(service, 2)
    assert sorted(m.json()["source"]["object"]["key"] for m in got) == sorted(
        [ESSENCE_KEY, "second.MXF"]
    )
    assert len({m.properties.message_id for m in got}) == 2


def test_one_objects_events_are_handled_in_order_one_at_a_time_others_side_by_side(
    service: RunningService, examples: Path
) -> None:
    """Three objects, ten events each, published interleaved. MediaHaven answers each search
    a little later than the one before would have it (50 ms, plus an extra delay that
    shrinks from search to search), so an object's later event would overtake an earlier
    one if both were in hand at once."""
    keys = [f"ordered-{letter}.MXF" for letter in "abc"]
    rounds = 10
    template = json.loads((examples / "event-essence-created.json").read_text())
    latency = 0.05
    service.mediahaven.latency = latency
    extra = [Fault.slow(0.01 * n) for n in range(len(keys) * rounds, 0, -1)]
    service.mediahaven.fail_next(RECORDS_PATH, *extra, method="GET")
    published: dict[str, list[str]] = {key: [] for key in keys}
    for n in range(rounds):
        for key in keys:  # interleaved: a0 b0 c0 a1 b1 c1 …
            record = template["Records"][0]
            record["s3"]["object"]["key"] = key
            record["responseElements"]["x-viaa-request-id"] = f"{key}-{n:02d}"
            published[key].append(f"{key}-{n:02d}")
            service.publish_event(json.dumps(template).encode(), delivery_mode=2)
    service.start_consumer()  # with its default concurrency

    got = transfers(service, len(keys) * rounds, timeout=60)
    sent: dict[str, list[str]] = {key: [] for key in keys}
    for request in got:  # one channel: in the order the consumer published them
        sent[request.json()["source"]["object"]["key"]].append(request.properties.correlation_id)
    assert sent == published
    searched: dict[str, list[float]] = {key: [] for key in keys}
    for search in service.mediahaven.requests_to(RECORDS_PATH, method="GET"):
        searched[searched_key(search.query)].append(search.at)
    for times in searched.values():  # one at a time: each began after the one before answered
        assert all(later - earlier >= latency for earlier, later in itertools.pairwise(times))
    firsts = [times[0] for times in searched.values()]
    assert max(firsts) - min(firsts) < latency  # the objects' first events side by side


def searched_key(query: str) -> str:
    """The object key an archived-check search asks for."""
    [q] = parse_qs(query)["q"]
    found = re.search(r's3_object_key:"([^"]*)"', q)
    assert found is not None, q
    return found.group(1)


def test_a_transient_failure_is_retried_until_it_succeeds(
    service: RunningService, examples: Path
) -> None:
    service.pid_service.queue(Canned(status=503), Canned(status=503), Canned(status=503))
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    [request] = transfers(service, 1)
    assert request.json()["source"]["object"]["key"] == ESSENCE_KEY
    assert service.pid_service.request_count == 4  # three refused in attempt 1, one in attempt 2
    assert f"-> {service.settings.retry_queue(1)}" in service.log()


def test_sigterm_stops_the_consumer_cleanly(service: RunningService) -> None:
    service.start_consumer()
    assert service.stop_consumer() == 0


def test_missing_settings_stop_the_start_with_one_message_naming_them(tmp_path: Path) -> None:
    finished = subprocess.run(
        [*command(), "consume"],
        env={
            "PATH": "/usr/bin:/bin",
            "CONFIG_PATH": str(REPO / "config.yml"),
            "RABBIT_MQ_HOST": "127.0.0.1",
            "S3_EVENTS_EXCHANGE": "",
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1
    for name in (
        "RABBIT_MQ_PORT",
        "MEDIAHAVEN_API_CLIENT_SECRET",
        "PID_SERVICE_HOST",
        "FILETRANSFER_EXCHANGE",
        "APP_ENVIRONMENT",
    ):
        assert name in finished.stderr
    assert "RABBIT_MQ_HOST" not in finished.stderr
    assert "S3_EVENTS_EXCHANGE" not in finished.stderr


def test_two_objects_of_one_gateway_request_are_both_archived(
    service: RunningService, examples: Path
) -> None:
    """A batch upload: one request id, two records; neither is taken for the other."""
    message = json.loads((examples / "event-essence-created.json").read_text())
    second = json.loads(json.dumps(message["Records"][0]))
    second["s3"]["object"]["key"] = "second.MXF"
    message["Records"].append(second)
    service.start_consumer()
    service.publish_event(json.dumps(message).encode())

    got = transfers(service, 2)
    assert sorted(m.json()["source"]["object"]["key"] for m in got) == sorted(
        [ESSENCE_KEY, "second.MXF"]
    )
    names = {f"{m.properties.message_id}.xml" for m in got}
    assert len(names) == 2
    folder = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS"
    assert {p.name for p in folder.iterdir()} == names
    # Neither record was taken for the other and skipped as already handled.
    assert amqp.wait_until(lambda: len(service.outcome_lines()) == 3, timeout=10), service.log()
    assert sorted(e["outcome"] for e in service.outcome_lines()) == ["done", "done", "split"]


def test_a_multi_object_delete_removes_every_object(
    service: RunningService, examples: Path
) -> None:
    mh = service.mediahaven
    keys = [f"clip-{n}.MXF" for n in range(3)]
    for n, key in enumerate(keys):
        mh.add_record(f"essence-{n}", pid=f"essence{n:03d}", key=key, bucket="mam-highresvideo")
    mh.add_record("survivor", pid="survivor01", key="clip-3.MXF", bucket="mam-highresvideo")
    message = json.loads((examples / "event-removed.json").read_text())
    template = message["Records"][0]
    message["Records"] = []
    for key in keys:
        record = json.loads(json.dumps(template))
        record["s3"]["object"]["key"] = key
        message["Records"].append(record)
    service.start_consumer()
    service.publish_event(json.dumps(message).encode())

    assert amqp.wait_until(lambda: len(mh.deleted) == 3, timeout=20), service.log()
    assert sorted(d.fragment_id for d in mh.deleted) == ["essence-0", "essence-1", "essence-2"]
    assert [r["Internal"]["FragmentId"] for r in mh.records] == ["survivor"]


def test_a_dead_letter_after_the_pid_was_minted_carries_it(
    service: RunningService, examples: Path
) -> None:
    """A missing folder is permanent; a replay of the dead letter must reuse its PID."""
    (service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS").rmdir()
    service.pid_service.queue(Canned(body=[{"id": GOLDEN_PID, "number": 1}]))
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    s = service.settings
    [dead] = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 1, timeout=20)
    assert dead.headers["x-pid"] == GOLDEN_PID
    assert dead.headers["x-error-stage"] == "sidecar-upload"
    assert "TAPE-SHARE-EVENTS" in dead.headers["x-error"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param("LEDGER_PATH", "no-such-folder/ledger.sqlite3", id="ledger path unwritable"),
        pytest.param(
            "LEDGER_DSN",
            "postgresql://s3events:pw-not-to-show@127.0.0.1:1/s3events",
            id="ledger database unreachable",
        ),
        pytest.param("LEDGER_RETENTION_DAYS", "0.5", id="retention under a day"),
        pytest.param("RETRY_DELAYS", "10,abc", id="retry delays not numbers"),
        pytest.param("DESTINATION_CONFIG", "production:\n  vrt: [essence\n", id="table not YAML"),
        pytest.param("DESTINATION_CONFIG", "- production\n", id="table a list"),
        pytest.param("DESTINATION_CONFIG", "production: DISK\n", id="table environment a scalar"),
        pytest.param("DESTINATION_CONFIG", "production:\n  vrt: DISK\n", id="table CP a scalar"),
    ],
)
def test_a_bad_setting_stops_the_start_with_one_line_naming_it(
    service: RunningService, setting: str, value: str
) -> None:
    """`value` of DESTINATION_CONFIG is the table's text."""
    if setting == "DESTINATION_CONFIG":
        table = service.workdir / "destination_config.yml"
        table.write_text(value)
        value = str(table)
    line = service.refused_start(**{setting: value})
    assert setting in line
    assert "pw-not-to-show" not in line
