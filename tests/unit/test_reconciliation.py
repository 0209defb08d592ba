"""Reconcile (contract §8) on the in-memory fakes: each object's state, what is enqueued, the
events it makes, and how wide and how fast it goes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from s3_events_handler.adapters.memory import InMemoryArchiveRecords, InMemoryLedger
from s3_events_handler.adapters.memory_bucket import InMemoryBucket, InMemoryIncomingEvents
from s3_events_handler.application.reconciling import RateLimit, ReconcileBucket
from s3_events_handler.domain.bucket import ObjectState, Reconciled, StoredObject
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.events import parse_record
from s3_events_handler.domain.model import Record, S3Event, Step

BUCKET = "mam-highresvideo"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=2)
MD5 = "0cc175b9c0f1b6a831c399e269772661"


def archived(key: str, bucket: str = BUCKET, n: int = 0) -> Record:
    return Record(
        fragment_id=f"f-{key}-{n}", is_fragment=False, s3_object_key=key, s3_bucket=bucket
    )


def sent(ledger: InMemoryLedger, event: S3Event) -> None:
    """The ledger as the consumer leaves it once the event's transfer request went out."""
    ledger.claim(event.identity)
    ledger.release(event.identity, Step.TRANSFER_REQUESTED)


def created(key: str, request_id: str = "gateway-request-1", bucket: str = BUCKET) -> S3Event:
    return parse_record(
        {
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "someone"},
            "responseElements": {"x-viaa-request-id": request_id},
            "s3": {
                "domain": {"name": "s3"},
                "bucket": {"name": bucket, "metadata": {"tenant": "OR-rf5kf25"}},
                "object": {"key": key},
            },
        }
    )


class Setup:
    def __init__(self, *records: Record) -> None:
        self.bucket = InMemoryBucket(page_size=2)
        self.records = InMemoryArchiveRecords(records)
        self.ledger = InMemoryLedger()
        self.events = InMemoryIncomingEvents()
        self.use_case = ReconcileBucket(
            objects=self.bucket,
            records=self.records,
            ledger=self.ledger,
            clock=lambda: NOW,
            events=self.events,
        )

    def run(self, tenant: str | None = None, **options: object) -> list[Reconciled]:
        options.setdefault("older_than", timedelta(hours=1))
        return list(self.use_case.execute(BUCKET, tenant=tenant, **options))  # type: ignore[arg-type]


def states(results: list[Reconciled]) -> dict[str, str]:
    return {result.object.key: result.state.value for result in results}


def test_each_object_is_archived_in_flight_or_missing() -> None:
    setup = Setup(archived("a.mxf"))
    for key in ("a.mxf", "b.mxf", "c.mxf"):
        setup.bucket.add(BUCKET, key, last_modified=LONG_AGO)
    sent(setup.ledger, created("b.mxf"))

    results = setup.run()

    assert states(results) == {"a.mxf": "archived", "b.mxf": "in flight", "c.mxf": "missing"}
    assert setup.events.published == []  # nothing enqueued without a tenant


def test_only_an_exact_record_of_this_bucket_and_key_counts_as_archived() -> None:
    setup = Setup(
        archived("clip.mxf.bak"),  # a search engine's near miss
        archived("clip.mxf", bucket="another-bucket"),
    )
    setup.records._matches = lambda record, query: True  # returns every record
    setup.bucket.add(BUCKET, "clip.mxf", last_modified=LONG_AGO)

    assert states(setup.run()) == {"clip.mxf": "missing"}
    [query] = setup.records.searches
    assert [[(t.field, t.value) for t in group] for group in query.groups] == [
        [("s3_bucket", BUCKET)],
        [("s3_object_key", "clip.mxf")],
    ]


def test_an_event_taken_in_but_not_sent_yet_or_a_removal_is_not_in_flight() -> None:
    setup = Setup()
    setup.bucket.add(BUCKET, "a.mxf", last_modified=LONG_AGO)
    setup.bucket.add(BUCKET, "b.mxf", last_modified=LONG_AGO)
    setup.ledger.claim(created("a.mxf").identity)  # claimed, nothing sent
    removal = created("b.mxf").identity.replace('["created"', '["removed"')
    setup.ledger.release(removal, Step.REMOVED)

    assert states(setup.run()) == {"a.mxf": "missing", "b.mxf": "missing"}


def test_the_ledger_tells_an_object_from_one_whose_key_it_begins() -> None:
    setup = Setup()
    setup.bucket.add(BUCKET, "a", last_modified=LONG_AGO)
    sent(setup.ledger, created('a",'))  # its identity begins with the JSON of key `a`… almost

    assert states(setup.run()) == {"a": "missing"}


def test_objects_modified_within_older_than_are_left_out() -> None:
    setup = Setup()
    setup.bucket.add(BUCKET, "old.mxf", last_modified=NOW - timedelta(hours=2))
    setup.bucket.add(BUCKET, "new.mxf", last_modified=NOW - timedelta(minutes=30))

    assert states(setup.run(older_than=timedelta(hours=1))) == {"old.mxf": "missing"}
    assert len(setup.run(older_than=timedelta(0))) == 2


def test_a_prefix_narrows_the_listing() -> None:
    setup = Setup()
    for key in ("2024/a.mxf", "2025/b.mxf", "2025/c.mxf"):
        setup.bucket.add(BUCKET, key, last_modified=LONG_AGO)

    assert list(states(setup.run(prefix="2025/"))) == ["2025/b.mxf", "2025/c.mxf"]


def test_a_missing_object_is_enqueued_as_a_created_event_with_its_metadata(
    examples: Path,
) -> None:
    setup = Setup(archived("a.mxf"))
    setup.bucket.add(BUCKET, "a.mxf", last_modified=LONG_AGO)
    setup.bucket.add(
        BUCKET, "b.mxf", last_modified=LONG_AGO, size=73400320, etag='"4f1c2e9a"',
        metadata={"md5sum": MD5, "Type": "application/mxf"},
    )  # fmt: skip

    results = setup.run(tenant="or-rf5kf25")

    assert [(r.object.key, r.state.value, r.enqueued) for r in results] == [
        ("a.mxf", "archived", False),
        ("b.mxf", "missing", True),
    ]
    assert setup.bucket.heads == ["b.mxf"]  # only a missing object is looked at
    [event] = setup.events.published
    assert event.request_id == "reconcile-4f1c2e9a"
    [record] = json.loads(json.dumps(event.notification()))["Records"]
    golden = json.loads((examples / "event-essence-created.json").read_text())["Records"][0]
    assert set(record) <= set(golden)  # the gateway's shape, nothing of its own
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventSource"] == "viaa:s3:reconcile"
    assert record["eventTime"] == "2026-12-07T12:00:00.000Z"
    assert record["userIdentity"] == {"principalId": "reconcile"}
    assert record["responseElements"] == {"x-viaa-request-id": "reconcile-4f1c2e9a"}
    assert record["s3"] == {
        "domain": {"name": "s3"},
        "bucket": {"name": BUCKET, "metadata": {"tenant": "or-rf5kf25"}},
        "object": {
            "key": "b.mxf",
            "size": 73400320,
            "eTag": "4f1c2e9a",
            "metadata": {"md5sum": MD5, "Type": "application/mxf"},
        },
    }
    parsed = parse_record(record)  # the consumer takes it as any other event
    assert (parsed.or_id, parsed.object.md5, parsed.object.owner) == (
        "OR-rf5kf25",
        MD5,
        "reconcile",
    )


def test_the_same_object_enqueued_twice_is_one_event_for_the_ledger() -> None:
    setup = Setup()
    setup.bucket.add(BUCKET, "b.mxf", last_modified=LONG_AGO, etag='"e1"')

    setup.run(tenant="OR-rf5kf25")
    setup.run(tenant="OR-rf5kf25")

    first, second = (parse_record(e.notification()["Records"][0]) for e in setup.events.published)
    assert first.identity == second.identity


def test_an_object_enqueued_and_sent_by_the_consumer_is_in_flight_the_next_time() -> None:
    setup = Setup()
    setup.bucket.add(BUCKET, "b.mxf", last_modified=LONG_AGO, etag='"e1"')
    setup.run(tenant="OR-rf5kf25")
    [event] = setup.events.published
    sent(setup.ledger, parse_record(event.notification()["Records"][0]))

    results = setup.run(tenant="OR-rf5kf25")

    assert states(results) == {"b.mxf": "in flight"}
    assert len(setup.events.published) == 1  # nothing new sent through


def test_the_listing_is_read_as_it_goes_not_whole() -> None:
    setup = Setup()
    for n in range(10):
        setup.bucket.add(BUCKET, f"{n:02}.mxf", last_modified=LONG_AGO)

    results = setup.use_case.execute(BUCKET, older_than=timedelta(0))
    next(results)

    assert setup.bucket.pages_read == 1  # of five


def test_concurrently_results_come_in_listing_order_and_missing_ones_are_enqueued() -> None:
    setup = Setup(*(archived(f"{n:03}.mxf") for n in range(0, 60, 3)))
    for n in range(60):
        setup.bucket.add(BUCKET, f"{n:03}.mxf", last_modified=LONG_AGO)
    results = list(
        setup.use_case.execute(
            BUCKET, older_than=timedelta(0), workers=4, rate=RateLimit(10_000), tenant="OR-rf5kf25"
        )
    )

    assert [r.object.key for r in results] == [f"{n:03}.mxf" for n in range(60)]
    assert [r.state is ObjectState.ARCHIVED for r in results] == [n % 3 == 0 for n in range(60)]
    assert [e.object.key for e in setup.events.published] == [
        f"{n:03}.mxf" for n in range(60) if n % 3
    ]


def test_a_listing_cut_off_gives_what_was_found_then_the_failure_and_publishes_no_more() -> None:
    setup = Setup()
    setup.bucket.fail_after = 5
    for n in range(10):
        setup.bucket.add(BUCKET, f"{n:02}.mxf", last_modified=LONG_AGO)
    found: list[Reconciled] = []

    with pytest.raises(ServiceUnavailable):
        for result in setup.use_case.execute(
            BUCKET, older_than=timedelta(0), workers=3, rate=RateLimit(10_000), tenant="OR-rf5kf25"
        ):
            found.append(result)

    assert [r.object.key for r in found] == [f"{n:02}.mxf" for n in range(5)]
    assert len(setup.events.published) == 5


def test_a_stored_object_s_etag_loses_its_quotes() -> None:
    stored = StoredObject(BUCKET, "a", 1, '"abc"', LONG_AGO)
    assert stored.bare_etag == "abc"


def test_an_object_deleted_since_it_was_listed_is_not_enqueued() -> None:
    setup = Setup()
    gone = setup.bucket.add(BUCKET, "gone.mxf", last_modified=LONG_AGO)
    del setup.bucket.stored[(BUCKET, "gone.mxf")]

    result = setup.use_case.settle(gone, ObjectState.MISSING, "OR-rf5kf25")

    assert (result.state, result.enqueued) == (ObjectState.MISSING, False)
    assert setup.events.published == []
