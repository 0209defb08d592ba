"""The Organisations adapters against a fake Organisations API over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from s3_events_handler.adapters.http_calls import BACKOFF_SECONDS
from s3_events_handler.adapters.organisations import CachedOrganisations, OrganisationsApi
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable, System
from tests.support.clock import Clock
from tests.support.http_stubs import Canned, FakeOrganisationsApi
from tests.support.threads import side_by_side

TIMEOUT = 5.0
SHORT_TIMEOUT = 0.3
VRT = "OR-rf5kf25"
NAMELESS = "OR-nul1abl"
UNKNOWN = "OR-0000000"


@pytest.fixture
def fake() -> Iterator[FakeOrganisationsApi]:
    with FakeOrganisationsApi({VRT: "VRT", NAMELESS: None}) as fake:
        yield fake
    assert fake.invalid == [], "the adapter sent a request that is not a proper lookup"


@pytest.fixture
def api(
    fake: FakeOrganisationsApi, session: requests.Session, sleeps: list[float]
) -> OrganisationsApi:
    return OrganisationsApi(session=session, url=fake.url, timeout=TIMEOUT, sleep=sleeps.append)


def test_the_cp_name_is_the_organisations_mam_label(api: OrganisationsApi) -> None:
    assert api.cp_name(VRT) == "VRT"


def test_the_or_id_is_sent_as_a_graphql_variable_not_pasted_into_the_query(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    api.cp_name(VRT)

    assert fake.variables == [{"id": VRT}]
    body = fake.requests[0].json()
    assert VRT not in body["query"]
    assert fake.requests[0].headers["Content-Type"] == "application/json"


def test_an_or_id_that_would_break_a_pasted_query_still_travels_intact(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    hostile = 'OR-") { x } #'
    fake.labels[hostile] = "ODD"

    assert api.cp_name(hostile) == "ODD"
    assert fake.looked_up == [hostile]


def test_an_unknown_organisation_is_rejected_naming_the_or_id(api: OrganisationsApi) -> None:
    with pytest.raises(Rejected, match=UNKNOWN) as raised:
        api.cp_name(UNKNOWN)
    assert raised.value.system is System.ORGANISATIONS


def test_an_organisation_with_a_null_label_is_rejected(api: OrganisationsApi) -> None:
    with pytest.raises(Rejected, match=NAMELESS):
        api.cp_name(NAMELESS)


@pytest.mark.parametrize("label", ["", "  "])
def test_an_organisation_with_an_empty_label_is_rejected(
    api: OrganisationsApi, fake: FakeOrganisationsApi, label: str
) -> None:
    fake.labels[VRT] = label

    with pytest.raises(Rejected, match=VRT):
        api.cp_name(VRT)


@pytest.mark.parametrize(
    "body",
    [
        {"errors": [{"message": "internal error"}], "data": None},
        {"data": None},
        {"data": {"organizations": None}},
        {"data": {"organizations": [{"mam_label": 42}]}},
        [],
        b"<html>gateway</html>",
    ],
    ids=repr,
)
def test_an_answer_that_makes_no_sense_is_a_transient_failure(
    api: OrganisationsApi, fake: FakeOrganisationsApi, body: object
) -> None:
    fake.queue(Canned(body=body))

    with pytest.raises(ServiceUnavailable, match=VRT):
        api.cp_name(VRT)


def test_a_503_followed_by_an_answer_succeeds_within_one_call(
    api: OrganisationsApi, fake: FakeOrganisationsApi, sleeps: list[float]
) -> None:
    fake.queue(Canned(status=503))

    assert api.cp_name(VRT) == "VRT"
    assert fake.request_count == 2
    assert sleeps == [BACKOFF_SECONDS[0]]


def test_an_api_that_keeps_answering_503_is_a_transient_failure_after_three_tries(
    api: OrganisationsApi, fake: FakeOrganisationsApi, sleeps: list[float]
) -> None:
    fake.queue(*[Canned(status=503)] * 3)

    with pytest.raises(ServiceUnavailable, match="503") as raised:
        api.cp_name(VRT)
    assert raised.value.system is System.ORGANISATIONS

    assert fake.request_count == 3
    assert sum(sleeps) < 2


@pytest.mark.parametrize("status", [401, 403, 429])
def test_refused_credentials_and_throttling_are_transient_left_to_the_retry_queue(
    api: OrganisationsApi, fake: FakeOrganisationsApi, status: int
) -> None:
    """An operator fixes the credentials or the limit; the events wait, none is dead-lettered."""
    fake.queue(Canned(status=status))

    with pytest.raises(ServiceUnavailable, match=str(status)):
        api.cp_name(VRT)

    assert fake.request_count == 1


@pytest.mark.parametrize("status", [400, 404])
def test_another_client_error_is_rejected(
    api: OrganisationsApi, fake: FakeOrganisationsApi, status: int
) -> None:
    fake.queue(Canned(status=status))

    with pytest.raises(Rejected, match=str(status)):
        api.cp_name(VRT)


def test_an_api_that_is_down_is_a_transient_failure(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    fake.stop()

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        api.cp_name(VRT)


def test_an_api_slower_than_the_timeout_fails_soon_after_the_timeout(
    fake: FakeOrganisationsApi, session: requests.Session
) -> None:
    api = OrganisationsApi(session=session, url=fake.url, timeout=SHORT_TIMEOUT, sleep=time.sleep)
    fake.queue(Canned(delay=SHORT_TIMEOUT + 3))
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable, match="timed out"):
        api.cp_name(VRT)

    assert time.monotonic() - started < SHORT_TIMEOUT + 1
    assert fake.request_count == 1


def test_the_cache_answers_a_second_lookup_without_asking_the_api(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    assert cached.cp_name(VRT) == "VRT"
    assert cached.cp_name(VRT) == "VRT"
    assert fake.request_count == 1


def test_the_cache_keeps_each_or_id_apart(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    fake.labels["OR-abcdefg"] = "Other"
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    assert cached.cp_name(VRT) == "VRT"
    assert cached.cp_name("OR-abcdefg") == "Other"
    assert fake.looked_up == [VRT, "OR-abcdefg"]


def test_a_cached_label_is_looked_up_again_once_the_ttl_has_passed(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    clock = Clock()
    cached = CachedOrganisations(api, ttl_seconds=60, clock=clock)
    cached.cp_name(VRT)
    fake.labels[VRT] = "VRT-renamed"

    clock.now += 59.9
    assert cached.cp_name(VRT) == "VRT"
    clock.now += 0.1
    assert cached.cp_name(VRT) == "VRT-renamed"
    assert fake.request_count == 2


@pytest.mark.parametrize(
    ("failures", "error"),
    [([Canned(status=503)] * 3, ServiceUnavailable), ([Canned(status=404)], Rejected)],
)
def test_the_cache_does_not_remember_a_failure(
    api: OrganisationsApi,
    fake: FakeOrganisationsApi,
    failures: list[Canned],
    error: type[Exception],
) -> None:
    fake.queue(*failures)
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    with pytest.raises(error):
        cached.cp_name(VRT)
    assert cached.cp_name(VRT) == "VRT"


def test_the_cache_does_not_remember_an_organisation_without_a_label(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    with pytest.raises(Rejected):
        cached.cp_name(UNKNOWN)
    fake.labels[UNKNOWN] = "NEW"
    assert cached.cp_name(UNKNOWN) == "NEW"


def test_workers_missing_the_same_label_wait_for_one_lookup(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    fake.latency = 0.2  # long enough for every worker to miss the cache while it is asked
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    assert side_by_side(lambda n: cached.cp_name(VRT), workers=8) == ["VRT"] * 8
    assert fake.request_count == 1


def test_workers_waiting_for_a_failed_lookup_share_the_failure_which_is_not_remembered(
    api: OrganisationsApi, fake: FakeOrganisationsApi
) -> None:
    fake.latency = 0.2
    fake.queue(Canned(status=404))
    cached = CachedOrganisations(api, ttl_seconds=60, clock=Clock())

    answers = side_by_side(lambda n: cached.cp_name(VRT), workers=8)
    assert all(isinstance(answer, Rejected) for answer in answers)
    assert fake.request_count == 1
    assert cached.cp_name(VRT) == "VRT"  # asked again
