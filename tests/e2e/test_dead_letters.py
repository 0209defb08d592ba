"""`s3-events-handler dead-letters list|replay` as an operator runs them, against the broker."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3_events_handler.adapters.rabbitmq.dead_letters import WINDOW
from tests.e2e.service import REPO, RunningService, command
from tests.support import amqp
from tests.support.certificates import TlsFiles
from tests.support.http_stubs import Canned
from tests.support.tls_proxy import TlsProxy

pytestmark = pytest.mark.e2e

BUCKET = "mam-highresvideo"
SHORT_ID = re.compile(r"[0-9a-f]{12}")
FOLDER_MISSING = {"x-error": "no folder /VRT/TAPE-SHARE-EVENTS on the transport server",
                  "x-error-stage": "sidecar-upload"}  # fmt: skip
WHEN = "2024-05-01T12:30:05+00:00"
GOLDEN_KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
NO_LABEL = {"x-error": "organisation OR-rf5kf25 has no MAM label", "x-error-stage": "organisations"}


@pytest.fixture
def topology(service: RunningService) -> RunningService:
    """The broker as a consumer that ran once leaves it: the dead-letter queue is there."""
    amqp.declare_service_topology(service.settings)
    return service


def event(examples: Path, key: str) -> bytes:
    message = json.loads((examples / "event-essence-created.json").read_text())
    message["Records"][0]["s3"]["object"]["key"] = key
    return json.dumps(message).encode()


def dead_letters(service: RunningService) -> list[amqp.Message]:
    s = service.settings
    return amqp.peek_messages(s.host, s.port, s.dead_letter_queue)


def incoming(service: RunningService) -> list[amqp.Message]:
    s = service.settings
    return amqp.peek_messages(s.host, s.port, s.incoming_queue)


def rows(listing: str) -> list[list[str]]:
    """The table's rows below its heading, cells split on runs of two spaces."""
    lines = listing.splitlines()
    assert lines[0].split() == ["ID", "DEAD-LETTERED", "STAGE", "OBJECT", "REASON"], listing
    return [re.split(r" {2,}", line, maxsplit=4) for line in lines[1:-1]]


def test_list_shows_each_dead_letter_and_leaves_every_one_in_its_place(
    topology: RunningService, examples: Path
) -> None:
    service = topology
    headers = {**FOLDER_MISSING, "x-pid": "a1b2c3d4e5", "x-dead-lettered-at": WHEN}
    service.park(event(examples, "a.mxf"), message_id="msg-a", headers=headers)
    service.park(
        b"not json",
        headers={"x-error": "body is not JSON", "x-error-stage": "parse"},
        timestamp=1714566605,
    )
    service.park(event(examples, "b.mxf"), headers=NO_LABEL)
    before = [m.body for m in dead_letters(service)]

    listed = service.run("dead-letters", "list")

    assert listed.returncode == 0, listed.stderr
    first, second, third = rows(listed.stdout)
    reason = "no folder /VRT/TAPE-SHARE-EVENTS on the transport server"
    assert first == ["msg-a", "2024-05-01T12:30:05Z", "sidecar-upload", f"{BUCKET}/a.mxf", reason]
    assert SHORT_ID.fullmatch(second[0])
    assert second[1:] == ["2024-05-01T12:30:05Z", "parse", "-", "body is not JSON"]
    assert SHORT_ID.fullmatch(third[0])
    assert third[1:] == ["-", "organisations", f"{BUCKET}/b.mxf", NO_LABEL["x-error"]]
    assert "3 dead letter(s)" in listed.stdout.splitlines()[-1]
    # Nothing was taken, nothing moved, and a second look gives the same ids.
    assert [m.body for m in dead_letters(service)] == before
    assert service.run("dead-letters", "list").stdout == listed.stdout


def test_list_json_gives_the_table_s_facts_one_object_a_line(
    topology: RunningService, examples: Path
) -> None:
    service = topology
    headers = {**FOLDER_MISSING, "x-pid": "a1b2c3d4e5", "x-dead-lettered-at": WHEN}
    service.park(event(examples, "a\tb.mxf"), message_id="msg-a", headers=headers)
    service.park(b"not json", headers={"x-error": "body is not JSON", "x-error-stage": "parse"})

    listed = service.run("dead-letters", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    first, second = (json.loads(line) for line in listed.stdout.splitlines())
    assert first == {
        "id": "msg-a",
        "dead_lettered_at": "2024-05-01T12:30:05Z",
        "stage": "sidecar-upload",
        "reason": FOLDER_MISSING["x-error"],
        "bucket": BUCKET,
        "key": "a\tb.mxf",  # as it is: JSON escapes it
        "pid": "a1b2c3d4e5",
    }
    assert SHORT_ID.fullmatch(second.pop("id"))
    assert second == {"dead_lettered_at": None, "stage": "parse", "reason": "body is not JSON",
                      "bucket": None, "key": None, "pid": None}  # fmt: skip
    assert "2 dead letter(s)" in listed.stderr


def test_show_prints_the_properties_headers_and_body_of_one_and_escapes_the_hostile(
    topology: RunningService, examples: Path
) -> None:
    service = topology
    service.park(b"first", message_id="msg-1", headers=NO_LABEL)
    hostile = {"x-error": "bad \x1b[31mred\x1b[0m", "x-error-stage": "parse", "x-attempt": 8}
    service.park(b"line one\nline \x1b]0;two", message_id="msg-2", headers=hostile,
                 correlation_id="corr-2", delivery_mode=2, timestamp=1714566605)  # fmt: skip
    before = parked_now(service)

    shown = service.run("dead-letters", "show", "msg-2")

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "id             msg-2",
        "dead-lettered  2024-05-01T12:30:05Z",
        "properties",
        "  delivery_mode: 2",
        "  correlation_id: corr-2",
        "  message_id: msg-2",
        "  timestamp: 1714566605",
        "headers",
        "  x-error: bad \\x1b[31mred\\x1b[0m",
        "  x-error-stage: parse",
        "  x-attempt: 8",
        "body (21 bytes)",
        "line one",
        "line \\x1b]0;two",
    ]
    assert parked_now(service) == before


def test_show_of_an_id_that_is_not_there_says_so(topology: RunningService) -> None:
    topology.park(b"first", message_id="msg-1", headers=NO_LABEL)
    shown = topology.run("dead-letters", "show", "msg-gone")
    assert (shown.returncode, shown.stdout) == (1, "")
    assert f"no dead letter msg-gone in {topology.settings.dead_letter_queue}" in shown.stderr


def test_an_empty_dead_letter_queue_is_listed_as_such(topology: RunningService) -> None:
    listed = topology.run("dead-letters", "list")
    assert (listed.returncode, listed.stdout.strip()) == (
        0,
        f"no dead letters in {topology.settings.dead_letter_queue}",
    )


def test_without_a_dead_letter_queue_the_command_says_so_and_creates_none(
    service: RunningService,
) -> None:
    listed = service.run("dead-letters", "list")
    s = service.settings
    assert listed.returncode == 1
    assert f"no queue {s.dead_letter_queue}" in listed.stderr
    assert not amqp.queue_exists(s.host, s.port, s.dead_letter_queue)


def test_an_unreachable_broker_is_named(topology: RunningService) -> None:
    listed = topology.run("dead-letters", "list", RABBIT_MQ_PORT="1", RABBIT_MQ_PASSWD="pw-hidden")
    assert listed.returncode == 1
    assert "cannot reach the broker at 127.0.0.1:1" in listed.stderr
    assert "Traceback" not in listed.stderr and "pw-hidden" not in listed.stderr


@pytest.mark.parametrize("command", [("list",), ("replay", "--all")])
def test_a_broker_certificate_that_cannot_be_verified_is_a_setting_to_fix(
    topology: RunningService, tls_proxy: TlsProxy, unknown_ca: TlsFiles, command: tuple[str, ...]
) -> None:
    """Exit 2 and the settings named, as `consume` and `check-config` say it."""
    refused = topology.run(
        "dead-letters",
        *command,
        RABBIT_MQ_PORT=str(tls_proxy.port),
        RABBIT_MQ_SSL="true",
        RABBIT_MQ_CA_FILE=str(unknown_ca.ca_file),
    )
    assert refused.returncode == 2, refused.stderr
    assert f"RABBIT_MQ_CA_FILE='{unknown_ca.ca_file}'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_replay_moves_them_back_with_a_fresh_start_and_everything_else_kept(
    topology: RunningService, examples: Path
) -> None:
    service = topology
    bodies = [event(examples, f"clip-{n}.mxf") for n in range(3)]
    for n, body in enumerate(bodies):
        headers = {**NO_LABEL, "x-attempt": 8, "x-pid": f"pid{n:07d}", "x-origin": "gateway",
                   "x-dead-lettered-at": WHEN}  # fmt: skip
        service.park(
            body,
            headers=headers,
            correlation_id=f"corr-{n}",
            content_type="application/json",
            delivery_mode=2,
            timestamp=1714566605,
        )

    replayed = service.run("dead-letters", "replay", "--all")

    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.count("replayed  ") == 3
    assert replayed.stdout.splitlines()[-1] == "replayed 3, skipped 0"
    assert dead_letters(service) == []
    moved = incoming(service)
    assert [m.body for m in moved] == bodies  # in their order
    for n, message in enumerate(moved):
        assert message.headers == {"x-pid": f"pid{n:07d}", "x-origin": "gateway"}
        assert (message.exchange, message.routing_key) == ("", service.settings.incoming_queue)
        properties = message.properties
        assert properties.correlation_id == f"corr-{n}"
        assert (properties.content_type, properties.delivery_mode) == ("application/json", 2)
        assert properties.timestamp == 1714566605


@pytest.mark.parametrize(
    ("choice", "chosen"),
    [
        pytest.param(["--id", "msg-1", "--id", "msg-3"], [1, 3], id="by id"),
        pytest.param(["--reason", "MAM LABEL"], [0, 2], id="by a piece of the reason"),
        pytest.param(["--reason-regex", r"^no folder /VRT/\S+ on"], [1, 3], id="by a pattern"),
    ],
)
def test_replay_takes_only_the_chosen_and_leaves_the_rest_in_order(
    topology: RunningService, examples: Path, choice: list[str], chosen: list[int]
) -> None:
    service = topology
    bodies = [event(examples, f"clip-{n}.mxf") for n in range(4)]
    for n, body in enumerate(bodies):
        service.park(
            body, message_id=f"msg-{n}", headers=NO_LABEL if n % 2 == 0 else FOLDER_MISSING
        )

    replayed = service.run("dead-letters", "replay", *choice)

    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == (
        "replayed 2, skipped 2 (2 not chosen; still in the dead-letter queue)"
    )
    assert [m.body for m in incoming(service)] == [bodies[n] for n in chosen]
    left = [n for n in range(4) if n not in chosen]
    assert [m.body for m in dead_letters(service)] == [bodies[n] for n in left]


def test_an_id_that_is_not_there_is_reported(topology: RunningService, examples: Path) -> None:
    topology.park(event(examples, "a.mxf"), message_id="msg-a", headers=NO_LABEL)
    replayed = topology.run("dead-letters", "replay", "--id", "msg-a", "--id", "msg-gone")
    assert replayed.returncode == 1
    assert "not found msg-gone" in replayed.stdout
    assert "replayed 1, skipped 0" in replayed.stdout
    assert len(incoming(topology)) == 1


def test_a_dry_run_lists_what_would_be_replayed_and_changes_nothing(
    topology: RunningService, examples: Path
) -> None:
    service = topology
    service.park(event(examples, "a.mxf"), message_id="msg-a", headers=NO_LABEL)
    service.park(event(examples, "b.mxf"), message_id="msg-b", headers=FOLDER_MISSING)
    before = dead_letters(service)

    dry = service.run("dead-letters", "replay", "--reason", "no folder", "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert [row[0] for row in rows("\n".join(dry.stdout.splitlines()[1:]))] == ["msg-b"]
    assert "would replay 1, skip 1" in dry.stdout
    assert [m.body for m in dead_letters(service)] == [m.body for m in before]
    assert incoming(service) == []


def test_a_dry_run_reports_an_id_that_is_not_there_as_a_replay_does(
    topology: RunningService, examples: Path
) -> None:
    topology.park(event(examples, "a.mxf"), message_id="msg-a", headers=NO_LABEL)
    before = parked_now(topology)

    dry = topology.run("dead-letters", "replay", "--id", "msg-a", "--id", "msg-gone", "--dry-run")

    assert dry.returncode == 1, dry.stderr
    assert [row[0] for row in rows("\n".join(dry.stdout.splitlines()[1:-1]))] == ["msg-a"]
    assert "not found msg-gone: no such dead letter in " in dry.stdout
    assert "would replay 1, skip 0" in dry.stdout
    assert parked_now(topology) == before
    assert incoming(topology) == []


def test_a_replay_needs_a_choice(topology: RunningService) -> None:
    refused = topology.run("dead-letters", "replay")
    assert refused.returncode == 2
    assert "one of the arguments --all --id --reason --reason-regex is required" in refused.stderr


def test_drop_without_yes_and_without_a_terminal_refuses_and_changes_nothing(
    topology: RunningService, examples: Path
) -> None:
    topology.park(event(examples, "a.mxf"), message_id="msg-a", headers=NO_LABEL)
    before = parked_now(topology)

    refused = topology.run("dead-letters", "drop", "--all")  # standard input: not a terminal

    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    assert "pass --yes" in refused.stderr
    assert parked_now(topology) == before


def test_drop_needs_a_choice(topology: RunningService) -> None:
    refused = topology.run("dead-letters", "drop", "--yes")
    assert refused.returncode == 2
    assert "one of the arguments --all --id --reason --reason-regex is required" in refused.stderr


@pytest.mark.parametrize(("answer", "dropped"), [("y", True), ("n", False)])
def test_drop_on_a_terminal_asks_first_and_drops_only_on_yes(
    topology: RunningService, examples: Path, answer: str, dropped: bool
) -> None:
    service = topology
    service.park(event(examples, "a.mxf"), message_id="msg-a", headers=NO_LABEL)
    service.park(event(examples, "b.mxf"), message_id="msg-b", headers=FOLDER_MISSING)
    before = parked_now(service)
    terminal, its_other_end = pty.openpty()
    try:
        asked = subprocess.Popen(
            [*command(), "dead-letters", "drop", "--reason", "mam label"],
            env=service.environment(),
            stdin=its_other_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=service.workdir,
        )
        os.close(its_other_end)
        os.write(terminal, f"{answer}\n".encode())  # read once the question is asked
        out, err = asked.communicate(timeout=60)
    finally:
        os.close(terminal)

    assert "? Nothing brings them back. [y/N] " in err
    assert "contains 'mam label'" in err and "(2 dead letter(s) there now)" in err
    if dropped:
        assert asked.returncode == 0, err
        assert "dropped   msg-a  " in out
        assert parked_now(service) == before[1:]
    else:
        assert (asked.returncode, out) == (1, ""), err
        assert parked_now(service) == before


@pytest.mark.parametrize("crash", ["before-commit:3", "after-commit:3"])
def test_a_replay_killed_half_way_loses_and_doubles_nothing_and_a_rerun_finishes(
    topology: RunningService, examples: Path, crash: str
) -> None:
    service = topology
    bodies = [event(examples, f"clip-{n}.mxf") for n in range(6)]
    for body in bodies:
        service.park(body, headers=NO_LABEL)
    s = service.settings

    killed = subprocess.run(
        [sys.executable, "-m", "tests.e2e.crashing_replay", "dead-letters", "replay", "--all"],
        env=service.environment(REPLAY_CRASH=crash, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        cwd=service.workdir,
        timeout=60,
    )

    assert killed.returncode == -9, killed.stderr
    # The broker requeues what the dead connection held as soon as it notices it is gone.
    assert amqp.wait_until(
        lambda: (
            amqp.message_count(s.host, s.port, s.dead_letter_queue)
            + amqp.message_count(s.host, s.port, s.incoming_queue)
            == len(bodies)
        ),
        timeout=10,
    )
    committed = 2 if crash.startswith("before") else 3
    assert [m.body for m in incoming(service)] == bodies[:committed]
    assert [m.body for m in dead_letters(service)] == bodies[committed:]

    rerun = service.run("dead-letters", "replay", "--all")

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[-1] == f"replayed {len(bodies) - committed}, skipped 0"
    assert [m.body for m in incoming(service)] == bodies
    assert dead_letters(service) == []


def test_a_dead_letter_replayed_once_its_cause_is_fixed_goes_through_with_its_pid(
    service: RunningService, examples: Path
) -> None:
    """The operator's story: the consumer dead-letters an event (its folder is missing), the
    list says when and why, the folder is made, the replay sends it through on the PID
    minted the first time."""
    folder = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS"
    folder.rmdir()
    service.pid_service.queue(Canned(body=[{"id": "k98z0d4w1q", "number": 1}]))
    service.start_consumer()
    service.publish_event((examples / "event-essence-created.json").read_bytes())
    s = service.settings
    assert amqp.wait_until(
        lambda: amqp.message_count(s.host, s.port, s.dead_letter_queue) == 1, timeout=20
    ), service.log()

    [row] = rows(service.run("dead-letters", "list").stdout)
    assert row[2:4] == ["sidecar-upload", f"{BUCKET}/{GOLDEN_KEY}"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[1]), row
    assert "TAPE-SHARE-EVENTS" in row[4]

    folder.mkdir()
    assert service.run("dead-letters", "replay", "--id", row[0]).returncode == 0

    [request] = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=20)
    assert request.properties.message_id == "k98z0d4w1q"
    assert (folder / "k98z0d4w1q.xml").is_file()
    assert service.pid_service.request_count == 1


# -- at volume -----------------------------------------------------------------------------

VOLUME = 3000


@dataclass(frozen=True)
class Watched:
    """A command run to its end while the dead-letter queue was watched."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float
    least_ready: int
    """The fewest ready messages the dead-letter queue showed while the command ran."""


def run_watched(service: RunningService, *args: str) -> Watched:
    """`s3-events-handler ARGS`, the dead-letter queue's ready count read again and again
    while it runs, and the process's peak resident memory (its rusage) once it ended."""
    s = service.settings
    out, err = service.workdir / "watched.out", service.workdir / "watched.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*command(), *args],
            env=service.environment(),
            stdout=stdout,
            stderr=stderr,
            cwd=service.workdir,
        )
    least = amqp.message_count(s.host, s.port, s.dead_letter_queue)
    deadline = time.monotonic() + 120
    with amqp.channel(s.host, s.port) as ch:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{args} did not end in 120 s")
            ready = ch.queue_declare(queue=s.dead_letter_queue, passive=True).method.message_count
            least = min(least, int(ready))
    process.returncode = os.waitstatus_to_exitcode(status)
    return Watched(
        returncode=process.returncode,
        stdout=out.read_text(),
        stderr=err.read_text(),
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        least_ready=least,
    )


def parked_now(service: RunningService) -> list[tuple[str, bytes, dict[str, Any]]]:
    """The dead-letter queue's messages, head first: message_id, body and headers."""
    return [(m.properties.message_id, m.body, m.headers) for m in dead_letters(service)]


@pytest.fixture
def crowded(topology: RunningService, examples: Path) -> list[tuple[str, bytes, dict[str, Any]]]:
    """3,000 dead letters put straight into the dead-letter queue, as `parked_now` shows them."""
    template = json.loads((examples / "event-essence-created.json").read_text())
    parked = []
    for n in range(VOLUME):
        template["Records"][0]["s3"]["object"]["key"] = f"clip-{n:04d}.mxf"
        headers = {**(NO_LABEL if n % 2 else FOLDER_MISSING), "x-dead-lettered-at": WHEN}
        parked.append((f"msg-{n:04d}", json.dumps(template).encode(), headers))
    topology.park_many(
        (body, {"message_id": message_id, "headers": headers, "delivery_mode": 2})
        for message_id, body, headers in parked
    )
    return parked


def test_a_long_queue_is_listed_whole_and_left_in_order_without_ever_reading_empty(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    watched = run_watched(topology, "dead-letters", "list")

    assert watched.returncode == 0, watched.stderr
    print(f"\nlist of {VOLUME}: peak RSS {watched.peak_rss_mib:.1f} MiB")
    listed = rows(watched.stdout)
    assert [row[0] for row in listed] == [message_id for message_id, _, _ in crowded]
    assert listed[1][3:] == [f"{BUCKET}/clip-0001.mxf", NO_LABEL["x-error"]]
    assert watched.stdout.splitlines()[-1].startswith(f"{VOLUME} dead letter(s) in ")
    assert parked_now(topology) == crowded
    # Never taken out of the queue all at once: its depth graphs and alerts see it there. At
    # most a window is held, and at a commit the next is handed out as the copies arrive.
    assert watched.least_ready >= VOLUME - 2 * WINDOW, watched.least_ready


def test_a_long_queue_listed_as_json_gives_each_once_in_flat_memory(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    watched = run_watched(topology, "dead-letters", "list", "--json")

    assert watched.returncode == 0, watched.stderr
    print(f"\nlist --json of {VOLUME}: peak RSS {watched.peak_rss_mib:.1f} MiB")
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [line["id"] for line in lines] == [message_id for message_id, _, _ in crowded]
    assert lines[2999]["key"] == "clip-2999.mxf"
    assert lines[2999]["reason"] == NO_LABEL["x-error"]
    assert f"{VOLUME} dead letter(s) in " in watched.stderr
    assert parked_now(topology) == crowded
    assert watched.least_ready >= VOLUME - 2 * WINDOW, watched.least_ready


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_list_limit_shows_the_first_n_and_leaves_the_queue_as_it_was(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]], as_json: bool
) -> None:
    listed = topology.run("dead-letters", "list", "--limit", "10", *(["--json"] if as_json else []))

    assert listed.returncode == 0, listed.stderr
    if as_json:
        ids = [json.loads(line)["id"] for line in listed.stdout.splitlines()]
        summary = listed.stderr
    else:
        ids = [row[0] for row in rows(listed.stdout)]
        summary = listed.stdout.splitlines()[-1]
    assert ids == [message_id for message_id, _, _ in crowded[:10]]
    assert f"10 of {VOLUME} dead letter(s)" in summary
    assert parked_now(topology) == crowded


def test_a_listing_its_reader_stops_reading_leaves_the_queue_in_order(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    """`dead-letters list --json | head -5`: the pipe closes long before the end."""
    reader = subprocess.Popen(
        [*command(), "dead-letters", "list", "--json"],
        env=topology.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=topology.workdir,
    )
    assert reader.stdout is not None and reader.stderr is not None
    first = [json.loads(reader.stdout.readline())["id"] for _ in range(5)]
    reader.stdout.close()
    errors = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 0, errors
    assert first == [message_id for message_id, _, _ in crowded[:5]]
    assert "Traceback" not in errors and "Broken pipe" not in errors
    assert parked_now(topology) == crowded


def test_show_finds_one_among_thousands_and_leaves_the_queue_in_order(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    shown = topology.run("dead-letters", "show", "msg-1234")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "id             msg-1234"
    assert f"  x-error: {FOLDER_MISSING['x-error']}" in lines
    _, body, _ = crowded[1234]
    assert lines[-1] == body.decode()
    assert parked_now(topology) == crowded


def test_replay_limit_moves_the_first_n_chosen_and_leaves_the_rest_in_order(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    replayed = topology.run("dead-letters", "replay", "--reason", "mam label", "--limit", "5")

    assert replayed.returncode == 0, replayed.stderr
    moved = [crowded[n] for n in (1, 3, 5, 7, 9)]  # the odd ones lack a MAM label
    assert [line.split()[1] for line in replayed.stdout.splitlines()[1:-1]] == [
        message_id for message_id, _, _ in moved
    ]
    assert replayed.stdout.splitlines()[-1] == (
        "replayed 5, skipped 5 (5 not chosen; still in the dead-letter queue); "
        f"stopped at --limit 5, {VOLUME - 10} not looked at"
    )
    assert [m.body for m in incoming(topology)] == [body for _, body, _ in moved]
    assert parked_now(topology) == [letter for letter in crowded if letter not in moved]


def test_drop_one_of_thousands_leaves_the_rest_in_order_and_logs_it(
    topology: RunningService, crowded: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    dropped = topology.run("dead-letters", "drop", "--id", "msg-1234", "--yes")

    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.splitlines()[1:] == [
        f"dropped   msg-1234  {BUCKET}/clip-1234.mxf",
        "dropped 1, skipped 2999 (2999 not chosen; still in the dead-letter queue)",
    ]
    [logged] = [json.loads(line) for line in dropped.stderr.splitlines()]
    assert logged["level"] in ("INFO", "info")
    assert "msg-1234" in logged["message"] and FOLDER_MISSING["x-error"] in logged["message"]
    assert (logged["dead_letter_id"], logged["reason"]) == ("msg-1234", FOLDER_MISSING["x-error"])
    assert parked_now(topology) == crowded[:1234] + crowded[1235:]
