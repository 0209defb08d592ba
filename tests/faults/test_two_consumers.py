"""Two consumer processes on one PostgreSQL ledger and one queue (contract §6: one event, one
worker, across every consumer).

Consumer A holds a batch of events when the broker closes its connection: A finishes
them (by design), while the broker redelivers them to B at once. B finds A's claims,
does nothing for those events and sends them back on the shortest retry delay; when
they come back, the ledger says done. Every object is archived exactly once: one PID,
one sidecar, one transfer request.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

from tests.e2e.service import RunningService, default_concurrency
from tests.faults import broker_harness as harness
from tests.faults.test_broker_faults import slow_searches, wait_for_several_in_hand
from tests.support import amqp
from tests.support.loopback import LOOPBACK

SEARCH_SECONDS = 6.0  # A holds its batch through B's start, the close and the redelivery
HTTP_TIMEOUT = "15"  # seconds: A's slow searches end in answers


def test_a_batch_redelivered_to_a_second_consumer_is_archived_once(
    service: RunningService, examples: Path, postgres_dsn: str
) -> None:
    concurrency = default_concurrency()
    events = harness.essence_events(examples, "two-consumers", 2 * concurrency)
    slow_searches(service, *[SEARCH_SECONDS] * concurrency)  # A's batch, in hand at the close
    s = service.settings

    service.start_consumer(LEDGER_DSN=postgres_dsn, HTTP_TIMEOUT_SECONDS=HTTP_TIMEOUT)
    consumer_a, a_metrics_port = service.process, service.metrics_port
    assert consumer_a is not None
    harness.publish_persistent(service, events)
    wait_for_several_in_hand(service)  # A's metrics: its batch is in hand
    service.start_consumer(
        LEDGER_DSN=postgres_dsn, HTTP_TIMEOUT_SECONDS=HTTP_TIMEOUT
    )  # B: `service.process` from now on
    consumer_b = service.process
    assert amqp.wait_until(
        lambda: amqp.consumer_count(s.host, s.port, s.incoming_queue) == 2, timeout=20
    ), service.log()

    closed = harness.close_connections_of(consumer_a.pid, s.port)
    assert len(closed) == 1, closed

    transfers = harness.Transfers(s)
    processed = transfers.take_until(len(events), timeout=90)
    assert processed == len(events), f"{processed} of {len(events)}\n{service.log()}"
    # A's batch of the lost channel is finished only once its slow searches are: what it
    # does then is what could be done twice.
    assert amqp.wait_until(lambda: nothing_in_hand(a_metrics_port), timeout=30), service.log()
    harness.wait_until_settled(s, timeout=30)
    transfers.take_rest()
    result = harness.tally(events, transfers, service)

    assert result.clean, f"{result}\n{service.log()}"
    # Nothing done twice: A's stale workers published before B's copies came back, and B
    # never minted, uploaded or requested anything for an event A held.
    assert result.duplicated == 0, f"{result}\n{service.log()}"
    assert len(service.pid_service.minted) == len(events)
    assert len(service.ftp.stored) == len(events)
    backed_off = harness.count_in_log(service, "not handled now, back in")
    assert backed_off >= 1, service.log()  # the race happened: B met A's claims
    assert harness.count_in_log(service, "dead-lettered") == 0, service.log()
    for process in (consumer_a, consumer_b):
        stop(process)
    print(f"\ntwo consumers, one batch redelivered: {result}; {backed_off} deliveries backed off")


def nothing_in_hand(metrics_port: int) -> bool:
    url = f"http://{LOOPBACK}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        metrics = answer.read().decode()
    found = re.search(r"^s3_events_in_progress (\S+)$", metrics, re.MULTILINE)
    return found is not None and float(found.group(1)) == 0


def stop(process: subprocess.Popen[bytes] | None) -> None:
    assert process is not None
    process.terminate()
    assert process.wait(timeout=20) == 0
