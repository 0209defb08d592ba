"""The use cases on the real MediaHaven adapter, against a fake MediaHaven that matches loosely.

A search engine returns near misses (`clip.mxf.bak` for `clip.mxf`, `MEDIA-10` for
`MEDIA-1`); only what matches exactly may stop an ingest or be deleted (contract §1, §4.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests

from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.results import (
    AlreadyArchived,
    IngestResult,
    Removed,
    RemoveResult,
    Sent,
)
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence
from tests.support.mediahaven_server import RECORDS_PATH, FakeMediaHaven
from tests.unit.builders import World, event_of, golden_event

KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
BUCKET = "mam-highresvideo"
MD5 = "0cc175b9c0f1b6a831c399e269772661"
COLLATERALS = "mam-collaterals"


@pytest.fixture
def mediahaven() -> Iterator[FakeMediaHaven]:
    with FakeMediaHaven(sloppy=True) as fake:
        yield fake


@pytest.fixture
def records(mediahaven: FakeMediaHaven, session: requests.Session) -> MediaHavenRecords:
    return records_on(mediahaven, session)


def records_on(
    mediahaven: FakeMediaHaven, session: requests.Session, max_pages: int = 50
) -> MediaHavenRecords:
    """The adapter as the service builds it, 100 results a page, `max_pages` at most."""
    return MediaHavenRecords(
        session=session,
        base_url=mediahaven.base_url,
        client_id=mediahaven.client_id,
        client_secret=mediahaven.client_secret,
        username=mediahaven.username,
        password=mediahaven.password,
        timeout=5.0,
        max_pages=max_pages,
    )


def pages_asked(mediahaven: FakeMediaHaven) -> list[int]:
    """The startIndex of every search MediaHaven was asked, in order."""
    return [
        int(parse_qs(request.query)["startIndex"][0])
        for request in mediahaven.requests_to(RECORDS_PATH, "GET")
    ]


def ingest(world: World, records: MediaHavenRecords, examples: Path) -> IngestResult:
    use_case: IngestEssence = world.ingest_on(records)
    event = event_of(golden_event(examples, "event-essence-created.json"))
    return use_case.execute(event, correlation_id="c")


def test_a_near_miss_does_not_stop_an_object_from_being_archived(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    mediahaven.add_record("backup", key=KEY + ".bak", bucket=BUCKET, md5="f" * 32)
    world = World(cp_name="testbeeld")

    result = ingest(world, records, examples)

    assert isinstance(result, Sent) and result.pid == "k98z0d4w1q"
    assert mediahaven.searches == [f'+(s3_object_key:"{KEY}" md5:"{MD5}")']
    assert list(world.transport.uploaded) == ["/testbeeld/DISK-SHARE-EVENTS/k98z0d4w1q.xml"]
    assert [request.message_id for request in world.transfers.published] == ["k98z0d4w1q"]


def test_the_exact_key_among_near_misses_counts_as_archived(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    mediahaven.add_record("backup", key=KEY + ".bak", bucket=BUCKET)
    mediahaven.add_record("archived", key=KEY, bucket=BUCKET)
    world = World()

    assert ingest(world, records, examples) == AlreadyArchived(key=KEY)
    assert world.transport.uploaded == {}


def test_the_same_md5_in_another_case_counts_as_archived_where_the_md5_counts(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    mediahaven.add_record("copy", key="renamed.MXF", bucket=BUCKET, md5=MD5.upper())
    world = World(cp_name="testbeeld")

    assert ingest(world, records, examples) == AlreadyArchived(key=KEY)
    assert world.pids.minted == []


def test_a_removal_deletes_only_the_essence_and_its_real_collaterals(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    mediahaven.add_record("essence", key=KEY, bucket=BUCKET)
    mediahaven.add_record("fragment", key=KEY, bucket=BUCKET, is_fragment=True, local_id="MEDIA-1")
    mediahaven.add_record(
        "subtitles", key="closedOt/MEDIA-1/a.srt", bucket=COLLATERALS, local_id="MEDIA-1"
    )
    # Sharing the local id, but no collateral: another version of the essence.
    mediahaven.add_record("other-version", key="v2-" + KEY, bucket=BUCKET, local_id="MEDIA-1")
    # Near misses the loose search returns for the key and for the local id.
    mediahaven.add_record("backup", key=KEY + ".bak", bucket=BUCKET)
    mediahaven.add_record(
        "other-subtitles", key="openOt/MEDIA-10/b.srt", bucket=COLLATERALS, local_id="MEDIA-10"
    )
    world = World()
    remove = RemoveEssence(records=records, organisations=world.organisations, ledger=world.ledger)
    event = event_of(golden_event(examples, "event-removed.json"))

    result = remove.execute(event, correlation_id="c")

    assert [deletion.fragment_id for deletion in mediahaven.deleted] == ["subtitles", "essence"]
    survivors = [record["Internal"]["FragmentId"] for record in mediahaven.records]
    assert survivors == ["fragment", "other-version", "backup", "other-subtitles"]
    assert result == Removed(bucket=BUCKET, key=KEY, essences=1, collaterals=1)


def test_the_archived_check_stops_at_the_first_exact_match(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    """10,000 loose hits for the key (contract §4.1); the exact one is on page 3 of 100."""
    for n in range(10_000):
        if n == 250:
            mediahaven.add_record("archived", key=KEY, bucket=BUCKET)
        mediahaven.add_record(f"near-{n:05d}", key=f"{KEY}.{n:05d}", bucket=BUCKET)
    world = World()

    assert ingest(world, records, examples) == AlreadyArchived(key=KEY)
    assert pages_asked(mediahaven) == [0, 100, 200]
    assert world.pids.minted == []


def test_a_search_past_max_search_pages_fails_as_transient_without_an_answer(
    mediahaven: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    """10,000 loose hits and none exact: 50 pages read, then the attempt fails."""
    for n in range(10_000):
        mediahaven.add_record(f"near-{n:05d}", key=f"{KEY}.{n:05d}", bucket=BUCKET)
    world = World()

    with pytest.raises(ServiceUnavailable) as failed:
        ingest(world, records, examples)

    assert str(failed.value) == (
        f'search too broad: more than 50 pages of results for +(s3_object_key:"{KEY}")'
    )
    assert failed.value.system is System.MEDIAHAVEN
    assert pages_asked(mediahaven) == list(range(0, 5_000, 100))
    assert world.pids.minted == [] and world.transport.uploaded == {}


def test_a_removal_reads_every_page_it_may_and_deletes_nothing_past_them(
    mediahaven: FakeMediaHaven, session: requests.Session, examples: Path
) -> None:
    """The essence and its collateral among 250 near misses each: found on page 3, both
    deleted. With a bound of 2 pages the search is too broad: nothing is deleted."""
    for n in range(250):
        mediahaven.add_record(f"near-{n:03d}", key=f"{KEY}.{n:03d}", bucket=BUCKET)
        local_id = f"MEDIA-1{n:03d}"
        subtitles = f"closedOt/{local_id}/a.srt"
        mediahaven.add_record(
            f"near-{local_id}", key=subtitles, bucket=COLLATERALS, local_id=local_id
        )
    mediahaven.add_record("essence", key=KEY, bucket=BUCKET)
    mediahaven.add_record("fragment", key=KEY, bucket=BUCKET, is_fragment=True, local_id="MEDIA-1")
    mediahaven.add_record(
        "subtitles", key="closedOt/MEDIA-1/a.srt", bucket=COLLATERALS, local_id="MEDIA-1"
    )
    event = event_of(golden_event(examples, "event-removed.json"))

    def remove(max_pages: int) -> RemoveResult:
        world = World()
        use_case = RemoveEssence(
            records=records_on(mediahaven, session, max_pages),
            organisations=world.organisations,
            ledger=world.ledger,
        )
        return use_case.execute(event, correlation_id="c")

    with pytest.raises(ServiceUnavailable, match="search too broad: more than 2 pages"):
        remove(max_pages=2)
    assert mediahaven.deleted == []

    assert remove(max_pages=3) == Removed(bucket=BUCKET, key=KEY, essences=1, collaterals=1)
    assert [deletion.fragment_id for deletion in mediahaven.deleted] == ["subtitles", "essence"]
