"""A soak: 1,000 events through the consumer process while faults are drawn at random.

Faults: the consumer killed (SIGKILL) and restarted, the broker closing the
consumer's connection or restarted, the FTP server restarted, MediaHaven and the PID service
answering 503 or too slowly, and events delivered twice. At the end the
processed and dead-lettered events together are exactly the input, with no
event archived twice. Counts and wall time are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pika

from tests.e2e.service import RunningService
from tests.faults.broker_harness import close_connections_of
from tests.support import amqp
from tests.support.http_stubs import Canned
from tests.support.mediahaven_server import Fault

EVENTS = int(os.environ.get("SOAK_EVENTS", "1000"))
SEED = int(os.environ.get("SOAK_SEED", "20261125"))
BAD_EVERY = 50  # one event in fifty is bad input and must end dead-lettered
DUPLICATE_EVERY = 20  # one in twenty is delivered a second time
PERSISTENT = pika.BasicProperties(delivery_mode=2)
BURST = 25  # events published between two faults
DEADLINE = 600.0


def soak_event(template: dict[str, object], n: int) -> bytes:
    message = json.loads(json.dumps(template))
    record = message["Records"][0]
    record["responseElements"]["x-viaa-request-id"] = f"soak-{n}"
    record["s3"]["object"]["key"] = f"soak-{n:04d}.MXF"
    if n % BAD_EVERY == 0:
        record["s3"]["bucket"]["metadata"]["tenant"] = "not-an-or-id"
    return json.dumps(message).encode()


class FaultDrawer:
    """Draws one fault at a time and undoes the one before."""

    def __init__(self, service: RunningService, rng: random.Random, restarts: bool) -> None:
        self.service = service
        self.rng = rng
        self.restarts = restarts  # may the broker itself be restarted
        self.counts: dict[str, int] = defaultdict(int)

    def inject(self) -> None:
        kinds = ["kill", "connection", "broker", "ftp", "mediahaven-503", "mediahaven-slow",
                 "pid-503"]  # fmt: skip
        weights = [3, 3, 1 if self.restarts else 0, 3, 3, 3, 3]
        fault = self.rng.choices(kinds, weights=weights)[0]
        self.counts[fault] += 1
        s = self.service
        if fault == "kill":
            assert s.process is not None
            s.process.send_signal(signal.SIGKILL)
            s.process.wait(timeout=10)
            s.start_consumer()
        elif fault == "connection":
            assert s.process is not None
            closed = close_connections_of(s.process.pid, s.settings.port)
            self.counts["connection-closed"] += len(closed)
        elif fault == "broker":
            amqp.rabbitmqctl("stop_app")
            try:
                time.sleep(self.rng.uniform(0.5, 2))  # the broker stays down a while
            finally:
                amqp.rabbitmqctl("start_app")
                amqp.rabbitmqctl("await_startup")
        elif fault == "ftp":
            s.ftp.restart()
        elif fault == "mediahaven-503":
            s.mediahaven.fail_next("/mediahaven-rest-api", *[Fault(status=503)] * 4)
        elif fault == "mediahaven-slow":
            s.mediahaven.fail_next("/mediahaven-rest-api", Fault.slow(2.5))
        else:
            s.pid_service.queue(*[Canned(status=503)] * 3)


def test_a_thousand_events_under_random_faults_end_processed_or_dead_lettered(
    service: RunningService, examples: Path, broker_restarts_allowed: bool
) -> None:
    rng = random.Random(SEED)
    template = json.loads((examples / "event-essence-created.json").read_text())
    s = service.settings
    started = time.monotonic()
    service.start_consumer(HTTP_TIMEOUT_SECONDS="2", RETRY_MAX_ATTEMPTS="30")

    bodies = {n: soak_event(template, n) for n in range(1, EVENTS + 1)}
    order = list(bodies) + [n for n in bodies if n % DUPLICATE_EVERY == 0]
    rng.shuffle(order)

    bad = {f"soak-{n:04d}.MXF" for n in bodies if n % BAD_EVERY == 0}
    good = {f"soak-{n:04d}.MXF" for n in bodies} - bad
    transfers: list[amqp.Message] = []
    dead: list[amqp.Message] = []
    faults = FaultDrawer(service, rng, restarts=broker_restarts_allowed)
    # Events arrive in bursts while faults strike, so faults meet events in every state.
    for start in range(0, len(order), BURST):
        for n in order[start : start + BURST]:
            # Straight to the queue: the S3 exchange is not durable, so it is gone after a
            # broker restart until the consumer declares it again.
            amqp.publish(s.host, s.port, s.incoming_queue, bodies[n], properties=PERSISTENT)
        faults.inject()
        time.sleep(rng.uniform(0.1, 0.6))

    def done() -> bool:
        transfers.extend(amqp.get_messages(s.host, s.port, s.transfer_queue))
        dead.extend(amqp.get_messages(s.host, s.port, s.dead_letter_queue))
        seen = {m.json()["source"]["object"]["key"] for m in transfers}
        return seen >= good and len(dead) >= len(bad)

    while not done():
        assert time.monotonic() - started < DEADLINE, (
            f"soak did not finish\n{service.log()[-3000:]}"
        )
        time.sleep(0.2)

    # Everything settles: no event left waiting anywhere, nothing more arrives.
    waiting = [s.incoming_queue, *(s.retry_queue(d) for d in s.retries.delays)]
    assert amqp.wait_until(
        lambda: all(amqp.message_count(s.host, s.port, q) == 0 for q in waiting), timeout=30
    )
    assert service.stop_consumer() == 0
    done()
    wall = time.monotonic() - started

    keys_of: dict[str, set[str]] = defaultdict(set)
    for message in transfers:
        keys_of[message.json()["source"]["object"]["key"]].add(message.properties.message_id)
    processed = set(keys_of)
    dead_keys = {json.loads(m.body)["Records"][0]["s3"]["object"]["key"] for m in dead}
    sidecar_files = list((service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS").glob("*.xml"))
    archived_twice = [key for key, ids in keys_of.items() if len(ids) > 1]
    repeats = len(transfers) - len(processed)
    print(
        f"\nsoak (seed {SEED}): {EVENTS} events, {len(order) - EVENTS} duplicate deliveries, "
        f"faults {dict(faults.counts)}; processed {len(processed)}, dead-lettered "
        f"{len(dead_keys)}, lost {EVENTS - len(processed | dead_keys)}, archived twice "
        f"{len(archived_twice)}, sidecars {len(sidecar_files)}, transfer requests "
        f"{len(transfers)} (repeated with the same message_id: {repeats}), "
        f"wall time {wall:.1f} s"
    )
    assert processed | dead_keys == good | bad
    assert processed == good and dead_keys == bad
    assert archived_twice == []
    assert len(sidecar_files) == len(good)
    # A repeat (same PID and message_id) needs the confirm in doubt: the consumer killed, or
    # its connection lost, between the broker taking the request and the ledger's write.
    assert repeats <= sum(faults.counts[k] for k in ("kill", "connection", "broker"))
    assert all(m.headers["x-error-stage"] == "parse" for m in dead)
