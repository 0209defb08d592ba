"""What an operator sees of `s3-events-handler consume` (contract §7): the metrics and health on
METRICS_PORT, and one log line an event.

The broker outage is made with a relay between the consumer and the shared broker, never
by stopping the broker itself.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.service import CONSUMER_LOGGER, RunningService
from tests.support import amqp
from tests.support.http_stubs import Canned
from tests.support.loopback import LOOPBACK
from tests.support.mediahaven_server import RECORDS_PATH, Fault
from tests.support.promtool import promtool
from tests.support.relay import Relay

pytestmark = pytest.mark.e2e

# What each event's line carries (contract §7); `pid` only when known.
EVENT_FIELDS = {"correlation_id", "kind", "bucket", "key", "outcome", "stage", "attempt"}
POLL_SECONDS = 0.1


def essence_events(examples: Path, count: int) -> list[tuple[str, str, bytes]]:
    """`count` distinct essence events as (request id, key, body)."""
    template = json.loads((examples / "event-essence-created.json").read_text())
    events = []
    for n in range(count):
        message = json.loads(json.dumps(template))
        record = message["Records"][0]
        key = f"operating-{n}.MXF"
        request_id = f"operating-request-{n}"
        record["s3"]["object"]["key"] = key
        record["responseElements"]["x-viaa-request-id"] = request_id
        events.append((request_id, key, json.dumps(message).encode()))
    return events


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def events_total(exposition: str, outcome: str, kind: str = "created") -> float:
    return samples(exposition)[("s3_events_total", (("kind", kind), ("outcome", outcome)))]


def scrape(service: RunningService) -> str:
    status, body = service.get("/metrics")
    assert status == 200, body
    return body


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


# --- metrics --------------------------------------------------------------------------------


def test_the_metrics_count_good_events_done_and_bad_ones_dead_lettered(
    service: RunningService, examples: Path
) -> None:
    good, bad = essence_events(examples, 3), [b"not an S3 event", b'{"Records": []}']
    service.start_consumer()
    for _request_id, _key, body in good:
        service.publish_event(body)
    for body in bad:
        service.publish_event(body)

    def settled() -> bool:
        exposition = scrape(service)
        return events_total(exposition, "done") + events_total(exposition, "dead_lettered") == 5

    assert wait_for(settled, timeout=30), service.log()
    exposition = scrape(service)
    found = samples(exposition)
    assert events_total(exposition, "done") == 3
    assert events_total(exposition, "dead_lettered") == 2
    other = {"skipped", "retried", "split"}
    assert sum(events_total(exposition, o) for o in other) == 0
    assert sum(events_total(exposition, o, kind="removed") for o in other | {"done"}) == 0
    done = (("kind", "created"), ("outcome", "done"))
    assert found[("s3_events_duration_seconds_count", done)] == 3
    assert found[("s3_events_in_progress", ())] == 0
    assert found[("s3_events_ledger_hits_total", ())] == 0
    assert found[("s3_events_broker_reconnects_total", ())] == 0
    assert time.time() - found[("s3_events_last_done_timestamp_seconds", ())] < 60
    assert found[("s3_events_build_info", (("version", "2.0.0"),))] == 1
    for system in ("mediahaven", "pid", "organisations", "ftp", "broker"):
        assert found[("s3_events_downstream_errors_total", (("system", system),))] == 0


def test_the_exposition_passes_promtool(service: RunningService, examples: Path) -> None:
    checker = promtool()
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())
    assert wait_for(lambda: events_total(scrape(service), "done") == 1, timeout=20), service.log()

    checked = subprocess.run(
        [checker, "check", "metrics"],
        input=scrape(service),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint warnings either


def test_a_downstream_outage_is_counted_for_its_system(
    service: RunningService, examples: Path
) -> None:
    service.ftp.stop()
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())

    def ftp_errors() -> float:
        errors = samples(scrape(service))
        return errors[("s3_events_downstream_errors_total", (("system", "ftp"),))]

    assert wait_for(lambda: ftp_errors() >= 1, timeout=30), service.log()
    assert wait_for(lambda: events_total(scrape(service), "retried") >= 1, timeout=10)


def test_nothing_is_served_with_metrics_port_0(service: RunningService) -> None:
    service.start_consumer(METRICS_PORT="0")
    with pytest.raises(OSError):
        service.get("/healthz")


# --- health ---------------------------------------------------------------------------------


@pytest.fixture
def broker_relay(broker: tuple[str, int]) -> Iterator[Relay]:
    """A relay to the shared broker, for the consumer to connect through and a test to cut."""
    with Relay(broker[1]) as relay:
        yield relay


def test_readiness_follows_the_broker_while_liveness_stays(
    service: RunningService, broker_relay: Relay
) -> None:
    service.start_consumer(RABBIT_MQ_PORT=str(broker_relay.port), RABBIT_MQ_HEARTBEAT="2")
    assert wait_for(lambda: service.get("/readyz")[0] == 200, timeout=10), service.log()
    assert service.get("/healthz") == (200, "ok\n")

    broker_relay.down()
    went_away = time.monotonic()
    assert wait_for(lambda: service.get("/readyz")[0] == 503, timeout=10), service.log()
    # Down for longer than a few reconnect attempts: it stays alive all along.
    healthz_codes = set()
    while time.monotonic() - went_away < 6:
        healthz_codes.add(service.get("/healthz")[0])
        assert service.get("/readyz")[0] == 503
        time.sleep(0.5)
    assert healthz_codes == {200}

    broker_relay.up()
    assert wait_for(lambda: service.get("/readyz") == (200, "ready\n"), timeout=40), service.log()
    assert service.get("/healthz")[0] == 200
    found = samples(scrape(service))
    assert found[("s3_events_broker_reconnects_total", ())] == 1
    assert found[("s3_events_downstream_errors_total", (("system", "broker"),))] >= 1
    assert service.stop_consumer() == 0


def test_readiness_drops_at_sigterm_while_liveness_lasts_until_the_exit(
    service: RunningService, examples: Path
) -> None:
    """A search held for 3 s keeps the event in hand while the consumer stops."""
    service.mediahaven.fail_next(RECORDS_PATH, Fault.slow(3), method="GET")
    service.start_consumer()
    assert wait_for(lambda: service.get("/readyz")[0] == 200, timeout=10), service.log()
    service.publish_event((examples / "event-essence-created.json").read_bytes())
    searches = service.mediahaven.requests_to
    assert wait_for(lambda: bool(searches(RECORDS_PATH, method="GET")), timeout=10)

    process = service.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    stopping = (503, "stopping: finishing the messages in hand\n")
    assert wait_for(lambda: service.get("/readyz") == stopping, timeout=2), service.log()
    assert service.get("/healthz") == (200, "ok\n")
    assert process.wait(timeout=15) == 0
    [line] = service.outcome_lines()
    assert line["outcome"] == "done"  # finished within the grace, not dropped


def test_a_path_it_does_not_serve_is_404(service: RunningService) -> None:
    service.start_consumer()
    assert service.get("/") == (404, "not found\n")


SLOW_CLIENTS = 300
REQUEST_SECONDS = 5  # contract §7: a request not arrived whole by then is closed
MAX_CONNECTIONS = 32  # held at once, each on a thread


def threads_of(pid: int) -> int:
    """The threads process `pid` runs now (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for process {pid}")


def closed_by_the_server(client: socket.socket, within: float) -> bool:
    """Whether the server ends the connection within `within` seconds (it sends nothing)."""
    client.settimeout(max(within, 0.01))
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_cannot_hold_the_status_port(service: RunningService, examples: Path) -> None:
    """300 connections that never finish their request (half of them send half a request
    line): no thread for each, the probe answers at once, events flow, and the server
    closes every one of them within the deadline."""
    service.start_consumer()
    process = service.process
    assert process is not None
    assert wait_for(lambda: service.get("/readyz")[0] == 200, timeout=10), service.log()
    threads_before = threads_of(process.pid)
    slow: list[socket.socket] = []
    try:
        for n in range(SLOW_CLIENTS):
            client = socket.create_connection((LOOPBACK, service.metrics_port), timeout=5)
            slow.append(client)
            if n % 2:
                client.sendall(b"GET /healthz HT")
        opened = time.monotonic()
        assert service.get("/healthz") == (200, "ok\n")
        assert time.monotonic() - opened < 1
        # A thread per connection held, and a few that gave their slot up and are ending.
        assert threads_of(process.pid) <= threads_before + MAX_CONNECTIONS + 4
        service.publish_event((examples / "event-essence-created.json").read_bytes())
        s = service.settings
        assert len(amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=20)) == 1

        deadline = opened + REQUEST_SECONDS + 2
        still_open = [
            n
            for n, client in enumerate(slow)
            if not closed_by_the_server(client, within=deadline - time.monotonic())
        ]
        assert still_open == []
    finally:
        for client in slow:
            client.close()
    assert service.get("/healthz") == (200, "ok\n")
    assert process.poll() is None


# --- logs -----------------------------------------------------------------------------------


def info_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("level") == "info"]


def test_each_event_gets_exactly_one_info_line_with_its_fields(
    service: RunningService, examples: Path
) -> None:
    good = essence_events(examples, 2)
    service.start_consumer()
    before = len(service.log_entries())
    for _request_id, _key, body in good:
        service.publish_event(body)
    service.publish_event(b"not an S3 event", correlation_id="bad-1")
    service.publish_event((examples / "event-removed.json").read_bytes())
    assert wait_for(lambda: len(service.outcome_lines()) == 4, timeout=30), service.log()
    during = service.log_entries()[before:]
    assert service.stop_consumer() == 0

    # Between the start and the stop: one INFO line an event, and beside them only lines
    # about a connection (the FTP login), which name no event and do not come per event.
    lines = [line for line in info_lines(during) if "outcome" in line]
    assert all(line["logger"] == CONSUMER_LOGGER for line in lines), lines
    assert len(lines) == 4
    by_key = {line["key"]: line for line in lines}
    # The others are about a connection: their messages name no event (their fields may,
    # when the connection was made while an event was handled).
    others = [line for line in info_lines(during) if "outcome" not in line]
    named = {*by_key, *(line["correlation_id"] for line in lines), *service.pid_service.minted}
    assert not [o for o in others if any(w and w in o["message"] for w in named)], others
    assert len(others) < len(lines), others
    for request_id, key, _body in good:
        line = by_key[key]
        assert EVENT_FIELDS | {"pid", "duration_ms"} <= set(line)
        assert (line["correlation_id"], line["kind"], line["bucket"]) == (
            request_id,
            "created",
            "mam-highresvideo",
        )
        assert (line["outcome"], line["stage"], line["attempt"]) == ("done", "done", 1)
        assert len(line["pid"]) == 10
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
        assert line["message"].startswith("done: message ")
    assert {by_key[key]["pid"] for _r, key, _b in good} == set(service.pid_service.minted)
    bad = by_key[None]
    assert (bad["correlation_id"], bad["kind"], bad["outcome"], bad["stage"]) == (
        "bad-1",
        "created",
        "dead_lettered",
        "parse",
    )
    assert "pid" not in bad
    assert "not JSON" in bad["reason"]
    [removal] = [line for line in lines if line["kind"] == "removed"]
    assert (removal["outcome"], removal["result"]) == ("skipped", "nothing-to-remove")


def test_the_text_format_appends_the_fields_for_a_person(
    service: RunningService, examples: Path
) -> None:
    service.start_consumer(LOG_FORMAT="text")
    service.publish_event((examples / "event-essence-created.json").read_bytes())
    s = service.settings

    def outcome_line() -> str | None:
        return next((x for x in service.log().splitlines() if " outcome=" in x), None)

    assert amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=20)
    assert wait_for(lambda: outcome_line() is not None, timeout=10), service.log()
    line = outcome_line()
    assert line is not None
    assert f" info {CONSUMER_LOGGER}: done: message " in line
    for pair in (
        "correlation_id=7c1f0a9e2b3d4c5e6f708192a3b4c5d6",
        "kind=created",
        "bucket=mam-highresvideo",
        "outcome=done",
        "stage=done",
        "attempt=1",
    ):
        assert f" {pair} " in line, line
    assert " duration_ms=" in line and " pid=" in line


LOG_KEYS = ("message", "level", "logger", "timestamp", "source")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def test_every_log_line_has_meemoos_keys_and_an_events_lines_carry_its_fields(
    service: RunningService, examples: Path
) -> None:
    """A run with an event retried once: every line of the log parsed and checked (contract §7)."""
    [(request_id, key, body)] = essence_events(examples, 1)
    service.pid_service.queue(*[Canned(status=503)] * 3)  # the first attempt gives up
    service.start_consumer()
    service.publish_event(body)
    assert wait_for(
        lambda: any(line.get("outcome") == "done" for line in service.outcome_lines()), timeout=30
    ), service.log()
    assert service.stop_consumer() == 0

    lines = service.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert list(entry)[: len(LOG_KEYS)] == list(LOG_KEYS), entry
        assert entry["level"] in LEVELS, entry
        assert entry["timestamp"].endswith("Z"), entry
        file, function, number = entry["source"].rsplit(":", 2)
        assert file.endswith(".py") and function and number.isdigit(), entry
    about_the_event = [e for e in entries if e.get("correlation_id") == request_id]
    warnings = [e["message"] for e in about_the_event if e["level"] == "warning"]
    assert any(message.startswith("attempt 1 failed at pid") for message in warnings), entries
    for entry in about_the_event:
        assert (entry["bucket"], entry["key"]) == ("mam-highresvideo", key), entry
    outcomes = [e["outcome"] for e in about_the_event if "outcome" in e]
    assert outcomes == ["retried", "done"], about_the_event
