"""RemoveEssence against the in-memory fakes: contract §1, ObjectRemoved."""

from __future__ import annotations

from pathlib import Path

from s3_events_handler.adapters.memory import InMemoryArchiveRecords
from s3_events_handler.domain.model import Record
from s3_events_handler.domain.results import NothingToRemove, Removed, RemoveResult
from s3_events_handler.domain.use_cases import RemoveEssence
from tests.unit.builders import World, essence_record, event_of, golden_event

KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
BUCKET = "mam-highresvideo"


def remove(world: World, examples: Path) -> RemoveResult:
    event = event_of(golden_event(examples, "event-removed.json"))
    return world.remove.execute(event, correlation_id="c")


def archived_essence() -> list[Record]:
    """An essence, two fragments of it, a collateral of each fragment and one unrelated record."""
    return [
        essence_record("essence-1", key=KEY),
        essence_record("frag-1", key=KEY, is_fragment=True, local_id="MEDIA-1"),
        essence_record("frag-2", key=KEY, is_fragment=True, local_id="MEDIA-2"),
        essence_record(
            "coll-1", key="closedOt/MEDIA-1/a.srt", bucket="mam-collaterals", local_id="MEDIA-1"
        ),
        essence_record(
            "coll-2", key="openOt/MEDIA-2/b.srt", bucket="mam-collaterals", local_id="MEDIA-2"
        ),
        essence_record("unrelated", key="other.MXF", local_id="MEDIA-3"),
    ]


def test_deletes_the_collaterals_before_the_essence(examples: Path) -> None:
    world = World(archived_essence())
    remove(world, examples)
    assert world.records.deleted == ["coll-1", "coll-2", "essence-1"]
    assert [r.fragment_id for r in world.records.records] == ["frag-1", "frag-2", "unrelated"]


def test_gives_the_reasons_mediahaven_expects(examples: Path) -> None:
    world = World(archived_essence())
    remove(world, examples)
    assert world.records.delete_reasons["coll-1"] == (
        'Deleted collateral with local_id: "MEDIA-1" linked to fragment with fragment_id: '
        '"frag-1". Essence was deleted via s3 delete-object.'
    )
    assert world.records.delete_reasons["essence-1"] == (
        f's3 delete-object for bucket: "{BUCKET}" and key: "{KEY}"'
    )


def test_nothing_archived_means_nothing_deleted(examples: Path) -> None:
    world = World([essence_record("unrelated", key="other.MXF")])
    result = remove(world, examples)
    assert world.records.deleted == []
    assert result == NothingToRemove(bucket=BUCKET, key=KEY)


def test_only_exact_bucket_and_key_matches_are_deleted(examples: Path) -> None:
    near_misses = [
        essence_record("same-key-other-bucket", key=KEY, bucket="mam-other"),
        essence_record("key-with-suffix", key=KEY + ".bak"),
        essence_record("key-in-other-case", key=KEY.lower()),
        essence_record("exact", key=KEY),
    ]
    world = World()
    # A search engine that returns everything: only the use case's own filter protects.
    world.records = InMemoryArchiveRecords(near_misses, matches=lambda record, query: True)
    world.remove = RemoveEssence(
        records=world.records, organisations=world.organisations, ledger=world.ledger
    )
    remove(world, examples)
    assert world.records.deleted == ["exact"]


def test_a_record_that_is_only_a_fragment_keeps_the_essence_flow_safe(examples: Path) -> None:
    world = World([essence_record("frag-1", key=KEY, is_fragment=True, local_id="MEDIA-1")])
    remove(world, examples)
    assert world.records.deleted == []


def test_a_retried_removal_finishes_what_an_interrupted_one_started(examples: Path) -> None:
    records = archived_essence()
    world = World([r for r in records if r.fragment_id != "coll-1"])
    remove(world, examples)
    assert world.records.deleted == ["coll-2", "essence-1"]


def test_looks_up_the_collaterals_of_all_local_ids_in_one_search(examples: Path) -> None:
    world = World(archived_essence())
    remove(world, examples)
    assert len(world.records.searches) == 2
    assert [t.value for t in world.records.searches[1].groups[0]] == ["MEDIA-1", "MEDIA-2"]


def test_another_essence_sharing_a_local_id_is_no_collateral_and_survives(
    examples: Path,
) -> None:
    records = [
        *archived_essence(),
        essence_record("other-essence", key="other-version.MXF", local_id="MEDIA-1"),
    ]
    world = World(records)
    result = remove(world, examples)
    assert world.records.deleted == ["coll-1", "coll-2", "essence-1"]
    assert "other-essence" in [r.fragment_id for r in world.records.records]
    assert result == Removed(bucket=BUCKET, key=KEY, essences=1, collaterals=2)


def test_a_record_without_a_bucket_is_no_collateral(examples: Path) -> None:
    bucketless = Record(fragment_id="no-bucket", is_fragment=False, local_id="MEDIA-2")
    world = World([*archived_essence(), bucketless])
    remove(world, examples)
    assert "no-bucket" not in world.records.deleted
