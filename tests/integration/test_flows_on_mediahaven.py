"""The use cases on the real MediaHaven adapter, against a fake MediaHaven that matches loosely.

A search engine returns near misses (`clip.mxf.bak` for `clip.mxf`, `MEDIA-10` for
`MEDIA-1`); only what matches exactly may stop an ingest or be deleted (SPEC 1, 4.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.domain.results import AlreadyArchived, IngestResult, Removed, Sent
from s3_events_handler.domain.use_cases import IngestEssence, Progress, RemoveEssence
from tests.support.mediahaven_server import FakeMediaHaven
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
    return MediaHavenRecords(
        session=session,
        base_url=mediahaven.base_url,
        client_id=mediahaven.client_id,
        client_secret=mediahaven.client_secret,
        username=mediahaven.username,
        password=mediahaven.password,
        timeout=5.0,
    )


def ingest(world: World, records: MediaHavenRecords, examples: Path) -> IngestResult:
    use_case: IngestEssence = world.ingest_on(records)
    event = event_of(golden_event(examples, "event-essence-created.json"))
    return use_case.execute(event, correlation_id="c", progress=Progress())


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

    result = remove.execute(event, correlation_id="c", progress=Progress())

    assert [deletion.fragment_id for deletion in mediahaven.deleted] == ["subtitles", "essence"]
    survivors = [record["Internal"]["FragmentId"] for record in mediahaven.records]
    assert survivors == ["fragment", "other-version", "backup", "other-subtitles"]
    assert result == Removed(bucket=BUCKET, key=KEY, essences=1, collaterals=1)
