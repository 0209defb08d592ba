"""IngestEssence against the in-memory fakes: the essence and collateral flows of contract §1."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from s3_events_handler.adapters.memory import InMemoryArchiveRecords
from s3_events_handler.domain.errors import (
    BadInput,
    EssenceNotArchivedYet,
    Rejected,
    ServiceUnavailable,
    System,
    pid_of,
    stage_of,
)
from s3_events_handler.domain.model import LedgerEntry, Query, Record, Stage, Step, Term
from s3_events_handler.domain.results import AlreadyArchived, AlreadyHandled, IngestResult, Sent
from tests.unit.builders import World, essence_record, event_of, golden_event

ESSENCE = "event-essence-created.json"
ESSENCE_NO_MD5 = "event-essence-created-no-md5.json"
COLLATERAL = "event-collateral-created.json"
ESSENCE_KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"


def ingest(world: World, examples: Path, name: str, **changes: object) -> IngestResult:
    event = event_of(golden_event(examples, name), **changes)
    return world.ingest.execute(event, correlation_id="corr-1")


def transfer_json(world: World, index: int = 0) -> dict[str, object]:
    request = world.transfers.published[index]
    return {
        "source": {
            "domain": {"name": request.source.domain},
            "bucket": {"name": request.source.bucket},
            "object": {"key": request.source.key},
        },
        "destination": {"path": request.destination_path, "host": request.destination_host},
    }


def test_an_essence_gets_the_golden_sidecar_in_the_tape_folder(examples: Path) -> None:
    world = World()
    ingest(world, examples, ESSENCE)
    assert list(world.transport.uploaded) == ["/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]
    sidecar = world.transport.uploaded["/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]
    assert sidecar == (examples / "sidecar-essence.xml").read_bytes()


def test_an_essence_without_md5_gets_a_sidecar_without_md5(examples: Path) -> None:
    world = World()
    ingest(world, examples, ESSENCE_NO_MD5)
    sidecar = world.transport.uploaded["/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]
    assert sidecar == (examples / "sidecar-essence-no-md5.xml").read_bytes()


def test_an_essence_is_followed_by_the_golden_transfer_request(examples: Path) -> None:
    world = World()
    ingest(world, examples, ESSENCE)
    golden = json.loads((examples / "transfer-request-essence.json").read_text())
    assert transfer_json(world) == golden
    request = world.transfers.published[0]
    assert (request.message_id, request.correlation_id) == ("k98z0d4w1q", "corr-1")


def test_skips_an_essence_that_is_already_archived(examples: Path) -> None:
    world = World([essence_record("frag-1", key=ESSENCE_KEY)])
    assert ingest(world, examples, ESSENCE) == AlreadyArchived(key=ESSENCE_KEY)
    assert world.pids.minted == []
    assert world.transport.uploaded == {}
    assert world.transfers.published == []


def test_the_vrt_archived_check_ignores_the_md5_of_an_essence(examples: Path) -> None:
    world = World()
    ingest(world, examples, ESSENCE)
    assert world.records.searches[0] == Query.any_of(Term("s3_object_key", ESSENCE_KEY))


def test_other_partners_archived_check_includes_the_md5(examples: Path) -> None:
    world = World(cp_name="testbeeld")
    ingest(world, examples, ESSENCE)
    assert world.records.searches[0] == Query.any_of(
        Term("s3_object_key", ESSENCE_KEY), Term("md5", "0cc175b9c0f1b6a831c399e269772661")
    )
    assert list(world.transport.uploaded) == ["/testbeeld/DISK-SHARE-EVENTS/k98z0d4w1q.xml"]


def test_the_cp_name_matches_the_destination_table_case_insensitively(examples: Path) -> None:
    world = World(cp_name="Vrt")
    ingest(world, examples, ESSENCE)
    assert list(world.transport.uploaded) == ["/Vrt/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]


def test_a_partner_missing_from_the_table_goes_to_disk(examples: Path) -> None:
    world = World(cp_name="AMSAB")
    ingest(world, examples, ESSENCE)
    assert list(world.transport.uploaded) == ["/AMSAB/DISK-SHARE-EVENTS/k98z0d4w1q.xml"]
    assert transfer_json(world)["destination"] == {
        "path": "/mnt/STORAGE/INGEST/SIDECAR/AMSAB/DISK-SHARE-EVENTS/k98z0d4w1q.MXF",
        "host": "ftp://transport.example.org",
    }


def test_a_retry_reuses_the_pid_an_earlier_attempt_minted(examples: Path) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    world.ingest.execute(event, correlation_id="c", pid="a1b2c3d4e5")
    assert world.pids.minted == []
    assert list(world.transport.uploaded) == ["/VRT/TAPE-SHARE-EVENTS/a1b2c3d4e5.xml"]


def test_a_failure_tells_how_far_the_attempt_got(examples: Path) -> None:
    world = World()
    world.transport.folders = set()  # no folder: the upload is refused
    event = event_of(golden_event(examples, ESSENCE))
    with pytest.raises(Rejected) as failure:
        world.ingest.execute(event, correlation_id="c")
    assert (stage_of(failure.value), pid_of(failure.value)) == (Stage.SIDECAR_UPLOAD, "k98z0d4w1q")
    assert failure.value.system is System.FTP
    assert world.transfers.published == []


def test_a_cp_name_that_would_leave_the_folder_is_bad_input(examples: Path) -> None:
    world = World(cp_name="../../etc")
    with pytest.raises(BadInput):
        ingest(world, examples, ESSENCE)
    assert world.transport.uploaded == {}


def test_a_pid_that_is_no_path_segment_is_refused(examples: Path) -> None:
    world = World(pids=("../x",))
    with pytest.raises(BadInput):
        ingest(world, examples, ESSENCE)


# Collaterals


def test_a_collateral_is_linked_and_gets_the_golden_sidecar(examples: Path) -> None:
    world = World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])
    result = ingest(world, examples, COLLATERAL)
    assert result == Sent(
        key="closedOt/MEDIA-0042/journaal-1900.srt",
        cp_name="VRT",
        folder="DISK-SHARE-EVENTS",
        sidecar_file="k98z0d4w1q_closedOt.xml",
        pid="k98z0d4w1q",  # the essence's, as in the sidecar
    )
    assert world.pids.minted == []
    relation = world.records.relations[0]
    assert (relation.fragment_id, relation.related_pid) == ("frag-1", "k98z0d4w1q_closedOt")
    assert relation.reason == "[s3-events-handler] Voeg relatie van subtitle toe"
    path = "/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_closedOt.xml"
    assert world.transport.uploaded[path] == (examples / "sidecar-collateral.xml").read_bytes()
    request = world.transfers.published[0]
    assert request.destination_path == (
        "/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_closedOt.srt"
    )
    assert request.message_id == "k98z0d4w1q_closedOt"


def test_a_collateral_prefers_the_fragment_over_the_main_record(examples: Path) -> None:
    world = World(
        [
            essence_record("main-1", local_id="MEDIA-0042", pid="mainpid001"),
            essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True, pid="fragpid001"),
        ]
    )
    ingest(world, examples, COLLATERAL)
    assert world.records.relations[0].fragment_id == "frag-1"
    assert "/VRT/DISK-SHARE-EVENTS/fragpid001_closedOt.xml" in world.transport.uploaded


def test_a_collateral_never_links_to_an_earlier_collateral(examples: Path) -> None:
    earlier = essence_record("coll-1", local_id="MEDIA-0042", bucket="mam-collaterals")
    world = World([earlier, essence_record("main-1", local_id="MEDIA-0042")])
    ingest(world, examples, COLLATERAL)
    assert world.records.relations[0].fragment_id == "main-1"


def test_a_collateral_whose_essence_is_not_archived_yet_waits(examples: Path) -> None:
    world = World([essence_record("other", local_id="MEDIA-00421")])
    with pytest.raises(EssenceNotArchivedYet):
        ingest(world, examples, COLLATERAL)
    assert world.records.relations == []
    assert world.transport.uploaded == {}


def test_a_collateral_archived_check_always_includes_the_md5(examples: Path) -> None:
    world = World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])
    ingest(world, examples, COLLATERAL)
    assert world.records.searches[0] == Query.any_of(
        Term("s3_object_key", "closedOt/MEDIA-0042/journaal-1900.srt"),
        Term("md5", "92eb5ffee6ae2fec3ad71c777531578f"),
    )


def test_a_collateral_of_another_type_is_a_plain_collateral(examples: Path) -> None:
    world = World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])
    ingest(world, examples, COLLATERAL, s3__object__key="poster/MEDIA-0042/still.jpg")
    assert world.records.relations[0].reason == (
        "[s3-events-handler] Voeg relatie van collateral toe"
    )
    sidecar = world.transport.uploaded["/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_poster.xml"]
    assert b"<object_use>collateral</object_use>" in sidecar


@pytest.mark.parametrize(
    "key", ["closedOt", "closedOt//x.srt", "/MEDIA-0042/x.srt", "../MEDIA-0042/x.srt"]
)
def test_a_collateral_key_without_type_and_media_id_is_bad_input(examples: Path, key: str) -> None:
    world = World()
    with pytest.raises(BadInput):
        ingest(world, examples, COLLATERAL, s3__object__key=key)
    assert world.records.searches == []


# The ledger: nothing done twice


def test_the_same_event_twice_gets_one_pid_one_sidecar_one_transfer_request(
    examples: Path,
) -> None:
    world = World()
    ingest(world, examples, ESSENCE)
    assert ingest(world, examples, ESSENCE) == AlreadyHandled(key=ESSENCE_KEY, pid="k98z0d4w1q")
    assert world.pids.minted == ["k98z0d4w1q"]
    assert len(world.transport.uploaded) == 1
    assert len(world.transfers.published) == 1


def test_a_redelivery_after_a_crash_reuses_the_pid_the_ledger_holds(examples: Path) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    world.crashed_attempt(event.identity, pid="a1b2c3d4e5", step=Step.SIDECAR_UPLOADED)
    world.ingest.execute(event, correlation_id="c", pid="z9y8x7w6v5")
    assert world.pids.minted == []
    assert list(world.transport.uploaded) == ["/VRT/TAPE-SHARE-EVENTS/a1b2c3d4e5.xml"]
    assert world.transfers.published[0].message_id == "a1b2c3d4e5"
    assert world.ledger.entries.get(event.identity) == LedgerEntry(
        event.identity, "a1b2c3d4e5", Step.TRANSFER_REQUESTED
    )


def test_the_ledger_knows_the_pid_before_the_sidecar_goes_out(examples: Path) -> None:
    world = World()
    world.transport.folders = set()
    event = event_of(golden_event(examples, ESSENCE))
    with pytest.raises(Rejected):
        world.ingest.execute(event, correlation_id="c")
    assert world.ledger.entries.get(event.identity) == LedgerEntry(
        event.identity, "k98z0d4w1q", Step.PID_CLAIMED
    )


def test_a_pid_claimed_by_another_consumer_first_wins(examples: Path) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    world.crashed_attempt(event.identity, pid="other00001")
    # "a1b2c3d4e5" from an x-pid header, but the ledger knows better
    result = world.ingest.execute(event, correlation_id="c", pid="a1b2c3d4e5")
    assert isinstance(result, Sent) and result.pid == "other00001"
    assert list(world.transport.uploaded) == ["/VRT/TAPE-SHARE-EVENTS/other00001.xml"]


def test_two_events_for_the_same_key_are_two_events(examples: Path) -> None:
    world = World()
    ingest(world, examples, ESSENCE)
    ingest(world, examples, ESSENCE, responseElements=None)  # no request id: another identity
    assert world.pids.minted == ["k98z0d4w1q", "a1b2c3d4e5"]


def test_a_near_miss_of_the_search_engine_does_not_count_as_archived(examples: Path) -> None:
    """A search engine may return `clip.mxf.bak` for `clip.mxf`: that object is not archived."""
    world = World(
        [essence_record("bak", key=ESSENCE_KEY + ".bak")],
        cp_name="testbeeld",
    )
    world.records = InMemoryArchiveRecords(world.records.records, matches=lambda r, q: True)
    world.ingest = world.ingest_on(world.records)
    assert ingest(world, examples, ESSENCE) == Sent(
        key=ESSENCE_KEY,
        cp_name="testbeeld",
        folder="DISK-SHARE-EVENTS",
        sidecar_file="k98z0d4w1q.xml",
        pid="k98z0d4w1q",
    )
    assert list(world.transport.uploaded) == ["/testbeeld/DISK-SHARE-EVENTS/k98z0d4w1q.xml"]


def loose_search(world: World, records: list[Record], **paging: int) -> InMemoryArchiveRecords:
    """`records` behind a search engine that returns every one of them, in pages."""
    world.records = InMemoryArchiveRecords(records, matches=lambda r, q: True, **paging)
    world.ingest = world.ingest_on(world.records)
    return world.records


def test_the_archived_check_reads_no_page_past_the_first_exact_match(examples: Path) -> None:
    near_misses = [essence_record(f"near-{n}", key=f"{ESSENCE_KEY}.{n}") for n in range(6)]
    world = World()
    archived = essence_record("archived", key=ESSENCE_KEY)
    records = loose_search(world, [*near_misses[:3], archived, *near_misses[3:]], page_size=2)
    assert ingest(world, examples, ESSENCE) == AlreadyArchived(key=ESSENCE_KEY)
    assert records.pages_read == 2


def test_a_search_past_its_page_bound_fails_as_transient_before_any_pid(examples: Path) -> None:
    near_misses = [essence_record(f"near-{n}", key=f"{ESSENCE_KEY}.{n}") for n in range(7)]
    world = World()
    records = loose_search(world, near_misses, page_size=2, max_pages=3)
    with pytest.raises(ServiceUnavailable, match="search too broad: more than 3 pages"):
        ingest(world, examples, ESSENCE)
    assert records.pages_read == 3
    assert world.pids.minted == [] and world.transport.uploaded == {}


def test_a_record_with_the_same_md5_counts_as_archived_where_the_md5_counts(
    examples: Path,
) -> None:
    """The md5 matches whatever its case; the search engine's own matching is not trusted."""
    same_content = essence_record("copy", key="elsewhere.MXF")
    world = World(cp_name="testbeeld")
    world.records = InMemoryArchiveRecords(
        [replace(same_content, md5="0CC175B9C0F1B6A831C399E269772661")],
        matches=lambda r, q: True,
    )
    world.ingest = world.ingest_on(world.records)
    assert ingest(world, examples, ESSENCE) == AlreadyArchived(key=ESSENCE_KEY)
    assert world.transport.uploaded == {}


def test_a_retried_collateral_does_not_post_its_relation_twice(examples: Path) -> None:
    world = World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])
    world.transport.folders = set()  # the upload fails after the relation was posted
    with pytest.raises(Rejected):
        ingest(world, examples, COLLATERAL)
    assert len(world.records.relations) == 1
    world.transport.folders = None
    ingest(world, examples, COLLATERAL)
    assert len(world.records.relations) == 1
    assert list(world.transport.uploaded) == ["/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_closedOt.xml"]


def test_a_collateral_after_its_essence_in_one_gateway_request_is_archived(
    examples: Path,
) -> None:
    """The golden essence and collateral share a request id: each is its own event."""
    world = World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])
    ingest(world, examples, ESSENCE)
    ingest(world, examples, COLLATERAL)
    assert [request.message_id for request in world.transfers.published] == [
        "k98z0d4w1q",
        "k98z0d4w1q_closedOt",
    ]
