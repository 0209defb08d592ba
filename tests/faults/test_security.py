"""Security: secrets stay secret, and event values cannot steer queries, paths or markup.

- Secrets never appear in the process's log, nor in any message it leaves on the
  broker, whatever fails (wrong credentials, refused tokens, servers echoing
  what they were sent, 5xx, timeouts, an unreachable ledger, bad input).
- An object key full of query syntax cannot widen a MediaHaven search into a
  delete of anything but the exact record.
- CP names, collateral types, media ids and PIDs cannot move a sidecar out of
  `/{cp_name}/{folder}/` on the transport server.
- Keys with XML-special or non-ASCII characters give well-formed sidecars that
  give the key back exactly; characters XML cannot carry are bad input.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from s3_events_handler.adapters.mediahaven import MediaHavenRecords, render_query
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import DeadLetter, Delivery, Done
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.model import Query, Term
from tests.conftest import EXAMPLES
from tests.e2e.service import OR_ID, RunningService, command, running
from tests.faults.test_poison_messages import settled_counts
from tests.support import amqp
from tests.support.http_stubs import Canned, FakeOrganisationsApi, FakePidService
from tests.support.mediahaven_server import (
    PASSWORD_GRANT_PATH,
    RECORDS_PATH,
    FakeMediaHaven,
    Fault,
    parse_query,
)
from tests.unit.builders import World

ESSENCE = json.loads((EXAMPLES / "event-essence-created.json").read_text())
COLLATERAL = json.loads((EXAMPLES / "event-collateral-created.json").read_text())
REMOVED = json.loads((EXAMPLES / "event-removed.json").read_text())
ESSENCE_KEY = ESSENCE["Records"][0]["s3"]["object"]["key"]
BUCKET = "mam-highresvideo"
EXPECTED_FOLDERS = ("VRT/TAPE-SHARE-EVENTS", "VRT/DISK-SHARE-EVENTS")
SIDECAR_NAME = re.compile(r"[a-z0-9]{10}(?:_[A-Za-z]+)?\.xml")
# Characters XML 1.0 can carry (its Char production).
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
NOT_IN_A_FILE_NAME = re.compile("[\x00-\x1f\x7f-\x9f/\\\\]")
XML_SPECIAL_KEYS = (
    "<script>alert(1)</script>.MXF",
    "a&b&amp;c.MXF",
    "quotes \"double\" and 'single'.MXF",
    "cdata ]]> end.MXF",
    "<!-- comment --><![CDATA[x]]>.MXF",
    "emoji \U0001f3ac\U0001f600\U0001f1e7\U0001f1ea.MXF",
    "\u65e5\u672c\u8a9e\u306e\u30d5\u30a1\u30a4\u30eb.MXF",
    "combining e\u0301\u0327 a\u030a\u20dd.MXF",
    "rtl \u202e\u05e9\u05dc\u05d5\u05dd\u202c.MXF",
    "tab\tline\nreturn\r.MXF",
    "  leading and trailing  ",
)


def event_body(template: dict[str, Any], request_id: str, **fields: str) -> bytes:
    """`template` with its own request id and the given `key`, `bucket` or `tenant`."""
    message = copy.deepcopy(template)
    record = message["Records"][0]
    record["responseElements"]["x-viaa-request-id"] = request_id
    if "key" in fields:
        record["s3"]["object"]["key"] = fields["key"]
    if "bucket" in fields:
        record["s3"]["bucket"]["name"] = fields["bucket"]
    if "tenant" in fields:
        record["s3"]["bucket"]["metadata"]["tenant"] = fields["tenant"]
    return json.dumps(message).encode()


def wait_settled(service: RunningService, published: int, timeout: float = 30) -> None:
    """Until `published` messages (and what they split into) were done or dead-lettered."""

    def settled() -> bool:
        counts = settled_counts(service.log())
        done = counts["done"] + counts["split"] + counts["dead-letter"]
        return done >= published + counts["split children"]

    assert amqp.wait_until(settled, timeout=timeout), (
        f"{published} published, {settled_counts(service.log())}\n{service.log()}"
    )


def sidecar_fields(data: bytes) -> tuple[str | None, str | None]:
    root = etree.fromstring(data)
    return root.findtext("MDProperties/s3_object_key"), root.findtext(
        "MDProperties/dc_identifier_localids/Bestandsnaam"
    )


@pytest.fixture
def workdir(tmp_path: Path, broker: tuple[str, int]) -> Path:
    return tmp_path


# -- secrets -------------------------------------------------------------------------------------

MH_CLIENT_SECRET = "mh-client-secret-Q7xW2vZ9"
MH_PASSWORD = "mh-api-password-R4tY8uP1"
MH_WRONG_PASSWORD = "mh-wrong-password-D9fS4aE6"
FTP_PASSWORD = "ftp-password-L3kJ6hG0"
FTP_WRONG_PASSWORD = "ftp-wrong-password-B5nM2cX8"
LEDGER_PASSWORD = "ledger-password-T1gH7jK3"
SECRETS = (
    MH_CLIENT_SECRET,
    MH_PASSWORD,
    MH_WRONG_PASSWORD,
    FTP_PASSWORD,
    FTP_WRONG_PASSWORD,
    LEDGER_PASSWORD,
)
ECHO = (
    f'{{"error": "invalid_request", "client_secret": "{MH_CLIENT_SECRET}", '
    f'"password": "{MH_PASSWORD}", "Authorization": "Bearer {{token}}"}}'
)


@pytest.fixture
def secret_service(workdir: Path, broker: tuple[str, int]) -> Iterator[RunningService]:
    service = RunningService(
        workdir=workdir,
        broker=broker,
        mediahaven=FakeMediaHaven(client_secret=MH_CLIENT_SECRET, password=MH_PASSWORD),
    )
    service.ftp.password = FTP_PASSWORD
    yield from running(service)


def everything_on_the_broker(service: RunningService) -> list[amqp.Message]:
    s = service.settings
    messages: list[amqp.Message] = []
    for queue in amqp.all_queues(s):
        messages.extend(amqp.get_messages(s.host, s.port, queue))
    return messages


def test_secrets_never_appear_in_logs_or_messages_whatever_fails(
    secret_service: RunningService,
) -> None:
    service = secret_service
    mh = service.mediahaven
    published = 0

    def publish(body: bytes) -> None:
        nonlocal published
        service.publish_event(body)
        published += 1

    # 0. The ledger database is out of reach: the start stops, naming LEDGER_DSN.
    refused = subprocess.run(
        [*command(), "consume"],
        env=service.environment(
            LEDGER_DSN=f"postgresql://s3eh:{LEDGER_PASSWORD}@127.0.0.1:1/ledger",
            LOG_LEVEL="DEBUG",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=service.workdir,
    )
    assert refused.returncode == 2, refused.stderr
    with service.log_path.open("a") as log_file:
        log_file.write(refused.stdout + refused.stderr)

    # 1. The API password is wrong.
    service.start_consumer(MEDIAHAVEN_API_PASSWD=MH_WRONG_PASSWORD, LOG_LEVEL="DEBUG")
    publish(event_body(ESSENCE, "secret-1", key="secret-1.MXF"))
    publish(event_body(REMOVED, "secret-2"))
    wait_settled(service, published)
    assert service.stop_consumer() == 0

    # 2. Good API credentials, a wrong FTP password, one-second HTTP timeouts.
    service.start_consumer(
        MEDIAHAVEN_FTP_PASSWD=FTP_WRONG_PASSWORD, HTTP_TIMEOUT_SECONDS="1", LOG_LEVEL="DEBUG"
    )
    # The token endpoint and the search answer 400 with our secrets echoed back.
    mh.fail_next(PASSWORD_GRANT_PATH, Fault(400, body=ECHO.encode()))
    mh.fail_next(RECORDS_PATH, Fault(400, body=ECHO.encode()))
    publish(event_body(REMOVED, "secret-3"))
    wait_settled(service, published)
    # Every token refused, even a fresh one; then the echo with a live token in it.
    mh.refuse_tokens = True
    publish(event_body(REMOVED, "secret-4"))
    wait_settled(service, published)
    mh.refuse_tokens = False
    # A server echoing the token in use: the adapter holds a good one after this removal.
    publish(event_body(REMOVED, "secret-warm-up", key="nothing-to-remove.MXF"))
    wait_settled(service, published)
    token = mh.issued_tokens[-1]
    mh.fail_next(RECORDS_PATH, Fault(403, body=ECHO.replace("{token}", token).encode()))
    publish(event_body(REMOVED, "secret-5"))
    wait_settled(service, published)
    # 5xx (with the echo in the body), then an answer too slow for the timeout.
    mh.fail_next(RECORDS_PATH, *[Fault(503, body=ECHO.encode())] * 3, Fault.slow(2.5))
    publish(event_body(REMOVED, "secret-6"))
    wait_settled(service, published)
    # The FTP server refuses the password.
    publish(event_body(ESSENCE, "secret-7", key="secret-7.MXF"))
    wait_settled(service, published)
    # Bad input.
    publish(b"not json")
    publish(event_body(ESSENCE, "secret-8", tenant="OR-nope"))
    wait_settled(service, published)
    assert service.stop_consumer() == 0

    log = service.log()
    # Each failure really happened (so the search below looked where secrets could slip out).
    for sign in (
        "refused the API credentials",
        "ledger database",
        "answered 400 to search",
        "answered 401",
        "answered 403 to search",
        "answered 503",
        "did not answer search within 1 s",
        "cannot log in to FTP server",
        "not JSON",
    ):
        assert sign in log, sign
    messages = everything_on_the_broker(service)
    dead = [m for m in messages if m.routing_key == service.settings.dead_letter_queue]
    assert len(dead) == 8, [m.headers for m in messages]
    texts = [log] + [
        f"{m.body.decode('utf-8', 'replace')}\n{m.properties!r}\n{m.headers!r}" for m in messages
    ]
    tokens = mh.issued_tokens + mh.issued_refresh_tokens
    assert tokens
    found = [secret for secret in (*SECRETS, *tokens) for text in texts if secret in text]
    assert found == []
    print(
        f"\nsecrets: {len(SECRETS)} configured + {len(tokens)} tokens searched in "
        f"{len(log.splitlines())} log lines and {len(messages)} messages; found {len(found)}"
    )


# -- query syntax in keys ------------------------------------------------------------------------

HOSTILE_KEYS = (
    'x" OR s3_bucket:"*',
    'x\\" OR *:*',
    "*",
    "a:(b OR c)",
    "trailing\\",
    '") OR (s3_object_key:"x',
)


@pytest.fixture
def sloppy_service(workdir: Path, broker: tuple[str, int]) -> Iterator[RunningService]:
    yield from running(
        RunningService(workdir=workdir, broker=broker, mediahaven=FakeMediaHaven(sloppy=True))
    )


def test_query_syntax_in_a_key_cannot_widen_a_removal(sloppy_service: RunningService) -> None:
    service = sloppy_service
    mh = service.mediahaven
    exact: dict[str, str] = {}
    survivors: set[str] = set()

    def seed(fragment_id: str, key: str, bucket: str, *, keep: bool = True) -> None:
        mh.add_record(fragment_id, pid="a1b2c3d4e5", key=key, bucket=bucket)
        if keep:
            survivors.add(fragment_id)

    # What the injected syntax alone would match, were it pasted into the query.
    seed("injected-x", "x", BUCKET)
    seed("injected-any", "unrelated.MXF", BUCKET)
    seed("injected-other-bucket", "unrelated.MXF", "mam-other")
    for n, key in enumerate(HOSTILE_KEYS):
        exact[f"exact-{n}"] = key
        seed(f"exact-{n}", key, BUCKET, keep=False)
        seed(f"suffix-{n}", key + ".bak", BUCKET)
        seed(f"prefix-only-{n}", key[:-1], BUCKET)
        seed(f"other-bucket-{n}", key, "mam-other")
        seed(f"other-case-{n}", key.upper() + "X", BUCKET)
        if key.swapcase() != key:
            seed(f"swapped-case-{n}", key.swapcase(), BUCKET)

    service.start_consumer()
    for n, key in enumerate(HOSTILE_KEYS):
        service.publish_event(event_body(REMOVED, f"hostile-{n}", key=key))
    wait_settled(service, len(HOSTILE_KEYS))

    assert sorted(d.fragment_id for d in mh.deleted) == sorted(exact)
    for deletion in mh.deleted:
        key = exact[deletion.fragment_id]
        assert deletion.reason == f's3 delete-object for bucket: "{BUCKET}" and key: "{key}"'
    left = {record["Internal"]["FragmentId"] for record in mh.records}
    assert left == survivors
    # Every search asked for the exact values, quoted and escaped.
    searched = [parse_query(q) for q in mh.searches]
    assert sorted(searched) == sorted(
        [[("s3_object_key", key)], [("s3_bucket", BUCKET)]] for key in HOSTILE_KEYS
    )
    # The search engine did hand those near misses back: the service's own check kept them.
    records = MediaHavenRecords(
        session=requests.Session(),
        base_url=mh.base_url,
        client_id=mh.client_id,
        client_secret=mh.client_secret,
        username=mh.username,
        password=mh.password,
        timeout=5,
    )
    for key in HOSTILE_KEYS:
        found = list(
            records.search(Query.all_of(Term("s3_object_key", key), Term("s3_bucket", BUCKET)))
        )
        assert {r.fragment_id for r in found} & survivors, key
    print(f"\nquery syntax: {len(HOSTILE_KEYS)} hostile removals, {len(left)} near misses survive")


FIELDS = ("s3_object_key", "s3_bucket", "dc_identifier_localid", "md5", "PID")
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
values = st.one_of(
    any_text,
    st.lists(st.sampled_from(['"', "\\", "*", ":", "(", ")", " ", "+", "-", "x", "OR"])).map(
        "".join
    ),
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    groups=st.lists(
        st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )
)
def test_a_rendered_query_parses_back_to_exactly_its_values(
    groups: list[list[tuple[str, str]]],
) -> None:
    query = Query(groups=tuple(tuple(Term(f, v) for f, v in group) for group in groups))
    assert parse_query(render_query(query)) == groups


# -- FTP paths -----------------------------------------------------------------------------------

HOSTILE_CP_NAMES = (
    "..",
    ".",
    "../../trap",
    "VRT/DISK-SHARE-EVENTS/..",
    "VRT/TAPE-SHARE-EVENTS",
    "VRT\x00",
    "VRT\n",
    "\\..\\trap",
    "VRT\x7f",
)
HOSTILE_COLLATERAL_KEYS = (
    "../MEDIA-0042/x.srt",
    "./MEDIA-0042/x.srt",
    "closedOt/../x.srt",
    "closedOt/./x.srt",
    "closed\\Ot/MEDIA-0042/x.srt",
    "closedOt\x7f/MEDIA-0042/x.srt",
    "closedOt/MEDIA\x85-0042/x.srt",
    "closedOt\x1b/MEDIA-0042/x.srt",
    "/MEDIA-0042/x.srt",
    "closedOt//x.srt",
    "closedOt/MEDIA-EVIL/x.srt",  # an essence whose PID is a path
    "T" * 300 + "/MEDIA-0042/x.srt",  # a type no file name can hold
)
HOSTILE_PIDS = ("../../trap/evil", "k98z0d4w1q/../../trap")
HOSTILE_PID_HEADERS = ("../../trap/evil", "..", "k98z0d4w1q/../x", "a1b2c3d4e5\n", "A1B2C3D4E5")
TRAPS = ("DISK-SHARE-EVENTS", "TAPE-SHARE-EVENTS", "trap", "VRT/DISK-SHARE-EVENTS/trap")


@pytest.fixture
def path_service(workdir: Path, broker: tuple[str, int]) -> Iterator[RunningService]:
    labels: dict[str, str | None] = {OR_ID: "VRT"}
    labels.update({f"OR-hostil{n}": name for n, name in enumerate(HOSTILE_CP_NAMES)})
    service = RunningService(
        workdir=workdir,
        broker=broker,
        organisations=FakeOrganisationsApi(labels),
        pid_service=FakePidService(),
    )
    for trap in TRAPS:
        (service.ftp.root / trap).mkdir(parents=True)
    yield from running(service)


def test_event_values_cannot_steer_the_ftp_path(path_service: RunningService) -> None:
    service = path_service
    s = service.settings
    mh = service.mediahaven
    mh.add_record(
        "fragment-1", is_fragment=True, pid="k98z0d4w1q", local_id="MEDIA-0042",
        key=ESSENCE_KEY, bucket=BUCKET,
    )  # fmt: skip
    mh.add_record("evil-1", is_fragment=True, pid="../../trap/x", local_id="MEDIA-EVIL", key="e")
    service.pid_service.queue(*(Canned(body=[{"id": pid, "number": 1}]) for pid in HOSTILE_PIDS))
    service.start_consumer()

    bad = 0
    # An essence whose PID service answers hostile PIDs first: retried, then a good PID.
    service.publish_event(event_body(ESSENCE, "pid-stub", key="pid-stub.MXF"))
    wait_settled(service, 1)
    for n in range(len(HOSTILE_CP_NAMES)):
        service.publish_event(
            event_body(ESSENCE, f"cp-{n}", key=f"cp-{n}.MXF", tenant=f"OR-hostil{n}")
        )
        bad += 1
    for n, key in enumerate(HOSTILE_COLLATERAL_KEYS):
        service.publish_event(event_body(COLLATERAL, f"collateral-{n}", key=key))
        bad += 1
    for n, pid in enumerate(HOSTILE_PID_HEADERS):
        service.publish_event(
            event_body(ESSENCE, f"x-pid-{n}", key=f"x-pid-{n}.MXF"), headers={"x-pid": pid}
        )
    for n, key in enumerate(XML_SPECIAL_KEYS):
        service.publish_event(event_body(ESSENCE, f"xml-{n}", key=key))
    good = 1 + len(HOSTILE_PID_HEADERS) + len(XML_SPECIAL_KEYS)
    wait_settled(service, good + bad, timeout=60)

    counts = settled_counts(service.log())
    assert counts["dead-letter"] == bad, counts
    dead = amqp.get_messages(s.host, s.port, s.dead_letter_queue)
    assert len(dead) == bad
    assert {m.headers["x-error-stage"] for m in dead} <= {"parse", "organisations", "ledger",
                                                          "essence-lookup"}  # fmt: skip
    assert mh.relations == []  # no hostile collateral got as far as linking its essence
    refusals = [e for e in service.log_entries() if "PID service gave no valid PID" in e["message"]]
    assert len(refusals) == len(HOSTILE_PIDS)

    transfers = amqp.get_messages(s.host, s.port, s.transfer_queue)
    assert len(transfers) == good
    names = {m.properties.message_id for m in transfers}
    assert all(re.fullmatch(r"[a-z0-9]{10}", name) for name in names), names
    assert not names & {*HOSTILE_PIDS, *HOSTILE_PID_HEADERS}

    # Nothing on the transport server but the sidecars of the good events, where they belong.
    root = service.ftp.root
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())
    expected = sorted(f"VRT/TAPE-SHARE-EVENTS/{name}.xml" for name in names)
    assert files == expected
    for path in files:
        folder, _, name = path.rpartition("/")
        assert folder in EXPECTED_FOLDERS and SIDECAR_NAME.fullmatch(name)
    for trap in TRAPS:
        assert not any((root / trap).iterdir()), trap
    assert {p.name for p in service.workdir.iterdir()} <= {
        "ftp", "consumer.log", "ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm",
    }  # fmt: skip

    # The XML-special keys came back whole from their sidecars.
    keys_back: set[str | None] = set()
    for message in transfers:
        data = (
            root / "VRT/TAPE-SHARE-EVENTS" / f"{message.properties.message_id}.xml"
        ).read_bytes()
        in_key, in_filename = sidecar_fields(data)
        assert in_key == in_filename == message.json()["source"]["object"]["key"]
        keys_back.add(in_key)
    assert set(XML_SPECIAL_KEYS) <= keys_back
    print(f"\nFTP paths: {bad} hostile events dead-lettered, {good} sidecars, all in place")


def ends_a_transfer(extension: str) -> bool:
    """Whether `{name}{extension}` is a file of its own beside the sidecar (contract §3.4)."""
    return (
        extension.lower() != ".xml"
        and len(extension.encode()) <= 32
        and not NOT_IN_A_FILE_NAME.search(extension)
    )


# -- XML in keys ---------------------------------------------------------------------------------

keys = st.one_of(
    st.sampled_from(XML_SPECIAL_KEYS),
    st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=60),
    st.lists(
        st.sampled_from(["<", ">", "&", '"', "'", "]]>", "<!--", "&#0;", "\U0001f600", "\u0301",
                         "\u65e5", "\r", "\x00", "\ud800", "\ufffe", "\x85"]),
        min_size=1,
    ).map("".join),
)  # fmt: skip


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(key=keys)
def test_any_key_xml_can_carry_round_trips_through_the_sidecar(key: str) -> None:
    world = World()
    handler = MessageHandler(ingest=world.ingest, remove=world.remove, retries=RetrySchedule())
    outcome = handler.handle(Delivery(body=event_body(ESSENCE, "xml", key=key)))
    event(f"outcome: {type(outcome).__name__}")
    if not all(XML_CHAR.fullmatch(char) for char in key):
        assert isinstance(outcome, DeadLetter), outcome
        assert outcome.stage == "parse" and "object key" in outcome.reason
        assert world.transport.uploaded == {}
        return
    if not ends_a_transfer(posixpath.splitext(key)[1]):
        assert isinstance(outcome, DeadLetter), outcome
        assert outcome.stage == "parse" and "the object's extension" in outcome.reason
        assert world.transport.uploaded == {}
        return
    assert isinstance(outcome, Done), outcome
    [data] = world.transport.uploaded.values()
    assert sidecar_fields(data) == (key, key)
