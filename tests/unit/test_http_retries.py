"""The one HTTP retry loop as a caller meets it: what is tried again, after how long, and
when a call gives up instead.

The adapters are built as the container builds them, on a double of `requests.Session`
(a real server adds nothing to these rules; `tests/integration/` has them against one)
and a `sleep` that only writes the pause down, so every pause is exact and costs nothing.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from pytest_mock import MockerFixture

from s3_events_handler.adapters import http_calls, mediahaven
from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.adapters.pid import PidWebService
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable
from s3_events_handler.domain.model import Query, Term

MEDIAHAVEN = "https://mediahaven.example"
PID_SERVICE = "https://pid.example/"
TIMEOUT = 7.0
TOKEN = {"access_token": "t0ken", "refresh_token": "refr3sh", "expires_in": 3600}
FOUND = {
    "Results": [{"Internal": {"FragmentId": "frag-1", "IsFragment": False}}],
    "TotalNrOfResults": 1,
    "StartIndex": 0,
    "NrOfResults": 1,
}
MINTED = [{"id": "k98z0d4w1q", "number": 1}]

Answer = requests.Response | requests.RequestException


def response(
    status: int, body: object = None, *, retry_after: str | None = None
) -> requests.Response:
    """A real answer, as requests builds it from the wire."""
    answer = requests.Response()
    answer.status_code = status
    if retry_after is not None:
        answer.headers["Retry-After"] = retry_after
    answer.raw = io.BytesIO(b"" if body is None else json.dumps(body).encode())
    return answer


class Wire:
    """The session double: a token to every token request, `answers` in turn to the rest.

    `calls` are those other requests (method, URL, timeout); `pauses`, what the retry
    loop slept, in order.
    """

    def __init__(self, mocker: MockerFixture, answers: Sequence[Answer]) -> None:
        self.session = mocker.create_autospec(requests.Session, instance=True)
        self.session.request.side_effect = self._answer
        self._answers = list(answers)
        self.calls: list[tuple[str, str, float]] = []
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def _answer(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        if "/auth/" in url:  # the token endpoints: every grant succeeds
            return response(200, TOKEN)
        self.calls.append((method, url, kwargs["timeout"]))
        assert self._answers, f"one request more than the test expected: {method} {url}"
        answer = self._answers.pop(0)
        if isinstance(answer, requests.RequestException):
            raise answer
        return answer


def records_on(wire: Wire) -> MediaHavenRecords:
    return MediaHavenRecords(
        session=wire.session,
        base_url=MEDIAHAVEN,
        client_id="client",
        client_secret="s3cret",
        username="user",
        password="passw0rd",
        timeout=TIMEOUT,
        sleep=wire.sleep,
    )


def search(records: MediaHavenRecords) -> list[str]:
    return [r.fragment_id for r in records.search(Query.any_of(Term("s3_object_key", "a.mxf")))]


def test_a_503_with_retry_after_is_tried_again_after_that_delay(mocker: MockerFixture) -> None:
    wire = Wire(mocker, [response(503, retry_after="1.5"), response(200, FOUND)])

    assert search(records_on(wire)) == ["frag-1"]
    assert wire.pauses == [1.5]


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_longer_than_one_call_may_wait_gives_up_at_once(
    mocker: MockerFixture, status: int
) -> None:
    wire = Wire(mocker, [response(status, retry_after="30")])

    with pytest.raises(ServiceUnavailable, match="Retry-After") as failure:
        search(records_on(wire))

    assert failure.value.retry_after == 30  # left to the retry queue
    assert wire.pauses == []
    assert len(wire.calls) == 1


def test_a_broken_connection_is_tried_again_after_each_backoff(mocker: MockerFixture) -> None:
    refused, reset = requests.ConnectionError("refused"), requests.ConnectionError("reset")
    wire = Wire(mocker, [refused, reset, response(200, FOUND)])

    assert search(records_on(wire)) == ["frag-1"]
    assert wire.pauses == list(mediahaven.BACKOFF_SECONDS)
    assert [timeout for _, _, timeout in wire.calls] == [TIMEOUT] * 3


def test_a_connection_that_stays_broken_gives_up_after_the_last_try(
    mocker: MockerFixture,
) -> None:
    wire = Wire(mocker, [requests.ConnectionError("refused")] * 3)

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        search(records_on(wire))

    assert len(wire.calls) == 3
    assert wire.pauses == list(mediahaven.BACKOFF_SECONDS)


def test_pauses_that_would_outlast_the_budget_end_the_call(mocker: MockerFixture) -> None:
    wire = Wire(mocker, [response(503, retry_after="2"), response(503, retry_after="2")])

    with pytest.raises(ServiceUnavailable, match="gave up after waiting 2 s"):
        search(records_on(wire))

    assert wire.pauses == [2.0]
    assert len(wire.calls) == 2


# Every failure another try may fix, by its status and Retry-After (None: a refused
# connection): no Retry-After, short ones that add up, one beyond the cap, a date.
FAILURES: list[tuple[int, str | None] | None] = [
    (503, None),
    (502, None),
    (429, None),
    (503, "0.25"),
    (429, "1.5"),
    (503, "2"),
    (503, "30"),
    (503, "Wed, 21 Oct 2015 07:28:00 GMT"),
    None,
]


def failure(kind: tuple[int, str | None] | None) -> Answer:
    if kind is None:
        return requests.ConnectionError("refused")
    status, retry_after = kind
    return response(status, retry_after=retry_after)


def test_the_pauses_of_one_call_never_add_up_to_more_than_the_budget(
    mocker: MockerFixture,
) -> None:
    # Only the first two failures make pauses: the third try is the last.
    waited = {}
    for first, second in itertools.product(FAILURES, repeat=2):
        wire = Wire(mocker, [failure(first), failure(second), response(503)])
        with pytest.raises(ServiceUnavailable):
            search(records_on(wire))
        waited[first, second] = sum(wire.pauses)

    assert {
        kinds: pauses
        for kinds, pauses in waited.items()
        if pauses > mediahaven.RETRY_BUDGET_SECONDS
    } == {}
    assert max(waited.values()) > 2  # some sequences do come close to the budget


def test_a_timeout_is_not_tried_again(mocker: MockerFixture) -> None:
    wire = Wire(mocker, [requests.Timeout("read timed out")])

    with pytest.raises(ServiceUnavailable, match=f"within {TIMEOUT:g} s"):
        search(records_on(wire))

    assert len(wire.calls) == 1
    assert wire.pauses == []


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_a_client_error_is_rejected_without_another_try(mocker: MockerFixture, status: int) -> None:
    wire = Wire(mocker, [response(status, {"message": "no"})])

    with pytest.raises(Rejected, match=str(status)):
        search(records_on(wire))

    assert len(wire.calls) == 1
    assert wire.pauses == []


@pytest.mark.parametrize(
    "failure", [response(503), requests.ConnectionError("reset")], ids=["503", "connection"]
)
def test_an_update_is_not_sent_again_within_the_call(
    mocker: MockerFixture, failure: Answer
) -> None:
    wire = Wire(mocker, [failure])

    with pytest.raises(ServiceUnavailable):
        records_on(wire).add_relation("frag-1", "essence-pid", "a collateral")

    assert [method for method, _, _ in wire.calls] == ["POST"]
    assert wire.pauses == []


def pids_on(wire: Wire) -> PidWebService:
    return PidWebService(session=wire.session, url=PID_SERVICE, timeout=TIMEOUT, sleep=wire.sleep)


def test_a_small_service_is_tried_again_after_its_own_backoff(mocker: MockerFixture) -> None:
    wire = Wire(mocker, [requests.ConnectionError("refused"), response(502), response(200, MINTED)])

    assert pids_on(wire).mint() == "k98z0d4w1q"
    assert wire.pauses == list(http_calls.BACKOFF_SECONDS)


def test_a_429_from_a_service_whose_retry_after_is_not_read_ends_the_call_at_once(
    mocker: MockerFixture,
) -> None:
    wire = Wire(mocker, [response(429, retry_after="1")])

    with pytest.raises(ServiceUnavailable, match="429"):
        pids_on(wire).mint()

    assert len(wire.calls) == 1
    assert wire.pauses == []
