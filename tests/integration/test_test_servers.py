"""The HTTP fakes' added latency and kept-alive connections, which the bench relies on."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.amqp import wait_until
from tests.support.http_stubs import FakeOrganisationsApi, FakePidService
from tests.support.loopback import LOOPBACK, LoopbackHttpServer
from tests.support.mediahaven_server import FakeMediaHaven

LATENCY = 0.3
CONCURRENT = 4

FAKES: dict[str, Callable[[float], LoopbackHttpServer]] = {
    "mediahaven": lambda latency: FakeMediaHaven(latency=latency),
    "pid": lambda latency: FakePidService(latency=latency),
    "organisations": lambda latency: FakeOrganisationsApi(latency=latency, keep_alive=True),
}


def _timed_get(url: str) -> float:
    started = time.monotonic()
    requests.get(url, timeout=10)
    return time.monotonic() - started


@pytest.mark.parametrize("make", FAKES.values(), ids=FAKES.keys())
def test_concurrent_requests_each_wait_their_own_latency_side_by_side(
    make: Callable[[float], LoopbackHttpServer],
) -> None:
    with make(LATENCY) as fake, ThreadPoolExecutor(CONCURRENT) as pool:
        started = time.monotonic()
        each = list(pool.map(_timed_get, [fake.url] * CONCURRENT))
        together = time.monotonic() - started

    assert min(each) >= LATENCY
    # One after another they would take CONCURRENT * LATENCY.
    assert together < (CONCURRENT - 1) * LATENCY


def test_without_latency_a_fake_answers_at_once() -> None:
    with FakePidService() as fake:
        assert fake.latency == 0
        assert _timed_get(fake.url) < LATENCY


def test_a_latency_can_be_changed_while_the_fake_runs() -> None:
    with FakePidService() as fake:
        fake.latency = LATENCY
        assert _timed_get(fake.url) >= LATENCY


def test_stopping_cuts_a_latency_short() -> None:
    fake = FakeMediaHaven(latency=30).start()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(requests.get, fake.url, timeout=10)
        assert wait_until(lambda: len(fake.requests) == 1)  # in, waiting out its latency
        started = time.monotonic()
        fake.stop()
        with pytest.raises(requests.ConnectionError):
            waiting.result()
    assert time.monotonic() - started < 5


def test_a_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        FakePidService(latency=-1)


@pytest.mark.parametrize("keep_alive", [False, True])
def test_a_stub_keeps_its_connection_open_only_when_asked(keep_alive: bool) -> None:
    with FakePidService(keep_alive=keep_alive) as fake:
        connection = http.client.HTTPConnection(LOOPBACK, fake.port, timeout=10)
        try:
            kept = []
            for _ in range(2):
                connection.request("GET", "/")
                assert connection.getresponse().read()
                kept.append(connection.sock is not None)  # http.client closes what will close
        finally:
            connection.close()

    assert kept == [keep_alive, keep_alive]
    assert len(fake.minted) == 2
