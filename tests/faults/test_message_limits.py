"""Messages that cannot be handled safely (contract §6): a body too large, too many records, and a
message during which the consumer keeps dying. Each is dead-lettered whole, and the events
behind it go through."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.e2e.service import RunningService
from tests.faults.test_broker_faults import searches, slow_searches
from tests.support import amqp

ESSENCE = "event-essence-created.json"
MIB = 1024 * 1024


def peak_rss_mib(process_id: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{process_id}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def wait_for_searches(service: RunningService, count: int) -> bool:
    return amqp.wait_until(lambda: searches(service) >= count, timeout=60)


def records_message(examples: Path, count: int, label: str) -> bytes:
    """`count` records, each its own object: what a gateway gone wrong might send."""
    template = json.loads((examples / ESSENCE).read_text())["Records"][0]
    records = []
    for n in range(count):
        record = json.loads(json.dumps(template))
        record["s3"]["object"]["key"] = f"{label}-{n:05d}.MXF"
        records.append(record)
    return json.dumps({"Records": records}).encode()


def test_an_oversized_body_and_a_fan_out_are_dead_lettered_whole_in_flat_memory(
    service: RunningService, examples: Path
) -> None:
    oversized = records_message(examples, 9000, "oversized")  # over 6 MiB, thousands of objects
    assert len(oversized) > 6 * MIB
    fan_out = records_message(examples, 1500, "fan-out")  # under 4 MiB, over MAX_RECORDS
    assert len(fan_out) < 4 * MIB
    good = (examples / ESSENCE).read_bytes()
    s = service.settings
    service.start_consumer()
    assert service.process is not None
    time.sleep(0.5)
    idle = peak_rss_mib(service.process.pid)

    service.publish_event(oversized, headers={"origin": "test"})
    service.publish_event(fan_out)
    service.publish_event(good)

    assert amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=30)
    dead = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 2, timeout=30)
    peak = peak_rss_mib(service.process.pid)
    by_body = {message.body: message for message in dead}
    assert set(by_body) == {oversized, fan_out}  # whole, body unchanged
    assert by_body[oversized].headers["x-error"] == (
        f"the body is {len(oversized)} bytes, over MAX_MESSAGE_BYTES (4194304)"
    )
    assert by_body[oversized].headers["origin"] == "test"
    assert by_body[fan_out].headers["x-error"] == "1500 records, over MAX_RECORDS (1000): not split"
    assert {m.headers["x-error-stage"] for m in dead} == {"parse"}
    # Nothing was split: only the good event reached MediaHaven or the transfer queue.
    assert amqp.message_count(s.host, s.port, s.incoming_queue) == 0
    assert searches(service) == 1
    print(f"\npeak RSS idle {idle:.1f} MiB, after both messages {peak:.1f} MiB")
    # The bodies themselves pass through the process (pika reads and republishes them);
    # parsing the oversized one into objects would cost several times its size more.
    assert peak - idle < 40, (idle, peak)


def test_a_message_the_consumer_dies_during_three_times_is_dead_lettered_unhandled(
    service: RunningService, examples: Path
) -> None:
    deadly = (examples / ESSENCE).read_bytes()
    slow_searches(service, 60, 60, 60)  # the message's search hangs until the kill
    s = service.settings
    for death in range(1, 4):
        # A dead consumer's claim holds the event for the lease (3 s in the tests): its next
        # delivery backs off meanwhile, which neither adds a death nor clears the count.
        service.start_consumer()
        assert service.process is not None
        if death == 1:
            service.publish_event(deadly)
        assert wait_for_searches(service, death), service.log()
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(timeout=10)

    service.start_consumer()
    [dead] = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 1, timeout=30)
    assert dead.body == deadly
    assert dead.headers["x-error"] == (
        "the consumer died 3 times while handling this message (POISON_LIMIT 3): not handled again"
    )
    assert searches(service) == 3  # no fourth search

    other = json.loads(deadly)
    other["Records"][0]["s3"]["object"]["key"] = "after-the-poison.MXF"
    other["Records"][0]["responseElements"]["x-viaa-request-id"] = "after-the-poison"
    service.publish_event(json.dumps(other).encode())
    [transfer] = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=30)
    assert transfer.json()["source"]["object"]["key"] == "after-the-poison.MXF"
