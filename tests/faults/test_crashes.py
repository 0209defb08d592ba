"""SIGKILL at each step boundary of the essence flow, then a restart; and duplicate deliveries.

Every event ends processed with one PID, never two different sidecars, and a
transfer request repeated only when the crash fell between the broker's confirm
and the ledger's write, and then with the same PID and message_id.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from s3_events_handler.domain.model import Step
from tests.e2e.service import REPO, RunningService
from tests.support import amqp

ESSENCE_FOLDER = Path("VRT") / "TAPE-SHARE-EVENTS"
DONE = Step.TRANSFER_REQUESTED


def essence_event(examples: Path, n: int) -> bytes:
    message = json.loads((examples / "event-essence-created.json").read_text())
    record = message["Records"][0]
    record["responseElements"]["x-viaa-request-id"] = f"crash-test-{n}"
    record["s3"]["object"]["key"] = f"crash-test-{n}.MXF"
    return json.dumps(message).encode()


def publish(service: RunningService, body: bytes) -> None:
    service.publish_event(body, delivery_mode=2)


def sidecars(service: RunningService) -> list[Path]:
    return sorted((service.ftp.root / ESSENCE_FOLDER).iterdir())


def ledger_steps(service: RunningService) -> dict[str, tuple[str, int]]:
    """(PID, step) by object key; an identity is `["created", bucket, key, request id]`."""
    with sqlite3.connect(service.workdir / "ledger.sqlite3") as db:
        rows = db.execute("SELECT identity, pid, step FROM s3_events_ledger").fetchall()
    return {json.loads(identity)[2]: (pid, step) for identity, pid, step in rows}


def crash_then_restart(service: RunningService, crash_at: str, body: bytes) -> int | None:
    """Start the crashing consumer, let it die at `crash_at`, start the real one."""
    service.start_consumer(
        argv=[sys.executable, "-m", "tests.faults.crashing_consumer"],
        CRASH_AT=crash_at,
        PYTHONPATH=str(REPO),
    )
    publish(service, body)
    process = service.process
    assert process is not None
    assert amqp.wait_until(lambda: process.poll() is not None, timeout=20), service.log()
    service.start_consumer()
    return process.returncode


@pytest.mark.parametrize(
    ("crash_at", "transfer_requests"),
    [("pid", 1), ("upload", 1), ("transfer", 2), ("ack", 1)],
)
def test_a_crash_at_any_step_boundary_loses_nothing_and_does_nothing_twice(
    service: RunningService, examples: Path, crash_at: str, transfer_requests: int
) -> None:
    returncode = crash_then_restart(service, crash_at, essence_event(examples, 1))
    assert returncode == -9  # really killed, not a clean exit

    s = service.settings
    requests = amqp.wait_for_messages(
        s.host, s.port, s.transfer_queue, transfer_requests, timeout=20
    )
    assert len(requests) == transfer_requests, service.log()
    # Let the restarted consumer finish; nothing more may come, nothing may be left.
    assert amqp.wait_until(lambda: ledger_steps(service)["crash-test-1.MXF"][1] == DONE, timeout=20)
    assert amqp.wait_until(lambda: amqp.message_count(s.host, s.port, s.incoming_queue) == 0)
    assert service.stop_consumer() == 0
    requests += amqp.get_messages(s.host, s.port, s.transfer_queue)

    assert len(requests) == transfer_requests
    assert len(service.pid_service.minted) == 1  # one PID minted for the event
    [pid] = service.pid_service.minted
    assert {m.properties.message_id for m in requests} == {pid}
    assert {m.json()["destination"]["path"].rsplit("/", 1)[1] for m in requests} == {f"{pid}.MXF"}
    assert [p.name for p in sidecars(service)] == [f"{pid}.xml"]  # one sidecar, no .part
    assert ledger_steps(service) == {"crash-test-1.MXF": (pid, DONE)}
    assert amqp.message_count(s.host, s.port, s.dead_letter_queue) == 0


def test_an_event_delivered_twice_is_archived_once(service: RunningService, examples: Path) -> None:
    body = essence_event(examples, 2)
    service.start_consumer()
    publish(service, body)
    publish(service, body)

    s = service.settings
    assert amqp.wait_until(
        lambda: (
            amqp.message_count(s.host, s.port, s.incoming_queue) == 0
            and any(e.get("result") == "already-handled" for e in service.outcome_lines())
        ),
        timeout=20,
    ), service.log()
    assert service.stop_consumer() == 0
    requests = amqp.get_messages(s.host, s.port, s.transfer_queue)
    assert len(requests) == 1
    assert len(service.pid_service.minted) == 1
    assert [p.name for p in sidecars(service)] == [f"{service.pid_service.minted[0]}.xml"]


def test_many_events_with_a_crash_in_the_middle_all_end_processed(
    service: RunningService, examples: Path
) -> None:
    """Ten events queued; the consumer dies after an upload; the next one finishes.

    One event in hand at a time (CONCURRENCY=1), so nothing else is half done when it
    dies and exactly ten PIDs are minted; several in hand: the next test.
    """
    service.start_consumer(
        argv=[sys.executable, "-m", "tests.faults.crashing_consumer"],
        CRASH_AT="upload",
        PYTHONPATH=str(REPO),
        CONCURRENCY="1",
    )
    for n in range(10, 20):
        publish(service, essence_event(examples, n))
    process = service.process
    assert process is not None
    assert amqp.wait_until(lambda: process.poll() is not None, timeout=20)
    service.start_consumer()
    s = service.settings
    requests = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 10, timeout=30)
    assert amqp.wait_until(
        lambda: sum(step == DONE for _, step in ledger_steps(service).values()) == 10, timeout=20
    )
    assert service.stop_consumer() == 0
    requests += amqp.get_messages(s.host, s.port, s.transfer_queue)
    keys = [m.json()["source"]["object"]["key"] for m in requests]
    assert sorted(keys) == sorted(f"crash-test-{n}.MXF" for n in range(10, 20))
    assert len(sidecars(service)) == 10
    assert len(service.pid_service.minted) == 10


def test_a_crash_with_many_events_in_hand_gives_each_event_one_pid_and_one_sidecar(
    service: RunningService, examples: Path
) -> None:
    """Forty events, a worker per prefetched event; the consumer dies after the first upload,
    with the others at any step (a PID just minted, an upload half-written). The next one
    finishes them all from the ledger: one PID and one sidecar per event. What a kill
    mid-way can leave: a PID minted and never claimed, a temporary `.part` file."""
    events = {n: essence_event(examples, n) for n in range(100, 140)}
    service.start_consumer(
        argv=[sys.executable, "-m", "tests.faults.crashing_consumer"],
        CRASH_AT="upload",
        PYTHONPATH=str(REPO),
    )
    for body in events.values():
        publish(service, body)
    process = service.process
    assert process is not None
    assert amqp.wait_until(lambda: process.poll() is not None, timeout=20)
    service.start_consumer()
    s = service.settings
    requests = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, len(events), timeout=30)
    assert amqp.wait_until(
        lambda: sum(step == DONE for _, step in ledger_steps(service).values()) == len(events),
        timeout=20,
    )
    assert service.stop_consumer() == 0
    requests += amqp.get_messages(s.host, s.port, s.transfer_queue)

    ledger = ledger_steps(service)
    ids_by_key: dict[str, set[str]] = {}
    for message in requests:
        key = message.json()["source"]["object"]["key"]
        ids_by_key.setdefault(key, set()).add(str(message.properties.message_id))
    assert sorted(ids_by_key) == sorted(f"crash-test-{n}.MXF" for n in events)
    assert ids_by_key == {
        key: {pid} for key, (pid, _) in ledger.items()
    }  # one PID per event, the ledger's, whatever was repeated
    finals = [path.name for path in sidecars(service) if path.name.endswith(".xml")]
    assert sorted(finals) == sorted(f"{pid}.xml" for pid, _ in ledger.values())
    leftovers = [path.name for path in sidecars(service) if not path.name.endswith(".xml")]
    assert all(name.startswith(".") and name.endswith(".part") for name in leftovers)
    assert len(service.pid_service.minted) >= len(events)
    print(
        f"\ncrash with {len(events)} events queued: {len(requests)} transfer requests, "
        f"{len(service.pid_service.minted)} PIDs minted for {len(events)} events, "
        f"{len(leftovers)} temporary files left by the kill"
    )


def test_two_consumers_sharing_a_postgres_ledger_archive_each_event_once(
    service: RunningService, examples: Path, postgres_dsn: str
) -> None:
    """Several consumers side by side, every event delivered twice: one PID and one sidecar each."""
    events = {n: essence_event(examples, n) for n in range(30, 50)}
    service.start_consumer(LEDGER_DSN=postgres_dsn)
    first = service.process
    service.process = None
    service.start_consumer(LEDGER_DSN=postgres_dsn)
    s = service.settings
    assert amqp.wait_until(
        lambda: amqp.consumer_count(s.host, s.port, s.incoming_queue) == 2, timeout=20
    )
    for n in [*events, *events]:
        publish(service, events[n])

    requests = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, len(events), timeout=30)
    assert amqp.wait_until(
        lambda: amqp.message_count(s.host, s.port, s.incoming_queue) == 0, timeout=20
    )
    assert first is not None
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    assert service.stop_consumer() == 0
    requests += amqp.get_messages(s.host, s.port, s.transfer_queue)

    ids_by_key: dict[str, set[str]] = {}
    for message in requests:
        key = message.json()["source"]["object"]["key"]
        ids_by_key.setdefault(key, set()).add(message.properties.message_id)
    assert sorted(ids_by_key) == sorted(f"crash-test-{n}.MXF" for n in events)
    assert all(len(ids) == 1 for ids in ids_by_key.values())  # one PID per event
    assert len(sidecars(service)) == len(events)
    assert "connected to the broker" in service.log()
