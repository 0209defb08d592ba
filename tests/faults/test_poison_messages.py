"""Poison messages: whatever arrives ends as exactly one outcome, and the consumer lives on.

Two levels:

- the application layer (`MessageHandler` over the in-memory world of the unit
  tests) takes well over a thousand generated bodies: random bytes, JSON of every
  wrong shape, and S3 events derived from the golden ones with fields mutated,
  missing, huge or holding hostile text, under hostile headers. Each must give one
  `Done`, `Split`, `Retry` or `DeadLetter`, never an exception; the outcome must be
  something the broker can carry (one-line `x-error`, AMQP-encodable headers and
  correlation id); and with every outside system healthy, bad input is never
  retried, except the documented transient case of a collateral whose essence is
  not archived yet.
- a smaller sample, drawn with a fixed seed, goes through the real broker into the
  consumer process: every message ends acked as done, dead-lettered, or retried
  until it is one of those; nothing stays unacked; the process survives and still
  handles a good event last.
"""

from __future__ import annotations

import copy
import json
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from s3_events_handler.adapters.rabbitmq.headers import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    PID_HEADER,
    STAGE_HEADER,
    delivery_of,
    headers_for,
)
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import DeadLetter, Done, Outcome, Retry, Split
from s3_events_handler.application.reasons import MAX_REASON_LENGTH
from s3_events_handler.application.retries import RetrySchedule
from tests.conftest import EXAMPLES
from tests.e2e.service import RunningService
from tests.support import amqp
from tests.unit.builders import World, essence_record

GOLDEN_NAMES = (
    "event-essence-created.json",
    "event-essence-created-no-md5.json",
    "event-collateral-created.json",
    "event-removed.json",
)
GOLDEN: dict[str, dict[str, Any]] = {
    name: json.loads((EXAMPLES / name).read_text()) for name in GOLDEN_NAMES
}
ESSENCE_KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
MD5_KEYS = ("x-amz-meta-md5sum", "md5sum", "x-md5sum-meta")
POLICY = RetrySchedule()
# The only transient failure a healthy world may give bad input (contract §6).
DOCUMENTED_TRANSIENT = "EssenceNotArchivedYet:"

HOSTILE_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31m",
    "\x7f\x85\x9f",
    "\t\n\r",
    "line\nbreak",
    "\u2028\u2029",
    "\ud800",
    "lone \udfff surrogate",
    "\ufffe\uffff",
    "\u202eevil\u202c.exe",
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "\U0001f600\U0001f4a9\U0001f1e7\U0001f1ea",
    "\u65e5\u672c\u8a9e",
    "e\u0301\u0327\u20dd",
    "\u200b\ufeff",
    "<x a='1'>&amp;</x>",
    "]]>",
    "\"'",
    "\\",
    '"',
    'x" OR s3_bucket:"*',
    "*",
    "key:(a OR b)",
    "../../etc/passwd",
    "..",
    ".",
    "a/b",
    "/abs",
    "a\\b",
    "%2e%2e%2f",
    "CON",
    "OR-rf5kf25",
    "ObjectCreated:Put",
)
WRONG_TYPES: tuple[Any, ...] = (
    None,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    True,
    [],
    {},
    ["x"],
    {"a": 1},
)
BAD_OR_IDS = (
    "OR-rf5kf2",
    "OR-rf5kf255",
    "ORrf5kf25",
    "OR--rf5kf25",
    "-rf5kf25x",
    "OR-rf5/f25",
    "OR-rf5\\f25",
    "OR-rf5\x00f25",
    "OR-rf5\nf25",
    "OR-\ud800bcdefg",
    "OR-\U0001f600bcdef",
    "OR-rf5kf25-x",
    "or-zzzzzzz",
)
BAD_MD5S: tuple[Any, ...] = (
    "",
    "0cc175b9c0f1b6a831c399e26977266",
    "0cc175b9c0f1b6a831c399e2697726611",
    "0cc175b9c0f1b6a831c399e26977266g",
    "0CC175B9C0F1B6A831C399E269772661",
    "0cc175b9c0f1b6a831c399e26977266\x00",
    "0cc175b9c0f1b6a831c399e269772661\n",
    " 0cc175b9c0f1b6a831c399e269772661",
    "rbyRpD6YijtbdFuFKakLYQ==",
    "\ud800" * 32,
    None,
    123,
    ["0cc175b9c0f1b6a831c399e269772661"],
)
EVENT_NAMES = (
    "ObjectCreated",
    "ObjectCreated:",
    "objectcreated:Put",
    "ObjectRemoved:DeleteMarkerCreated",
    "ObjectRestore:Post",
    "s3:ObjectCreated:Put",
    " ObjectCreated:Put",
    "ObjectCreated:\x00",
    "ObjectRemoved:\ud800",
)
# Values an AMQP header can arrive with (pika decodes floats and decimals too).
ATTEMPTS: tuple[Any, ...] = (
    1, 2, 0, -5, 7, 8, 100, 2**40, "3", "x", b"2", None, True, 1.5,
    float("inf"), float("-inf"), float("nan"), [1], {"a": 1},
)  # fmt: skip
PIDS: tuple[Any, ...] = (
    "a1b2c3d4e5", "A1B2C3D4E5", "../../etc", "a1b2c3d4e/", "a1b2c3d4e5\x00",
    "", b"a1b2c3d4e5", b"\xff\xfe", 42, None,
)  # fmt: skip


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


RECORD_PATHS = sorted({path for m in GOLDEN.values() for path in _paths(m["Records"][0])})


def put(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set `path` to `value`, making missing objects; a non-object on the way stops it."""
    node: Any = record
    for step in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(step, {})
    if isinstance(node, dict):
        node[path[-1]] = value


def remove(record: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = record
    for step in path[:-1]:
        node = node.get(step) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def serialise(message: Any, how: str) -> bytes:
    if how == "utf-8":
        return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "utf-16":
        return json.dumps(message, ensure_ascii=False).encode("utf-16", "surrogatepass")
    return json.dumps(message).encode()


def world_for(archived_essence: bool) -> World:
    """The healthy in-memory world, with (or without) the golden essence archived."""
    records = []
    if archived_essence:
        records = [
            essence_record("essence-1", key=ESSENCE_KEY),
            essence_record("fragment-1", key=ESSENCE_KEY, local_id="MEDIA-0042", is_fragment=True),
        ]
    return World(records=records)


def handler_for(world: World) -> MessageHandler:
    return MessageHandler(ingest=world.ingest, remove=world.remove, retries=POLICY)


def amqp_encodable(**properties: Any) -> None:
    """Raises when pika could not put these properties on the wire."""
    pika.BasicProperties(**properties).encode()


def one_outcome(
    world: World,
    body: bytes,
    headers: dict[str, Any],
    correlation_id: str | None = None,
    *,
    records: int | None = None,
) -> Outcome:
    """Handle the message and check the outcome is one the broker can carry out.

    `records` is the number of records the body holds, when the test knows it.
    """
    handler = handler_for(world)
    properties = pika.BasicProperties(headers=headers, correlation_id=correlation_id)
    try:
        outcome = handler.handle(delivery_of(body, properties))
    except BaseException as error:  # pragma: no cover - what this test exists to catch
        pytest.fail(f"handle() raised {type(error).__name__}: {error!r}")
    assert isinstance(outcome, Done | Split | Retry | DeadLetter), outcome
    event(f"outcome: {type(outcome).__name__}")
    # The headers the outcome writes; the rest are the delivery's, as the broker gave them.
    written = (ERROR_HEADER, STAGE_HEADER) if isinstance(outcome, DeadLetter) else (ATTEMPT_HEADER,)
    copied = headers_for(outcome, headers) if isinstance(outcome, DeadLetter | Retry) else {}
    touched = {name: copied[name] for name in (*written, PID_HEADER) if name in copied}
    if isinstance(outcome, DeadLetter):
        assert outcome.reason, outcome
        assert len(outcome.reason.splitlines()) == 1, outcome.reason
        assert len(outcome.reason) <= MAX_REASON_LENGTH
        assert copied[ERROR_HEADER] == outcome.reason
        assert copied[STAGE_HEADER] == outcome.stage
        event(f"dead-letter stage: {outcome.stage}")
        amqp_encodable(headers=touched, correlation_id=outcome.correlation_id)
    elif isinstance(outcome, Retry):
        assert outcome.reason.startswith(DOCUMENTED_TRANSIENT), outcome.reason
        assert len(outcome.reason.splitlines()) == 1, outcome.reason
        assert isinstance(copied[ATTEMPT_HEADER], int)
        assert 2 <= copied[ATTEMPT_HEADER] <= POLICY.max_attempts
        amqp_encodable(headers=touched, correlation_id=outcome.correlation_id)
    elif isinstance(outcome, Split):
        assert records is None or records > 1, outcome
        assert records is None or len(outcome.bodies) == records
        for body in outcome.bodies:
            message = json.loads(body)
            assert set(message) == {"Records"} and len(message["Records"]) == 1
    else:
        assert records is None or records == 1
        amqp_encodable(correlation_id=outcome.correlation_id)
        for request in world.transfers.published:
            amqp_encodable(correlation_id=request.correlation_id, message_id=request.message_id)
        for sidecar in world.transport.uploaded.values():
            etree.fromstring(sidecar)  # well-formed
    return outcome


def split_and_handle(
    world_maker: Callable[[], World], body: bytes, headers: dict[str, Any], records: int
) -> None:
    """A split's bodies come back as messages of their own: each ends in one outcome, unsplit."""
    outcome = one_outcome(world_maker(), body, headers, records=records)
    if isinstance(outcome, Split):
        for again in outcome.bodies:
            assert not isinstance(one_outcome(world_maker(), again, headers, records=1), Split)


# -- strategies ---------------------------------------------------------------------------------

any_char = st.characters(exclude_categories=())  # surrogates included
texts = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(alphabet=any_char, max_size=30),
    st.text(max_size=30),
)
huge = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["k", "\u00e9", "\U0001f600", '"', "/", "\\", "<&>"]),
    st.sampled_from([256, 5_000, 100_000, 1_000_000]),
)
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), texts, st.sampled_from(WRONG_TYPES)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
segments = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(alphabet=any_char, max_size=8))
keys = st.one_of(
    texts,
    huge,
    st.builds(lambda a, b, c: f"{a}/{b}/{c}", segments, segments, segments),
    st.builds(lambda a, b: f"closedOt/{a}/{b}", segments, segments),
    st.builds(lambda a: f"closedOt/MEDIA-0042/{a}", texts),
    st.builds(lambda a: f"{a}/MEDIA-0042/x.srt", st.one_of(segments, huge)),
    st.builds(lambda a: f"{ESSENCE_KEY}{a}", texts),
)
mutations = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(RECORD_PATHS), st.one_of(texts, json_values, huge)),
    st.tuples(st.just("delete"), st.sampled_from(RECORD_PATHS), st.none()),
    st.tuples(
        st.just("set"),
        st.just(("eventName",)),
        st.one_of(st.sampled_from(EVENT_NAMES), texts, texts.map("ObjectCreated:".__add__)),
    ),
    st.tuples(
        st.just("set"),
        st.just(("s3", "bucket", "metadata", "tenant")),
        st.one_of(st.sampled_from(BAD_OR_IDS), texts, texts.map("OR-".__add__)),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from([("s3", "object", "metadata", key) for key in MD5_KEYS]),
        st.one_of(st.sampled_from(BAD_MD5S), texts),
    ),
    st.tuples(st.just("set"), st.just(("s3", "object", "key")), keys),
    st.tuples(
        st.just("set"),
        st.just(("s3", "bucket", "name")),
        st.one_of(st.sampled_from(["mam-collaterals", "MAM-COLLATERALS"]), texts),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(
            [
                ("responseElements", "x-viaa-request-id"),
                ("s3", "object", "eTag"),
                ("eventTime",),
            ]
        ),
        st.one_of(texts, huge, json_values),
    ),
)


@st.composite
def derived_records(draw: st.DrawFn) -> dict[str, Any]:
    """A golden record with one to four mutations."""
    record: dict[str, Any] = copy.deepcopy(
        GOLDEN[draw(st.sampled_from(GOLDEN_NAMES))]["Records"][0]
    )
    for kind, path, value in draw(st.lists(mutations, min_size=1, max_size=4)):
        if kind == "set":
            put(record, path, value)
        else:
            remove(record, path)
    return record


headers = st.fixed_dictionaries(
    {},
    optional={
        ATTEMPT_HEADER: st.sampled_from(ATTEMPTS),
        PID_HEADER: st.sampled_from(PIDS),
        "origin": st.text(max_size=20),
    },
)
correlation_ids = st.one_of(st.none(), st.text(max_size=40))
encodings = st.sampled_from(["ascii", "utf-8", "utf-16"])

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# -- the application layer ------------------------------------------------------------------------


@settings(SETTINGS, max_examples=300)
@given(body=st.binary(max_size=2048), meta=headers)
def test_random_bytes_end_in_one_outcome(body: bytes, meta: dict[str, Any]) -> None:
    outcome = one_outcome(World(), body, meta)
    assert isinstance(outcome, DeadLetter)  # random bytes are never a valid S3 event
    assert outcome.stage == "parse"


NOT_RECORDS = st.one_of(
    # not an object at all
    json_values.filter(lambda value: not isinstance(value, dict)),
    # an object without Records
    st.dictionaries(texts.filter(lambda key: key != "Records"), json_values, max_size=4),
    # Records not a list, or empty
    st.builds(
        lambda value: {"Records": value},
        json_values.filter(lambda value: not isinstance(value, list) or not value),
    ),
    # records that are not objects
    st.builds(
        lambda values: {"Records": values},
        st.lists(json_values.filter(lambda value: not isinstance(value, dict)), min_size=1),
    ),
    # one record of the wrong shape all through
    st.builds(lambda record: {"Records": [record]}, st.dictionaries(texts, json_values)),
    # the right outline with wrong types nested inside
    st.builds(
        lambda s3, who: {
            "Records": [{"eventName": "ObjectCreated:Put", "s3": s3, "userIdentity": who}]
        },
        st.one_of(json_values, st.fixed_dictionaries({"object": json_values})),
        json_values,
    ),
)
RAW_BODIES = st.one_of(
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(min_value=1, max_value=20_000).map(lambda n: b'{"Records": [' + b"9" * n + b"]}"),
    st.sampled_from(
        [
            b"",
            b" ",
            b"\xef\xbb\xbf{}",
            b'{"Records": [NaN, Infinity]}',
            b'{"Records": [{}]',
            b'{"Records": "\\ud800"}',
            b'{"Records": [{"eventName": "ObjectCreated:Put"}], "Records": 5}',
            b"\x00" * 10,
            b"\xff\xfe\x00\x00",
        ]
    ),
)


@settings(SETTINGS, max_examples=400)
@given(
    message=st.one_of(
        st.tuples(NOT_RECORDS, encodings).map(lambda pair: serialise(*pair)), RAW_BODIES
    ),
    meta=headers,
    correlation_id=correlation_ids,
)
def test_json_of_every_wrong_shape_is_dead_lettered_at_parse(
    message: bytes, meta: dict[str, Any], correlation_id: str | None
) -> None:
    outcome = one_outcome(World(), message, meta, correlation_id)
    if isinstance(outcome, Split):
        return  # several wrong records: each is judged on its own (the next test)
    assert isinstance(outcome, DeadLetter), outcome
    assert outcome.stage == "parse"


@settings(SETTINGS, max_examples=1000)
@given(
    record=derived_records(),
    how=encodings,
    meta=headers,
    correlation_id=correlation_ids,
    archived=st.booleans(),
)
def test_events_derived_from_the_golden_ones_end_in_one_outcome(
    record: dict[str, Any],
    how: str,
    meta: dict[str, Any],
    correlation_id: str | None,
    archived: bool,
) -> None:
    body = serialise({"Records": [record]}, how)
    one_outcome(world_for(archived), body, meta, correlation_id, records=1)


@settings(SETTINGS, max_examples=300)
@given(
    records=st.lists(
        st.one_of(derived_records(), json_values, st.sampled_from(list(GOLDEN.values())).map(
            lambda message: message["Records"][0]
        )),
        min_size=2,
        max_size=5,
    ),
    how=encodings,
    meta=headers,
    archived=st.booleans(),
)  # fmt: skip
def test_several_records_are_split_and_each_ends_in_one_outcome(
    records: list[Any], how: str, meta: dict[str, Any], archived: bool
) -> None:
    body = serialise({"Records": records}, how)
    split_and_handle(lambda: world_for(archived), body, meta, len(records))


# -- through the broker and the consumer process ------------------------------------------------

SEED = 20261125
SAMPLE_SIZE = 40
SETTLED = re.compile(r"^(done|split|retry|dead-letter): message \d+ .*-> (?:(\d+) x )?")


def sample_bodies(rng: random.Random) -> list[tuple[bytes, dict[str, Any]]]:
    """Poison drawn with a fixed seed, plus the cases that once looped the consumer."""

    def derived() -> dict[str, Any]:
        record: dict[str, Any] = copy.deepcopy(GOLDEN[rng.choice(GOLDEN_NAMES)]["Records"][0])
        record["responseElements"]["x-viaa-request-id"] = f"poison-{rng.getrandbits(48):x}"
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(RECORD_PATHS)
            roll = rng.random()
            if roll < 0.2:
                remove(record, path)
            elif roll < 0.4:
                put(record, path, rng.choice(WRONG_TYPES))
            elif roll < 0.6:
                put(record, ("s3", "object", "key"), rng.choice(HOSTILE_TEXT) + rng.choice("/.x"))
            elif roll < 0.7:
                put(record, ("s3", "bucket", "metadata", "tenant"), rng.choice(BAD_OR_IDS))
            elif roll < 0.8:
                put(record, ("s3", "object", "metadata", "md5sum"), rng.choice(BAD_MD5S))
            elif roll < 0.9:
                put(record, ("eventName",), rng.choice(EVENT_NAMES))
            else:
                put(record, path, rng.choice(HOSTILE_TEXT))
        return record

    shapes: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(0, 300)),
        lambda: json.dumps(rng.choice([None, 5, "x", [], [1], {}, {"Records": 3}])).encode(),
        lambda: json.dumps({"Records": [rng.choice(WRONG_TYPES)]}).encode(),
        lambda: serialise({"Records": [derived()]}, rng.choice(["ascii", "utf-8", "utf-16"])),
        lambda: serialise({"Records": [derived()]}, "ascii"),
        lambda: json.dumps({"Records": [derived() for _ in range(rng.randint(2, 3))]}).encode(),
    ]
    bodies: list[tuple[bytes, dict[str, Any]]] = []
    for _ in range(SAMPLE_SIZE):
        meta: dict[str, Any] = {}
        if rng.random() < 0.3:
            meta[PID_HEADER] = rng.choice([p for p in PIDS if isinstance(p, str)])
        if rng.random() < 0.3:
            meta[ATTEMPT_HEADER] = rng.choice([1, 2, 0, -5, 100, "x", True])
        bodies.append((rng.choice(shapes)(), meta))
    # Each of these once kept the consumer reconnecting and redelivering forever.
    essence = GOLDEN["event-essence-created.json"]["Records"][0]
    for tenant, request_id in (
        ("OR-\ud800bcdefg", "poison-surrogate-tenant"),
        ("OR-rf5kf25", "r" * 300),
        ("OR-rf5kf25", "\ud800"),
    ):
        record = copy.deepcopy(essence)
        record["s3"]["bucket"]["metadata"]["tenant"] = tenant
        record["responseElements"]["x-viaa-request-id"] = request_id
        record["s3"]["object"]["key"] = f"poison-{len(bodies)}.MXF"
        bodies.append((json.dumps({"Records": [record]}).encode(), {}))
    bodies.append((b"[" * 100_000 + b"]" * 100_000, {}))
    return bodies


def settled_counts(log: str) -> Counter[str]:
    """How many messages the consumer settled, by kind, and how many a split made."""
    counts: Counter[str] = Counter()
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            not isinstance(entry, dict)
            or entry.get("logger") != "s3_events_handler.adapters.rabbitmq.consumer"
        ):
            continue
        match = SETTLED.match(str(entry.get("message", "")))
        if match:
            counts[match.group(1)] += 1
            if match.group(2):
                counts["split children"] += int(match.group(2))
    return counts


def test_a_seeded_sample_of_poison_through_the_broker_leaves_the_consumer_working(
    service: RunningService,
) -> None:
    s = service.settings
    bodies = sample_bodies(random.Random(SEED))
    service.start_consumer()
    for body, meta in bodies:
        service.publish_event(body, headers=meta, delivery_mode=2)

    def settled(counts: Counter[str]) -> int:
        return counts["done"] + counts["split"] + counts["dead-letter"]

    def all_settled() -> bool:
        counts = settled_counts(service.log())
        return settled(counts) >= len(bodies) + counts["split children"]

    assert amqp.wait_until(all_settled, timeout=90), (
        f"{settled_counts(service.log())}\n{service.log()}"
    )
    counts = settled_counts(service.log())
    # Every message published, or split off, ended exactly once as done or dead-lettered;
    # the retried ones came back and ended so too.
    assert settled(counts) == len(bodies) + counts["split children"], counts
    dead = amqp.get_messages(s.host, s.port, s.dead_letter_queue)
    assert len(dead) == counts["dead-letter"]
    for message in dead:
        reason = message.headers["x-error"]
        assert isinstance(reason, str) and len(reason.splitlines()) == 1
        assert message.headers["x-error-stage"]
        if reason.startswith("gave up after"):  # retried: only ever for the documented cause
            assert DOCUMENTED_TRANSIENT in reason, reason
    assert counts["dead-letter"] > 0 and counts["done"] > 0 and counts["split"] > 0
    print(f"\npoison through the broker: {len(bodies)} published, {dict(counts)}")

    # Still alive, and still doing its job.
    good = copy.deepcopy(GOLDEN["event-essence-created.json"])
    good["Records"][0]["responseElements"]["x-viaa-request-id"] = "after-the-poison"
    good["Records"][0]["s3"]["object"]["key"] = "after-the-poison.MXF"
    amqp.get_messages(s.host, s.port, s.transfer_queue)
    service.publish_event(json.dumps(good).encode())
    [request] = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, 1, timeout=20)
    assert request.json()["source"]["object"]["key"] == "after-the-poison.MXF"
    assert service.process is not None and service.process.poll() is None
    # Its ack follows the transfer request's confirm: wait for it, or the kill below
    # catches the event between the two and the broker rightly gives it back.
    assert amqp.wait_until(lambda: "(correlation id after-the-poison)" in service.log())

    # Nothing left unacked: killed outright, the consumer gives every unacked message back.
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(timeout=10)
    assert amqp.wait_until(
        lambda: amqp.consumer_count(s.host, s.port, s.incoming_queue) == 0, timeout=10
    )
    for queue in (s.incoming_queue, *(s.retry_queue(d) for d in s.retries.delays)):
        assert amqp.message_count(s.host, s.port, queue) == 0, queue


# -- a dead-letter queue that refuses the publish ------------------------------------------------


@contextmanager
def refusing_every_publish(queue: str) -> Iterator[None]:
    """An operator's policy on `queue` alone: no room (`max-length` 0) and `reject-publish`, so
    the broker nacks every message published to it. Removed afterwards."""
    name = f"{queue}-refuses"
    pattern = "^" + re.escape(queue) + "$"
    definition = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    amqp.rabbitmqctl(
        "set_policy", "--apply-to", "queues", "--priority", "100", name, pattern, definition
    )
    try:
        yield
    finally:
        amqp.rabbitmqctl("clear_policy", name)


def test_a_dead_letter_queue_that_refuses_the_publish_costs_no_reconnect_and_loses_nothing(
    service: RunningService,
) -> None:
    """A body that is not JSON, to be dead-lettered, and good events behind it, while the
    dead-letter queue refuses every publish. The good events are done on the consumer's one
    connection; the bad one goes round the retry queues, a backoff each time, and lands in
    the dead letters once the queue takes messages again."""
    s = service.settings
    bad = b"this is not an S3 event"
    good = []
    for n in range(6):
        message = copy.deepcopy(GOLDEN["event-essence-created.json"])
        message["Records"][0]["s3"]["object"]["key"] = f"behind-the-refused-{n}.MXF"
        message["Records"][0]["responseElements"]["x-viaa-request-id"] = f"behind-{n}"
        good.append(json.dumps(message).encode())

    with refusing_every_publish(s.dead_letter_queue):
        service.start_consumer(CONCURRENCY="4")  # the bad one in hand with three good ones
        began = time.monotonic()
        service.publish_event(bad, delivery_mode=2)
        for body in good:
            service.publish_event(body, delivery_mode=2)

        transfers = amqp.wait_for_messages(s.host, s.port, s.transfer_queue, len(good), timeout=30)
        assert len(transfers) == len(good), service.log()
        refused = "its dead letter was not carried out"
        assert amqp.wait_until(lambda: refused in service.log(), timeout=10), service.log()
        # Back from the retry queue of its attempt (1 s, then 2 s), never straight back.
        time.sleep(max(0.0, began + 4 - time.monotonic()))
        refusals, refused_for = service.log().count(refused), time.monotonic() - began
        assert 2 <= refusals <= refused_for + 1, service.log()
        assert service.log().count("connected to the broker at ") == 1, service.log()
        assert "reconnecting" not in service.log()

    allowed = time.monotonic()
    [dead] = amqp.wait_for_messages(s.host, s.port, s.dead_letter_queue, 1, timeout=15)
    landed_after = time.monotonic() - allowed
    assert dead.body == bad, service.log()
    assert "not JSON" in dead.headers["x-error"]
    assert dead.headers["x-attempt"] >= 2
    assert service.log().count("connected to the broker at ") == 1, service.log()
    assert service.process is not None and service.process.poll() is None
    assert service.stop_consumer() == 0
    for queue in (s.incoming_queue, *(s.retry_queue(d) for d in s.retries.delays)):
        assert amqp.message_count(s.host, s.port, queue) == 0, queue
    print(
        f"\ndead-letter queue refusing every publish: {len(good)} good events done, the bad "
        f"one refused {refusals}x in {refused_for:.1f} s, each time to a retry queue; in the "
        f"dead letters {landed_after:.1f} s after the policy went; 1 connection"
    )
