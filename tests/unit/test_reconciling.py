"""How wide and how fast `reconcile` goes (application/reconciling.py): the bounded window
over the listing, the workers, and the rate limit on an injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from s3_events_handler.application.reconciling import RateLimit, bounded_map
from tests.support.clock import Clock


def test_no_more_than_the_workers_are_in_flight_and_the_window_bounds_what_is_taken() -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()
    taken = 0

    def items() -> Iterator[int]:
        nonlocal taken
        for n in range(200):
            taken += 1
            yield n

    def work(n: int) -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.001)
        with lock:
            in_flight -= 1
        return n * 2

    results = bounded_map(work, items(), workers=4)
    first = next(results)
    assert first == (0, 0)
    assert taken <= 8 + 1  # the window (twice the workers), not the 200
    rest = list(results)
    assert [r for _, r in rest] == [n * 2 for n in range(1, 200)]
    assert most <= 4


def test_the_rate_limit_spaces_starts_evenly() -> None:
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limit = RateLimit(50, clock=clock, sleep=sleep)
    for _ in range(5):
        limit.wait()  # the clock stands still: each waits a fiftieth of a second longer

    assert slept == pytest.approx([0.02, 0.04, 0.06, 0.08])
    clock.now += 1.0  # after a pause, the next one goes at once
    limit.wait()
    assert len(slept) == 4


def test_the_rate_limit_holds_across_threads() -> None:
    limit = RateLimit(200)
    starts: list[float] = []
    lock = threading.Lock()

    def go(_: int) -> None:
        limit.wait()
        with lock:
            starts.append(time.monotonic())

    list(bounded_map(go, range(40), workers=8))

    starts.sort()
    assert starts[-1] - starts[0] >= 39 / 200 * 0.95
