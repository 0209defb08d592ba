"""The PID adapters against a fake PID service over real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from s3_events_handler.adapters.http_calls import BACKOFF_SECONDS
from s3_events_handler.adapters.pid import (
    LocalPids,
    PidWebService,
    accepts_connections,
    uses_pid_service,
)
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.rules import is_valid_pid
from tests.support.http_stubs import Canned, FakePidService

TIMEOUT = 5.0
SHORT_TIMEOUT = 0.3


@pytest.fixture
def fake() -> Iterator[FakePidService]:
    with FakePidService() as fake:
        yield fake


@pytest.fixture
def pids(fake: FakePidService, session: requests.Session, sleeps: list[float]) -> PidWebService:
    return PidWebService(session=session, url=fake.url, timeout=TIMEOUT, sleep=sleeps.append)


def test_a_minted_pid_is_the_one_the_service_handed_out(
    pids: PidWebService, fake: FakePidService
) -> None:
    pid = pids.mint()

    assert is_valid_pid(pid)
    assert fake.minted == [pid]
    assert fake.requests[0].method == "GET"


@pytest.mark.parametrize(
    "body",
    [
        [{"id": "K98Z0D4W1Q", "number": 1}],
        [{"id": "k98z0d4w1", "number": 1}],
        [{"id": "k98z0d4w1q0", "number": 1}],
        [{"id": "k98z0d4w1-", "number": 1}],
        [{"id": 1234567890, "number": 1}],
        [{"number": 1}],
        [],
        {"id": "k98z0d4w1q"},
        "k98z0d4w1q",
        b"null",
    ],
    ids=repr,
)
def test_an_answer_without_a_valid_pid_is_a_transient_failure(
    pids: PidWebService, fake: FakePidService, body: object
) -> None:
    fake.queue(Canned(body=body))

    with pytest.raises(ServiceUnavailable, match="no valid PID"):
        pids.mint()


def test_an_answer_that_is_not_json_is_a_transient_failure(
    pids: PidWebService, fake: FakePidService
) -> None:
    fake.queue(Canned(body=b"<html>gateway</html>"))

    with pytest.raises(ServiceUnavailable, match="other than JSON"):
        pids.mint()


def test_a_503_followed_by_a_pid_succeeds_within_one_call(
    pids: PidWebService, fake: FakePidService, sleeps: list[float]
) -> None:
    fake.queue(Canned(status=503), Canned(status=502))

    pid = pids.mint()

    assert fake.minted == [pid]
    assert fake.request_count == 3
    assert sleeps == list(BACKOFF_SECONDS)


def test_a_service_that_keeps_failing_gives_up_after_three_tries_in_under_two_seconds(
    pids: PidWebService, fake: FakePidService, sleeps: list[float]
) -> None:
    fake.queue(*[Canned(status=500)] * 3)

    with pytest.raises(ServiceUnavailable, match="500") as raised:
        pids.mint()
    assert raised.value.system is System.PID

    assert fake.request_count == 3
    assert sum(sleeps) < 2


@pytest.mark.parametrize("status", [404, 429])
def test_a_client_error_is_a_transient_failure_without_trying_again(
    pids: PidWebService, fake: FakePidService, status: int
) -> None:
    fake.queue(Canned(status=status))

    with pytest.raises(ServiceUnavailable, match=str(status)):
        pids.mint()

    assert fake.request_count == 1


def test_a_service_that_is_down_is_a_transient_failure(
    pids: PidWebService, fake: FakePidService, sleeps: list[float]
) -> None:
    fake.stop()

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        pids.mint()

    assert len(sleeps) == len(BACKOFF_SECONDS)


def test_a_service_slower_than_the_timeout_fails_soon_after_the_timeout(
    fake: FakePidService, session: requests.Session
) -> None:
    pids = PidWebService(session=session, url=fake.url, timeout=SHORT_TIMEOUT, sleep=time.sleep)
    fake.queue(Canned(delay=SHORT_TIMEOUT + 3))
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable, match="timed out"):
        pids.mint()

    assert time.monotonic() - started < SHORT_TIMEOUT + 1
    assert fake.request_count == 1


def test_local_pids_have_the_form_of_real_ones_and_do_not_repeat() -> None:
    local = LocalPids()

    minted = [local.mint() for _ in range(1000)]

    assert all(is_valid_pid(pid) for pid in minted)
    assert len(set(minted)) == 1000


@pytest.mark.parametrize(
    ("environment", "expected"),
    [("production", True), ("qas", True), ("int", False), ("dev", False), ("", False)],
)
def test_only_production_and_qas_use_the_pid_service(environment: str, expected: bool) -> None:
    assert uses_pid_service(environment) is expected


def test_the_service_can_be_checked_without_minting_a_pid(
    fake: FakePidService, pids: PidWebService
) -> None:
    assert accepts_connections(fake.url, timeout=TIMEOUT) == f"127.0.0.1:{urlsplit(fake.url).port}"
    # The check's connection was over before this request began: only this one mints.
    pids.mint()
    assert fake.request_count == 1 and len(fake.minted) == 1


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:1/pid", "nothing accepts connections at 127.0.0.1:1"),
        ("http:///pid", "names no host"),
        ("http://127.0.0.1:port/pid", "invalid port"),
    ],
)
def test_a_service_nobody_answers_for_is_named(url: str, why: str) -> None:
    with pytest.raises(ServiceUnavailable, match=why):
        accepts_connections(url, timeout=TIMEOUT)


def test_a_redirect_is_followed_as_requests_follows_it(
    pids: PidWebService, fake: FakePidService
) -> None:
    fake.queue(Canned(status=302, headers=(("Location", "/moved"),)))

    pid = pids.mint()

    assert fake.minted == [pid]
    assert [request.path for request in fake.requests] == ["/", "/moved"]


def test_a_cookie_the_service_sets_goes_back_with_the_next_calls(
    pids: PidWebService, fake: FakePidService
) -> None:
    """A load balancer in front of a service may keep a client on one node by a cookie."""
    fake.queue(Canned(headers=(("Set-Cookie", "node=pid-2; Path=/"),)))

    pids.mint()
    pids.mint()
    pids.mint()

    assert [request.headers.get("Cookie") for request in fake.requests] == [
        None,
        "node=pid-2",
        "node=pid-2",
    ]
