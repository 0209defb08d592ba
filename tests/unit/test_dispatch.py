"""The worker pool on real threads: one object's deliveries one at a time and in order, other
objects' side by side; the deliveries not started taken back (a lost channel's, or at a
stop) and never handled. That nothing starts after a stop is the consumer's
(`test_consumer.py`)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.dispatch import Job, Workers
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settlement
from s3_events_handler.application.messages import Done, Outcome
from s3_events_handler.domain.results import AlreadyArchived
from tests.unit.recording_channel import SETTINGS, RecordingChannel

DONE = Done(AlreadyArchived(key="clip.mxf"))
TIMEOUT = 10.0


@dataclass
class Span:
    tag: int
    began: float
    ended: float = 0.0


@dataclass
class Handling:
    """A handler that takes `seconds` and notes when it ran each delivery, in start order."""

    seconds: float = 0.05
    release: threading.Event | None = None
    """When set, each delivery waits for it first."""
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, received: Received) -> Outcome:
        span = Span(received.delivery_tag, time.monotonic())
        with self.lock:
            self.spans.append(span)
        if self.release is not None:
            self.release.wait(TIMEOUT)
        time.sleep(self.seconds)
        span.ended = time.monotonic()
        return DONE


class Pool:
    """A worker pool whose work is `handle`, noting each job when its work is done."""

    def __init__(self, handle: Callable[[Received], Outcome], workers: int) -> None:
        self.name = f"test-worker-{uuid.uuid4().hex[:8]}"
        self.workers = Workers(self._work, size=workers, name=self.name)
        self.channel = RecordingChannel()
        self.settlement = Settlement(self.channel, SETTINGS)
        self.handle = handle
        self.settled: list[Job] = []
        self.started: dict[int, float] = {}
        self._lock = threading.Lock()

    def _work(self, job: Job) -> None:
        self.started[job.delivery_tag] = time.monotonic()
        try:
            self.handle(job.received)
        finally:
            with self._lock:
                self.settled.append(job)

    def submit(self, tag: int, key: Hashable) -> None:
        received = Received(tag, pika.BasicProperties(), b"{}")
        self.workers.submit(Job(received, key, self.settlement))

    def settle_until(self, count: int) -> None:
        """Until `count` jobs are done, their keys freed."""
        assert wait_until(lambda: len(self.settled) >= count), "nothing finished"
        assert wait_until(lambda: not set(self.workers.in_hand()) & set(self.settled))

    def tags(self) -> list[int]:
        return [job.delivery_tag for job in self.settled]


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def overlapping(first: Span, second: Span) -> bool:
    return first.began < second.ended and second.began < first.ended


def test_deliveries_for_one_object_run_one_at_a_time_in_arrival_order_others_side_by_side() -> None:
    handling = Handling()
    pool = Pool(handling, workers=8)
    keys = {"a": [1, 4, 7, 10], "b": [2, 5, 8, 11], "c": [3, 6, 9, 12]}  # interleaved arrivals
    for tag in range(1, 13):
        pool.submit(tag, next(key for key, tags in keys.items() if tag in tags))
    pool.settle_until(12)

    by_tag = {span.tag: span for span in handling.spans}
    for tags in keys.values():
        assert [tag for tag in pool.tags() if tag in tags] == tags
        for earlier, later in itertools.pairwise(tags):
            assert by_tag[earlier].ended <= by_tag[later].began  # never at the same time
    assert overlapping(by_tag[1], by_tag[2]) and overlapping(by_tag[2], by_tag[3])


def test_no_more_workers_than_asked_for_and_each_started_only_when_needed() -> None:
    handling = Handling(seconds=0.1)
    pool = Pool(handling, workers=3)
    for tag in range(1, 10):
        pool.submit(tag, ("bucket", f"key-{tag}"))
    pool.settle_until(9)

    names = {thread.name for thread in threading.enumerate() if thread.name.startswith(pool.name)}
    assert names == {f"{pool.name}-1", f"{pool.name}-2", f"{pool.name}-3"}
    starts = sorted(span.began for span in handling.spans)
    assert starts[3] - starts[0] >= 0.09  # the fourth waited for a worker
    pool.workers.shutdown()


def test_a_lost_channels_deliveries_not_started_yet_are_taken_back_not_handled() -> None:
    release = threading.Event()
    handling = Handling(seconds=0, release=release)
    pool = Pool(handling, workers=1)
    pool.submit(1, "a")  # in hand when the channel is lost
    pool.submit(2, "b")  # queued for the one worker
    pool.submit(3, "a")  # waiting behind 1
    assert wait_until(lambda: 1 in pool.started)
    dropped = pool.workers.take_unstarted()  # what the consumer does when the channel is lost
    pool.submit(4, "a")  # the redelivered copy of 1: waits for the stale one
    release.set()
    pool.settle_until(2)

    assert [job.delivery_tag for job in dropped] == [2, 3]
    assert pool.tags() == [1, 4]  # 1 was in a handler already; 4 came on the new channel
    first, copy = handling.spans
    assert copy.began >= first.ended
    assert pool.workers.in_hand() == []


def test_work_that_raises_frees_its_key() -> None:
    calls: list[int] = []

    def handle(received: Received) -> Outcome:
        calls.append(received.delivery_tag)
        if received.delivery_tag == 1:
            raise RuntimeError("the handler broke")
        return DONE

    pool = Pool(handle, workers=2)
    pool.submit(1, "a")
    pool.submit(2, "a")
    pool.settle_until(2)

    assert pool.tags() == [1, 2] and calls == [1, 2]
    assert pool.workers.in_hand() == []


def test_every_job_not_started_is_taken_back_in_delivery_order() -> None:
    started: list[int] = []
    release = threading.Event()

    def handle(received: Received) -> Outcome:
        started.append(received.delivery_tag)
        release.wait(TIMEOUT)
        return DONE

    pool = Pool(handle, workers=2)
    for tag, key in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "d")]:
        pool.submit(tag, key)
    # 1 and 2 in the two workers; 4 and 6 queued for a worker; 3 and 5 waiting behind 1.
    assert wait_until(lambda: sorted(started) == [1, 2])

    assert [job.delivery_tag for job in pool.workers.take_unstarted()] == [3, 4, 5, 6]
    assert sorted(job.delivery_tag for job in pool.workers.in_hand()) == [1, 2]
    release.set()
    pool.settle_until(2)
    assert sorted(started) == [1, 2]
    assert pool.workers.in_hand() == []


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Workers(lambda job: None, size=0)
