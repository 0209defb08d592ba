"""The `ArchiveRecords` port: the in-memory fake, and the MediaHaven adapter against the
MediaHaven test server over real sockets."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

import pytest
import requests
from lxml import etree

from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.adapters.memory import InMemoryArchiveRecords
from s3_events_handler.domain.errors import Rejected, SearchTooBroad
from s3_events_handler.domain.model import Query, Record, Term
from s3_events_handler.domain.ports import ArchiveRecords
from tests.support.mediahaven_server import RECORDS_PATH, FakeMediaHaven

PAGE_SIZE = 10
MAX_PAGES = 3


class Archive(Protocol):
    """The port under test, and a way to arrange and to look at what is behind it."""

    @property
    def kind(self) -> str: ...

    @property
    def records(self) -> ArchiveRecords: ...

    def add(self, record: Record) -> None: ...

    def stored(self) -> list[str]:
        """The fragment ids of the records there now, in order."""
        ...

    def relations(self) -> list[tuple[str, str, str]]:
        """Each relation added: fragment id, related PID, reason."""
        ...

    def pages_read(self) -> int: ...


class InMemoryArchive:
    kind = "memory"

    def __init__(self) -> None:
        self.records = self.fake = InMemoryArchiveRecords(page_size=PAGE_SIZE, max_pages=MAX_PAGES)

    def add(self, record: Record) -> None:
        self.fake.records.append(record)

    def stored(self) -> list[str]:
        return [record.fragment_id for record in self.fake.records]

    def relations(self) -> list[tuple[str, str, str]]:
        return [(r.fragment_id, r.related_pid, r.reason) for r in self.fake.relations]

    def pages_read(self) -> int:
        return self.fake.pages_read


class MediaHavenArchive:
    kind = "mediahaven"

    def __init__(self, server: FakeMediaHaven, session: requests.Session) -> None:
        self.server = server
        self.records = MediaHavenRecords(
            session=session,
            base_url=server.base_url,
            client_id=server.client_id,
            client_secret=server.client_secret,
            username=server.username,
            password=server.password,
            timeout=5.0,
            page_size=PAGE_SIZE,
            max_pages=MAX_PAGES,
            sleep=lambda seconds: None,
        )

    def add(self, record: Record) -> None:
        self.server.add_record(
            record.fragment_id,
            is_fragment=record.is_fragment,
            pid=record.pid,
            local_id=record.local_id,
            key=record.s3_object_key,
            bucket=record.s3_bucket,
            md5=record.md5,
        )

    def stored(self) -> list[str]:
        return [record["Internal"]["FragmentId"] for record in self.server.records]

    def relations(self) -> list[tuple[str, str, str]]:
        def related(metadata: bytes) -> str:
            [pid] = etree.fromstring(metadata).iter("is_verwant_aan")
            return str(pid.text)

        return [
            (update.fragment_id, related(update.metadata), str(update.reason))
            for update in self.server.relations
        ]

    def pages_read(self) -> int:
        return len(self.server.requests_to(RECORDS_PATH, "GET"))


@pytest.fixture(params=["memory", "mediahaven"])
def archive(request: pytest.FixtureRequest) -> Iterator[Archive]:
    if request.param == "memory":
        yield InMemoryArchive()
        return
    with FakeMediaHaven() as server, requests.Session() as session:
        yield MediaHavenArchive(server, session)


ESSENCE = Record(
    fragment_id="frag-essence",
    is_fragment=False,
    pid="k98z0d4w1q",
    local_id="journaal-1900",
    s3_object_key="20261120-journaal-1900.MXF",
    s3_bucket="mam-highresvideo",
    md5="0cc175b9c0f1b6a831c399e269772661",
)
FRAGMENT = Record(
    fragment_id="frag-fragment",
    is_fragment=True,
    pid="k98z0d4w1q",
    local_id="journaal-1900",
    s3_object_key="20261120-journaal-1900.MXF",
    s3_bucket="mam-highresvideo",
)
OTHER = Record(
    fragment_id="frag-other",
    is_fragment=False,
    pid="z9y8x7w6v5",
    s3_object_key="20261121-journaal-1300.MXF",
    s3_bucket="mam-lowres",
)


def found(archive: Archive, *groups: tuple[Term, ...]) -> list[Record]:
    return list(archive.records.search(Query(groups=groups)))


@pytest.mark.parametrize(
    "term",
    [
        Term("s3_object_key", "20261121-journaal-1300.MXF"),
        Term("s3_bucket", "mam-lowres"),
        Term("PID", "z9y8x7w6v5"),
    ],
    ids=["key", "bucket", "pid"],
)
def test_a_search_by_an_exact_term_finds_the_record_with_every_field(
    archive: Archive, term: Term
) -> None:
    for record in (ESSENCE, FRAGMENT, OTHER):
        archive.add(record)
    assert found(archive, (term,)) == [OTHER]


def test_a_record_is_read_with_the_fields_the_domain_decides_on(archive: Archive) -> None:
    for record in (ESSENCE, FRAGMENT, OTHER):
        archive.add(record)
    by_md5 = found(archive, (Term("md5", "0cc175b9c0f1b6a831c399e269772661"),))
    by_local_id = found(archive, (Term("dc_identifier_localid", "journaal-1900"),))
    assert by_md5 == [ESSENCE]
    assert by_local_id == [ESSENCE, FRAGMENT]
    assert [record.is_fragment for record in by_local_id] == [False, True]


def test_a_search_matches_values_exactly(archive: Archive) -> None:
    archive.add(OTHER)
    assert found(archive, (Term("s3_object_key", "20261121-journaal-1300"),)) == []
    assert found(archive, (Term("s3_object_key", "20261121-JOURNAAL-1300.MXF"),)) == []


def test_an_or_group_finds_a_record_matching_any_of_its_terms(archive: Archive) -> None:
    for record in (ESSENCE, FRAGMENT, OTHER):
        archive.add(record)
    either = (Term("s3_bucket", "mam-lowres"), Term("md5", "0cc175b9c0f1b6a831c399e269772661"))
    assert found(archive, either) == [ESSENCE, OTHER]


def test_groups_are_anded(archive: Archive) -> None:
    for record in (ESSENCE, FRAGMENT, OTHER):
        archive.add(record)
    key = (Term("s3_object_key", "20261120-journaal-1900.MXF"),)
    assert found(archive, key, (Term("md5", "0cc175b9c0f1b6a831c399e269772661"),)) == [ESSENCE]
    assert found(archive, key, (Term("s3_bucket", "mam-lowres"),)) == []
    either_bucket = (Term("s3_bucket", "mam-lowres"), Term("s3_bucket", "mam-highresvideo"))
    assert found(archive, key, either_bucket) == [ESSENCE, FRAGMENT]


def test_add_relation_is_recorded_on_the_record(archive: Archive) -> None:
    archive.add(ESSENCE)
    archive.records.add_relation("frag-essence", "k98z0d4w1q_closedOt", "collateral arrived")
    assert archive.relations() == [("frag-essence", "k98z0d4w1q_closedOt", "collateral arrived")]


def test_add_relation_to_a_record_that_is_not_there_is_rejected(archive: Archive) -> None:
    archive.add(ESSENCE)
    with pytest.raises(Rejected):
        archive.records.add_relation("frag-gone", "k98z0d4w1q_closedOt", "collateral arrived")
    assert archive.relations() == []


def test_delete_removes_the_record_and_a_second_delete_counts_as_deleted(
    archive: Archive,
) -> None:
    for record in (ESSENCE, OTHER):
        archive.add(record)
    archive.records.delete("frag-essence", "removed from S3")
    assert archive.stored() == ["frag-other"]
    assert found(archive, (Term("PID", "k98z0d4w1q"),)) == []
    archive.records.delete("frag-essence", "removed from S3")  # already gone: no error
    archive.records.delete("frag-never-there", "removed from S3")
    assert archive.stored() == ["frag-other"]


def many(archive: Archive, count: int) -> Query:
    for n in range(count):
        archive.add(Record(f"frag-{n:03d}", False, s3_bucket="bucket-a", s3_object_key=f"{n}"))
    return Query.any_of(Term("s3_bucket", "bucket-a"))


def test_a_search_reads_every_page_each_record_once(archive: Archive) -> None:
    query = many(archive, PAGE_SIZE * MAX_PAGES)
    records = list(archive.records.search(query))
    assert [r.fragment_id for r in records] == [f"frag-{n:03d}" for n in range(30)]
    assert archive.pages_read() == MAX_PAGES


def test_a_search_asks_for_a_page_only_once_the_one_before_is_read(archive: Archive) -> None:
    query = many(archive, 25)
    results = archive.records.search(query)
    assert archive.pages_read() == 0  # nothing asked before the first record is
    assert next(results).fragment_id == "frag-000"
    assert archive.pages_read() == 1
    assert len(list(itertools.islice(results, PAGE_SIZE - 1))) == PAGE_SIZE - 1
    assert archive.pages_read() == 1  # the first page, read to its end
    assert next(results).fragment_id == "frag-010"
    assert archive.pages_read() == 2


def test_a_caller_that_stops_early_asks_for_no_more_pages(archive: Archive) -> None:
    query = many(archive, 25)
    for record in archive.records.search(query):
        if record.fragment_id == "frag-003":
            break
    assert archive.pages_read() == 1


def test_reading_past_the_bound_on_pages_is_too_broad(archive: Archive) -> None:
    query = many(archive, PAGE_SIZE * MAX_PAGES + 1)
    read: list[str] = []
    with pytest.raises(SearchTooBroad):
        for record in archive.records.search(query):
            read.append(record.fragment_id)
    assert read == [f"frag-{n:03d}" for n in range(PAGE_SIZE * MAX_PAGES)]
    assert archive.pages_read() == MAX_PAGES
