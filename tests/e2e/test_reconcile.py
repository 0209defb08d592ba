"""`s3-events-handler reconcile` as an operator runs it: a bucket on moto's S3 server, the
MediaHaven test server, the ledger and the broker the consumer uses (contract §8)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from s3_events_handler.adapters.ledger_sqlite import SqliteLedger
from tests.e2e.service import RunningService, command
from tests.support import amqp
from tests.support.mediahaven_server import RECORDS_PATH
from tests.support.relay import Relay
from tests.support.s3_server import FakeS3

pytestmark = pytest.mark.e2e

OR_ID = "OR-rf5kf25"
MD5 = "0cc175b9c0f1b6a831c399e269772661"
ESSENCE = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
GOLDEN_PID = "k98z0d4w1q"


@pytest.fixture
def bucket(service: RunningService, s3_server: FakeS3) -> str:
    """A bucket of its own, and the consumer's ledger as a consumer that ran once leaves it."""
    SqliteLedger(service.environment()["LEDGER_PATH"]).close()
    return s3_server.new_bucket("mam-highresvideo")


def reconcile(
    service: RunningService, s3: FakeS3, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return service.run("reconcile", "--older-than", "0s", *args, **{**s3.environment(), **env})


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


def test_nothing_missing_is_status_0_and_a_summary(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    for key in ("a.mxf", "b.mxf"):
        s3_server.put(bucket, key)
        service.mediahaven.add_record(f"f-{key}", key=key, bucket=bucket)

    done = reconcile(service, s3_server, "--bucket", bucket)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"2 object(s) of {bucket} looked at" in done.stderr
    assert "2 archived, 0 in flight, 0 missing" in done.stderr


def test_what_is_not_archived_is_printed_and_is_status_1(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    keys = ["archived.mxf", "a key with spaces.mxf", "ünïcødé 😀.mxf", "plus+sign.mxf"]
    for key in keys:
        s3_server.put(bucket, key, body=b"12345")
    service.mediahaven.add_record("f-1", key="archived.mxf", bucket=bucket)
    service.mediahaven.add_record("f-2", key="plus+sign.mxf", bucket="another-bucket")

    found = reconcile(service, s3_server, "--bucket", bucket, "--json")

    assert found.returncode == 1, found.stderr
    printed = lines(found.stdout)
    assert [(line["key"], line["state"]) for line in printed] == [
        ("a key with spaces.mxf", "missing"),
        ("plus+sign.mxf", "missing"),
        ("ünïcødé 😀.mxf", "missing"),
    ]
    assert set(printed[0]) == {"bucket", "key", "size", "last_modified", "state"}
    assert (printed[0]["bucket"], printed[0]["size"]) == (bucket, 5)
    assert "1 archived, 0 in flight, 3 missing" in found.stderr
    # Text: the same objects, one line each.
    text = reconcile(service, s3_server, "--bucket", bucket)
    assert text.returncode == 1
    assert [line.split()[0] for line in text.stdout.splitlines()] == ["missing"] * 3
    assert text.stdout.splitlines()[0].endswith("  a key with spaces.mxf")


def test_older_than_prefix_and_limit_narrow_what_is_looked_at(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    for key in ("2025/a.mxf", "2026/b.mxf", "2026/c.mxf", "2026/d.mxf"):
        s3_server.put(bucket, key)

    recent = service.run("reconcile", "--bucket", bucket, **s3_server.environment())
    narrowed = reconcile(service, s3_server, "--bucket", bucket, "--prefix", "2026/",
                         "--limit", "2", "--json")  # fmt: skip

    assert recent.returncode == 0, recent.stderr  # all written just now: within 1h
    assert "0 object(s)" in recent.stderr
    assert narrowed.returncode == 1, narrowed.stderr
    assert [line["key"] for line in lines(narrowed.stdout)] == ["2026/b.mxf", "2026/c.mxf"]


def test_enqueue_sends_exactly_the_missing_ones_through_the_consumer_once(
    service: RunningService, s3_server: FakeS3, bucket: str, examples: Path
) -> None:
    s3_server.put(bucket, ESSENCE, md5sum=MD5, type="application/mxf")
    s3_server.put(bucket, "second.mxf")
    s3_server.put(bucket, "archived.mxf")
    service.mediahaven.add_record("f-1", key="archived.mxf", bucket=bucket)
    service.start_consumer()
    s = service.settings

    first = reconcile(service, s3_server, "--bucket", bucket, "--enqueue", "--tenant", "or-RF5KF25")

    assert first.returncode == 1, first.stderr  # something was missing
    assert "1 archived, 0 in flight, 2 missing, 2 enqueued" in first.stderr
    requests = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 2, timeout=30)
    assert sorted(json.loads(r.body)["source"]["object"]["key"] for r in requests) == sorted(
        [ESSENCE, "second.mxf"]
    ), service.log()
    assert len(service.pid_service.minted) == 2  # one PID each
    folder = service.ftp.root / "VRT" / "TAPE-SHARE-EVENTS"
    sidecars = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert len(sidecars) == 2  # one sidecar each
    request = next(r for r in requests if json.loads(r.body)["source"]["object"]["key"] == ESSENCE)
    pid = Path(json.loads(request.body)["destination"]["path"]).stem
    golden = (examples / "sidecar-essence.xml").read_bytes()
    expected = (
        golden.replace(GOLDEN_PID.encode(), pid.encode())
        .replace(b"mam-highresvideo", bucket.encode())
        .replace(b"ingest-robot+OR-rf5kf25", b"reconcile")
    )
    assert sidecars[f"{pid}.xml"] == expected  # the md5 came along from the object's metadata

    # MediaHaven has not ingested them yet: in flight, and nothing new sent through.
    again = reconcile(service, s3_server, "--bucket", bucket, "--json")
    assert again.returncode == 0, again.stderr
    assert {line["state"] for line in lines(again.stdout)} == {"in flight"}
    twice = reconcile(service, s3_server, "--bucket", bucket, "--enqueue", "--tenant", OR_ID)
    assert twice.returncode == 0, twice.stderr
    assert "0 missing, 0 enqueued" in twice.stderr
    time.sleep(1)  # anything sent would have been handled by now
    assert amqp.message_count(s.host, s.port, s.incoming_queue) == 0
    assert amqp.message_count(s.host, s.port, s.transfer_queue) == 0
    assert len(service.pid_service.minted) == 2
    assert len(list(folder.iterdir())) == 2


def test_the_rate_limit_holds_against_mediahaven(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    for n in range(30):
        s3_server.put(bucket, f"{n:02}.mxf")
        service.mediahaven.add_record(f"f-{n}", key=f"{n:02}.mxf", bucket=bucket)

    done = reconcile(service, s3_server, "--bucket", bucket, "--rate", "10", CONCURRENCY="8")

    assert done.returncode == 0, done.stderr
    searches = sorted(seen.at for seen in service.mediahaven.requests_to(RECORDS_PATH, "GET"))
    assert len(searches) == 30
    assert searches[-1] - searches[0] >= 29 / 10 * 0.95
    most_in_a_second = max(
        sum(1 for later in searches if start <= later < start + 1.0) for start in searches
    )
    assert most_in_a_second <= 11


def test_an_s3_endpoint_gone_mid_listing_is_75_after_what_was_found(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    """S3 lists 1,000 objects a page: the relay goes down while the first page is looked
    up, so the second page's request finds nobody."""
    for n in range(1005):
        s3_server.client.put_object(Bucket=bucket, Key=f"{n:04}.mxf", Body=b"")
    relay = Relay(s3_server.port)
    with relay:
        env = {**s3_server.environment(), "S3_ENDPOINT_URL": relay.url().rstrip("/")}

        def cut_once_looked_up() -> None:
            amqp.wait_until(lambda: bool(service.mediahaven.searches), timeout=60)
            relay.down()

        cutter = threading.Thread(target=cut_once_looked_up)
        cutter.start()
        cut = service.run("reconcile", "--older-than", "0s", "--bucket", bucket, "--json",
                          "--rate", "100000", **env)  # fmt: skip
        cutter.join()

    assert cut.returncode == 75, cut.stderr
    assert [line["key"] for line in lines(cut.stdout)] == [f"{n:04}.mxf" for n in range(1000)]
    assert "1000 object(s)" in cut.stderr
    assert "a system did not answer: S3 at" in cut.stderr


def test_wrong_settings_or_arguments_are_status_2(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    no_s3 = service.run("reconcile", "--bucket", bucket)
    assert no_s3.returncode == 2
    assert "S3_ENDPOINT_URL" in no_s3.stderr and "S3_SECRET_ACCESS_KEY" in no_s3.stderr
    assert "Traceback" not in no_s3.stderr
    for wrong in (["--older-than", "1 week"], ["--enqueue"], ["--tenant", "OR-rf5kf25"],
                  ["--enqueue", "--tenant", "not-an-or-id"], ["--rate", "0"]):  # fmt: skip
        refused = reconcile(service, s3_server, "--bucket", bucket, *wrong)
        assert refused.returncode == 2, (wrong, refused.stderr)
    elsewhere = service.workdir / "not-the-consumers.sqlite3"
    no_ledger = reconcile(service, s3_server, "--bucket", bucket, LEDGER_PATH=str(elsewhere))
    assert no_ledger.returncode == 2
    assert f"LEDGER_PATH: no ledger at {elsewhere}" in no_ledger.stderr
    assert not elsewhere.exists()  # none made, empty, to make everything look missing
    no_bucket = reconcile(service, s3_server, "--bucket", "no-such-bucket-anywhere")
    assert no_bucket.returncode == 2
    assert "NoSuchBucket" in no_bucket.stderr


def test_without_boto3_it_says_how_to_get_it(
    service: RunningService, s3_server: FakeS3, bucket: str
) -> None:
    """As where the extra `reconcile` is not installed: boto3 cannot be imported."""
    without_boto3 = (
        "import sys; sys.modules['boto3'] = None; "
        "from s3_events_handler.entrypoints.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", without_boto3, "reconcile", "--bucket", bucket],
        env={**service.environment(), **s3_server.environment()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 's3-events-handler[reconcile]'" in done.stderr
    assert command()  # the installed command is the one the other tests run
