"""The MediaHaven adapter against the fake MediaHaven, over real sockets."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from s3_events_handler.adapters.config import load_settings
from s3_events_handler.adapters.mediahaven import MediaHavenRecords, render_query
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System
from s3_events_handler.domain.model import Query, Record, Term
from s3_events_handler.entrypoints.container import Container
from tests.support.clock import Clock
from tests.support.loopback import free_port
from tests.support.mediahaven_server import (
    PASSWORD_GRANT_PATH,
    RECORDS_PATH,
    REFRESH_GRANT_PATH,
    Deletion,
    FakeMediaHaven,
    Fault,
    parse_query,
)
from tests.support.threads import side_by_side
from tests.unit.test_config import REPO, REQUIRED

MakeRecords = Callable[..., MediaHavenRecords]


@pytest.fixture
def server() -> Iterator[FakeMediaHaven]:
    with FakeMediaHaven() as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_records(
    server: FakeMediaHaven, session: requests.Session, sleeps: list[float], clock: Clock
) -> MakeRecords:
    def make(**overrides: object) -> MediaHavenRecords:
        settings: dict[str, object] = {
            "session": session,
            "base_url": server.base_url,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "username": server.username,
            "password": server.password,
            "timeout": 2.0,
            "clock": clock,
            "sleep": sleeps.append,
            **overrides,
        }
        return MediaHavenRecords(**settings)  # type: ignore[arg-type]

    return make


@pytest.fixture
def records(make_records: MakeRecords) -> MediaHavenRecords:
    return make_records()


def by_key(key: str) -> Query:
    return Query.any_of(Term("s3_object_key", key))


# -- search ----------------------------------------------------------------------------------


def test_reads_every_page_of_a_search(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    for n in range(250):
        server.add_record(f"frag-{n:03d}", key=f"clip-{n:03d}.mxf", bucket="bucket-a")
    server.add_record("elsewhere", key="clip-000.mxf", bucket="bucket-b")

    found = list(records.search(Query.any_of(Term("s3_bucket", "bucket-a"))))

    assert [r.fragment_id for r in found] == [f"frag-{n:03d}" for n in range(250)]
    pages = server.requests_to(RECORDS_PATH, "GET")
    assert len(pages) == 3
    assert [p.query.split("&")[1:] for p in pages] == [
        ["startIndex=0", "nrOfResults=100"],
        ["startIndex=100", "nrOfResults=100"],
        ["startIndex=200", "nrOfResults=100"],
    ]


def test_follows_the_servers_page_size_when_it_gives_fewer_results_than_asked(
    make_records: MakeRecords,
) -> None:
    with FakeMediaHaven(max_page_size=40) as server:
        for n in range(100):
            server.add_record(f"frag-{n:03d}", bucket="bucket-a")
        records = make_records(
            base_url=server.base_url,
            client_id=server.client_id,
            client_secret=server.client_secret,
            username=server.username,
            password=server.password,
        )

        found = list(records.search(Query.any_of(Term("s3_bucket", "bucket-a"))))

        assert len(found) == 100
        assert len({r.fragment_id for r in found}) == 100
        assert len(server.requests_to(RECORDS_PATH, "GET")) == 3


def test_an_empty_search_is_one_request(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    assert list(records.search(by_key("nothing.mxf"))) == []
    assert len(server.searches) == 1


def test_maps_the_api_fields_onto_records(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record(
        "frag-1", is_fragment=True, pid="k98z0d4w1q", local_id="media-1", key="a.mxf", bucket="b"
    )
    server.add_record("frag-2", key="a.mxf")

    found = list(records.search(by_key("a.mxf")))

    assert found == [
        Record("frag-1", True, "k98z0d4w1q", "media-1", "a.mxf", "b"),
        Record("frag-2", False, None, None, "a.mxf", None),
    ]


def test_skips_a_result_without_a_fragment_id_with_a_warning(
    server: FakeMediaHaven, records: MediaHavenRecords, caplog: pytest.LogCaptureFixture
) -> None:
    server.records.append({"Internal": {"IsFragment": True}, "Dynamic": {"s3_object_key": "a"}})
    server.records.append({"Internal": {"FragmentId": "frag-2"}, "Dynamic": {"s3_object_key": "a"}})

    with caplog.at_level(logging.WARNING, logger="s3_events_handler.adapters.mediahaven"):
        found = list(records.search(by_key("a")))

    assert [r.fragment_id for r in found] == ["frag-2"]
    assert "without a FragmentId" in caplog.text


def test_tolerates_odd_results_and_field_values(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    results = [
        "not an object",
        {"Internal": {"FragmentId": "frag-1", "IsFragment": "true"}, "Dynamic": "nonsense"},
        {
            "Internal": {"FragmentId": "frag-2", "IsFragment": 1},
            "Dynamic": {"PID": ["x", "y"], "dc_identifier_localid": 42, "s3_bucket": None},
        },
        {"Internal": "nonsense"},
    ]
    body = {"TotalNrOfResults": 4, "NrOfResults": 4, "StartIndex": 0, "Results": results}
    server.fail_next(RECORDS_PATH, Fault(200, body=json.dumps(body).encode()))

    found = list(records.search(by_key("a.mxf")))

    assert found == [Record("frag-1", True), Record("frag-2", False, None, "42", None, None)]


def test_renders_groups_and_escapes_quotes_and_backslashes() -> None:
    query = Query(
        groups=(
            (Term("s3_object_key", 'say "hi"\\now'), Term("md5", "0" * 32)),
            (Term("s3_bucket", "b"),),
        )
    )

    rendered = render_query(query)

    assert rendered == (
        r'+(s3_object_key:"say \"hi\"\\now" md5:"00000000000000000000000000000000")'
        r' +(s3_bucket:"b")'
    )
    assert parse_query(rendered) == [
        [("s3_object_key", 'say "hi"\\now'), ("md5", "0" * 32)],
        [("s3_bucket", "b")],
    ]


def test_a_key_holding_quotes_and_backslashes_finds_exactly_its_record(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    tricky = 'folder\\"quoted" name+plus&amp=%20.mxf'
    server.add_record("wanted", key=tricky)
    server.add_record("unescaped", key='folder"quoted" name+plus&amp=%20.mxf')
    server.add_record("no-backslash", key="folder\\quoted name+plus&amp=%20.mxf")

    found = list(records.search(by_key(tricky)))

    assert [r.fragment_id for r in found] == ["wanted"]
    assert server.searches == [r'+(s3_object_key:"folder\\\"quoted\" name+plus&amp=%20.mxf")']


def test_sends_spaces_in_the_query_as_percent_20(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    list(records.search(Query.all_of(Term("s3_object_key", "a b+c"), Term("s3_bucket", "b"))))

    (request,) = server.requests_to(RECORDS_PATH, "GET")
    q = request.query.split("&")[0]
    assert q == "q=%2B%28s3_object_key%3A%22a%20b%2Bc%22%29%20%2B%28s3_bucket%3A%22b%22%29"


def test_an_or_group_finds_records_matching_any_of_its_terms(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    md5 = "0123456789abcdef0123456789abcdef"
    server.add_record("by-key", key="a.mxf")
    server.add_record("by-md5", key="renamed.mxf", md5=md5)
    server.add_record("neither", key="b.mxf", md5="f" * 32)

    found = list(records.search(Query.any_of(Term("s3_object_key", "a.mxf"), Term("md5", md5))))

    assert sorted(r.fragment_id for r in found) == ["by-key", "by-md5"]


def test_and_groups_find_only_records_matching_every_group(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record("both", key="a.mxf", bucket="b1")
    server.add_record("other-bucket", key="a.mxf", bucket="b2")
    server.add_record("other-key", key="c.mxf", bucket="b1")

    found = list(
        records.search(Query.all_of(Term("s3_object_key", "a.mxf"), Term("s3_bucket", "b1")))
    )

    assert [r.fragment_id for r in found] == ["both"]


def test_passes_on_what_a_sloppy_search_engine_finds(make_records: MakeRecords) -> None:
    """The adapter does not filter: exactness is the use cases' job (contract §1)."""
    with FakeMediaHaven(sloppy=True) as server:
        server.add_record("exact", key="a.mxf")
        server.add_record("near-miss", key="A.MXF.bak")
        records = make_records(base_url=server.base_url)

        found = list(records.search(by_key("a.mxf")))

        assert [r.fragment_id for r in found] == ["exact", "near-miss"]


def test_works_with_a_base_url_ending_in_a_slash(
    server: FakeMediaHaven, make_records: MakeRecords
) -> None:
    server.add_record("frag-1", key="a.mxf")

    found = list(make_records(base_url=server.base_url + "/").search(by_key("a.mxf")))

    assert [r.fragment_id for r in found] == ["frag-1"]
    assert all(not r.path.startswith("//") for r in server.requests)


# -- tokens ----------------------------------------------------------------------------------


def test_asks_for_a_token_once_and_reuses_it(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record("frag-1", key="a.mxf")

    list(records.search(by_key("a.mxf")))
    records.add_relation("frag-1", "k98z0d4w1q_closedOt", "why")
    records.delete("frag-1", "why")

    assert server.token_requests == 1
    assert len(server.requests_to(PASSWORD_GRANT_PATH)) == 1


def test_asks_for_no_token_before_the_first_call(
    server: FakeMediaHaven, make_records: MakeRecords
) -> None:
    make_records()

    assert server.requests == []


def test_an_expired_token_is_refreshed_and_the_call_tried_once_more(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record("frag-1", key="a.mxf")
    list(records.search(by_key("a.mxf")))
    server.expire_tokens()

    found = list(records.search(by_key("a.mxf")))

    assert [r.fragment_id for r in found] == ["frag-1"]
    assert server.refresh_requests == 1
    assert len(server.requests_to(PASSWORD_GRANT_PATH)) == 1
    assert len(server.requests_to(RECORDS_PATH)) == 3  # ok, 401, ok


def test_a_refused_refresh_falls_back_to_a_new_login(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    list(records.search(by_key("a.mxf")))
    server.revoke_tokens()

    records.delete("frag-x", "gone")

    assert server.refresh_requests == 1
    assert len(server.requests_to(PASSWORD_GRANT_PATH)) == 2


def test_a_token_about_to_expire_is_renewed_before_the_call(
    server: FakeMediaHaven, records: MediaHavenRecords, clock: Clock
) -> None:
    list(records.search(by_key("a.mxf")))
    clock.now += server.expires_in - 20  # inside the 30 s margin

    list(records.search(by_key("a.mxf")))

    assert server.refresh_requests == 1
    assert [r.path for r in server.requests] == [
        PASSWORD_GRANT_PATH,
        RECORDS_PATH,
        REFRESH_GRANT_PATH,
        RECORDS_PATH,
    ]


@pytest.mark.parametrize("stale", ["refused by MediaHaven", "about to expire"])
def test_workers_needing_a_new_token_at_the_same_time_renew_it_once(
    server: FakeMediaHaven, records: MediaHavenRecords, clock: Clock, stale: str
) -> None:
    list(records.search(by_key("a.mxf")))
    if stale == "refused by MediaHaven":
        server.expire_tokens()  # every worker's search comes back 401
    else:
        clock.now += server.expires_in - 20  # inside the 30 s margin: every worker renews first
    server.latency = 0.1  # long enough for every worker to need the token before it is renewed

    answers = side_by_side(lambda n: list(records.search(by_key("a.mxf"))), workers=8)

    assert answers == [[]] * 8
    assert server.refresh_requests == 1
    assert len(server.requests_to(PASSWORD_GRANT_PATH)) == 1


def test_a_401_that_persists_with_a_fresh_token_is_transient(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.refuse_tokens = True

    with pytest.raises(ServiceUnavailable, match="401"):
        list(records.search(by_key("a.mxf")))

    assert len(server.requests_to(RECORDS_PATH)) == 2


def test_refused_credentials_are_transient_and_say_what_to_check(
    server: FakeMediaHaven, make_records: MakeRecords
) -> None:
    records = make_records(password="not-the-password")

    with pytest.raises(ServiceUnavailable, match="credentials") as failure:
        list(records.search(by_key("a.mxf")))

    assert "MEDIAHAVEN_API_USERNAME" in str(failure.value)
    assert failure.value.system is System.MEDIAHAVEN
    assert server.requests_to(RECORDS_PATH) == []


def test_a_token_endpoint_answering_503_is_tried_again(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.fail_next(PASSWORD_GRANT_PATH, Fault(503))

    assert list(records.search(by_key("a.mxf"))) == []
    assert len(sleeps) == 1


# -- transient failures --------------------------------------------------------------------


def test_a_503_is_tried_again_within_the_call(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.add_record("frag-1", key="a.mxf")
    server.fail_next(RECORDS_PATH, Fault(503), method="GET")

    found = list(records.search(by_key("a.mxf")))

    assert [r.fragment_id for r in found] == ["frag-1"]
    assert len(sleeps) == 1
    assert sum(sleeps) < 3


def test_a_503_that_persists_is_transient_after_three_tries(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.fail_next(RECORDS_PATH, Fault(503), Fault(502), Fault(500), method="GET")

    with pytest.raises(ServiceUnavailable, match="500"):
        list(records.search(by_key("a.mxf")))

    assert len(server.requests_to(RECORDS_PATH)) == 3
    assert len(sleeps) == 2
    assert sum(sleeps) < 3


def test_honours_retry_after_on_a_429(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.fail_next(RECORDS_PATH, Fault.too_many_requests(1.5))

    assert list(records.search(by_key("a.mxf"))) == []
    assert sleeps == [1.5]


def test_a_retry_after_beyond_the_cap_gives_up_at_once(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.fail_next(RECORDS_PATH, Fault.too_many_requests(120))

    with pytest.raises(ServiceUnavailable, match="Retry-After"):
        list(records.search(by_key("a.mxf")))

    assert sleeps == []
    assert len(server.requests_to(RECORDS_PATH)) == 1


def test_the_retry_after_cap_is_configurable(
    server: FakeMediaHaven, make_records: MakeRecords, sleeps: list[float]
) -> None:
    server.fail_next(RECORDS_PATH, Fault.too_many_requests(1))

    with pytest.raises(ServiceUnavailable, match="Retry-After"):
        list(make_records(max_retry_wait=0.5).search(by_key("a.mxf")))

    assert sleeps == []


def test_a_server_that_does_not_answer_in_time_is_transient_within_the_timeout(
    server: FakeMediaHaven, make_records: MakeRecords
) -> None:
    records = make_records(timeout=0.5)
    list(records.search(by_key("warm-up")))
    server.fail_next(RECORDS_PATH, Fault.slow(5))

    began = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="within"):
        list(records.search(by_key("a.mxf")))

    assert time.monotonic() - began < 0.5 + 1


def test_a_refused_connection_is_transient(make_records: MakeRecords, sleeps: list[float]) -> None:
    records = make_records(base_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(ServiceUnavailable, match="ConnectionError"):
        list(records.search(by_key("a.mxf")))

    assert len(sleeps) == 2


def test_an_answer_that_is_not_json_is_transient(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.fail_next(RECORDS_PATH, Fault(200, body=b"<html>maintenance</html>"))

    with pytest.raises(ServiceUnavailable, match="not JSON"):
        list(records.search(by_key("a.mxf")))


# -- permanent failures --------------------------------------------------------------------


def test_a_400_is_rejected_with_the_status_and_a_snippet_of_the_body(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.fail_next(RECORDS_PATH, Fault(400, body=b'{"Message": "field unknown: s3_objekt"}'))

    with pytest.raises(Rejected, match="400") as failure:
        list(records.search(by_key("a.mxf")))

    assert "field unknown: s3_objekt" in str(failure.value)
    assert failure.value.system is System.MEDIAHAVEN
    assert sleeps == []


def test_a_query_the_server_cannot_parse_is_rejected(
    server: FakeMediaHaven, session: requests.Session, records: MediaHavenRecords
) -> None:
    list(records.search(by_key("warm-up")))
    (token,) = server.issued_tokens

    answer = session.get(
        f"{server.base_url}{RECORDS_PATH}",
        params={"q": '+(s3_object_key:"unterminated)'},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=2,
    )

    assert answer.status_code == 400


def test_updating_an_unknown_record_is_rejected(records: MediaHavenRecords) -> None:
    with pytest.raises(Rejected, match="404"):
        records.add_relation("no-such-fragment", "k98z0d4w1q_closedOt", "why")


# -- update and delete ---------------------------------------------------------------------


def test_adds_a_relation_as_a_multipart_metadata_part_and_a_reason(
    server: FakeMediaHaven, records: MediaHavenRecords, examples: Path
) -> None:
    server.add_record("frag-1", is_fragment=True, pid="k98z0d4w1q")
    reason = "[s3-events-handler] Voeg relatie van subtitle toe"

    records.add_relation("frag-1", "k98z0d4w1q_closedOt", reason)

    (update,) = server.relations
    assert update.fragment_id == "frag-1"
    assert update.metadata == (examples / "relation-update.xml").read_bytes()
    assert update.metadata_content_type == "application/xml"
    assert update.reason == reason


def test_an_update_is_not_tried_again_within_the_call(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.add_record("frag-1")
    server.fail_next(RECORDS_PATH, Fault(503), method="POST")

    with pytest.raises(ServiceUnavailable, match="503"):
        records.add_relation("frag-1", "k98z0d4w1q_closedOt", "why")

    assert len(server.requests_to(RECORDS_PATH, "POST")) == 1
    assert server.relations == []
    assert sleeps == []


def test_an_update_refused_for_an_expired_token_is_sent_once_more(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record("frag-1")
    list(records.search(by_key("warm-up")))
    server.expire_tokens()

    records.add_relation("frag-1", "k98z0d4w1q_closedOt", "why")

    assert len(server.relations) == 1


def test_deletes_a_record_with_its_reason(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    server.add_record("frag-1", key="a.mxf")
    reason = 's3 delete-object for bucket: "b" and key: "a.mxf"'

    records.delete("frag-1", reason)

    assert server.deleted == [Deletion("frag-1", reason)]
    assert server.records == []


def test_deleting_a_record_that_is_already_gone_succeeds(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    records.delete("never-there", "why")

    assert server.deleted == []
    assert len(server.requests_to(RECORDS_PATH, "DELETE")) == 1


def test_a_delete_answered_503_is_tried_again(
    server: FakeMediaHaven, records: MediaHavenRecords, sleeps: list[float]
) -> None:
    server.add_record("frag-1")
    server.fail_next(RECORDS_PATH, Fault(503), method="DELETE")

    records.delete("frag-1", "why")

    assert [d.fragment_id for d in server.deleted] == ["frag-1"]
    assert len(sleeps) == 1


def test_quotes_a_fragment_id_as_one_path_segment(
    server: FakeMediaHaven, records: MediaHavenRecords
) -> None:
    odd = "a/b c?d#e%"
    server.add_record(odd)

    records.delete(odd, "why")

    assert [d.fragment_id for d in server.deleted] == [odd]
    (request,) = server.requests_to(RECORDS_PATH, "DELETE")
    assert request.path == f"{RECORDS_PATH}/a%2Fb%20c%3Fd%23e%25"


# -- secrets -------------------------------------------------------------------------------


def _echo_secrets(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    list(records.search(by_key("warm-up")))
    (token,) = server.issued_tokens
    echo = f"you sent {server.password} {server.client_secret} {token}".encode()
    server.fail_next(RECORDS_PATH, Fault(400, body=echo))
    list(records.search(by_key("a.mxf")))


def _refused_credentials(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    server.password = "changed-by-an-operator"
    list(records.search(by_key("a.mxf")))


def _persistent_401(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    list(records.search(by_key("warm-up")))
    server.refuse_tokens = True
    list(records.search(by_key("a.mxf")))


def _garbage(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    list(records.search(by_key("warm-up")))
    (token,) = server.issued_tokens
    server.fail_next(RECORDS_PATH, Fault(200, body=f"<p>{token} {server.password}".encode()))
    list(records.search(by_key("a.mxf")))


def _token_endpoint_down(server: FakeMediaHaven, records: MediaHavenRecords) -> None:
    server.fail_next(PASSWORD_GRANT_PATH, *[Fault(503, body=server.password.encode())] * 3)
    list(records.search(by_key("a.mxf")))


@pytest.mark.parametrize(
    "scenario",
    [_echo_secrets, _refused_credentials, _persistent_401, _garbage, _token_endpoint_down],
)
def test_secrets_never_appear_in_exception_messages_or_logs(
    server: FakeMediaHaven,
    records: MediaHavenRecords,
    caplog: pytest.LogCaptureFixture,
    scenario: Callable[[FakeMediaHaven, MediaHavenRecords], None],
) -> None:
    secrets = [server.password, server.client_secret]

    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises((ServiceUnavailable, Rejected)) as failure,
    ):
        scenario(server, records)

    secrets += server.issued_tokens + server.issued_refresh_tokens
    text = "".join(traceback.format_exception(failure.value))
    for secret in secrets:
        assert secret not in text
        assert secret not in caplog.text


def test_max_search_pages_bounds_the_searches_of_the_service(server: FakeMediaHaven) -> None:
    """The setting reaches the adapter the service is built with (100 results a page)."""
    for n in range(201):
        server.add_record(f"frag-{n:03d}", key="a.mxf")
    container = Container(
        settings=load_settings(
            REPO / "config.yml",
            {
                **REQUIRED,
                "MEDIAHAVEN_API_HOST": server.base_url,
                "MEDIAHAVEN_API_CLIENT_ID": server.client_id,
                "MEDIAHAVEN_API_CLIENT_SECRET": server.client_secret,
                "MEDIAHAVEN_API_USERNAME": server.username,
                "MEDIAHAVEN_API_PASSWD": server.password,
                "MAX_SEARCH_PAGES": "2",
            },
        )
    )
    try:
        with pytest.raises(ServiceUnavailable, match="search too broad: more than 2 pages"):
            list(container.records().search(by_key("a.mxf")))
    finally:
        container.shutdown_resources()
    assert len(server.requests_to(RECORDS_PATH, "GET")) == 2
