"""The dispatcher on real threads: one object's deliveries one at a time and in order, other
objects' side by side; a lost channel's deliveries never handled or settled; once closed,
nothing started."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.dispatch import Dispatcher, Job
from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.application.messages import Done, Outcome
from s3_events_handler.domain.results import AlreadyArchived

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
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, received: Received) -> Outcome:
        span = Span(received.delivery_tag, time.monotonic())
        with self.lock:
            self.spans.append(span)
        time.sleep(self.seconds)
        span.ended = time.monotonic()
        return DONE


class IoThread:
    """What the consumer's I/O thread does with a dispatcher: settle what finished, release it."""

    def __init__(self, handle: Callable[[Received], Outcome], workers: int) -> None:
        self.woken = threading.Event()
        self.name = f"test-worker-{uuid.uuid4().hex[:8]}"
        self.dispatcher = Dispatcher(handle, workers=workers, wake=self.woken.set, name=self.name)
        self.channel = self.dispatcher.new_channel()
        self.settled: list[Job] = []

    def submit(self, tag: int, key: Hashable) -> None:
        received = Received(tag, pika.BasicProperties(), b"{}")
        self.dispatcher.submit(Job(received, key, self.channel))

    def settle_until(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(self.settled) < count:
            assert self.woken.wait(max(0.0, deadline - time.monotonic())), "nothing finished"
            self.woken.clear()
            for job in self.dispatcher.finished():
                self.settled.append(job)
                self.dispatcher.release(job)

    def tags(self, *, handled: bool) -> list[int]:
        return [job.delivery_tag for job in self.settled if job.skipped != handled]


def waiting_for(release: threading.Event) -> Callable[[Received], Outcome]:
    """A handler that holds every delivery until `release` is set."""

    def handle(received: Received) -> Outcome:
        release.wait(TIMEOUT)
        return DONE

    return handle


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
    io = IoThread(handling, workers=8)
    keys = {"a": [1, 4, 7, 10], "b": [2, 5, 8, 11], "c": [3, 6, 9, 12]}  # interleaved arrivals
    for tag in range(1, 13):
        io.submit(tag, next(key for key, tags in keys.items() if tag in tags))
    io.settle_until(12)

    by_tag = {span.tag: span for span in handling.spans}
    for tags in keys.values():
        assert [tag for tag in io.tags(handled=True) if tag in tags] == tags
        for earlier, later in itertools.pairwise(tags):
            assert by_tag[earlier].ended <= by_tag[later].began  # never at the same time
    assert overlapping(by_tag[1], by_tag[2]) and overlapping(by_tag[2], by_tag[3])


def test_no_more_workers_than_asked_for_and_each_started_only_when_needed() -> None:
    handling = Handling(seconds=0.1)
    io = IoThread(handling, workers=3)
    for tag in range(1, 10):
        io.submit(tag, ("bucket", f"key-{tag}"))
    io.settle_until(9)

    names = {thread.name for thread in threading.enumerate() if thread.name.startswith(io.name)}
    assert names == {f"{io.name}-1", f"{io.name}-2", f"{io.name}-3"}
    starts = sorted(span.began for span in handling.spans)
    assert starts[3] - starts[0] >= 0.09  # the fourth waited for a worker
    io.dispatcher.shutdown()


def test_a_lost_channels_deliveries_not_started_yet_are_skipped_not_handled() -> None:
    release = threading.Event()
    io = IoThread(waiting_for(release), workers=1)
    io.submit(1, "a")  # in hand when the channel is lost
    io.submit(2, "b")  # queued for the one worker
    io.submit(3, "a")  # waiting behind 1
    io.channel = io.dispatcher.new_channel()
    io.submit(4, "a")  # the redelivered copy of 1: waits for the stale one
    release.set()
    io.settle_until(4)

    assert [job.delivery_tag for job in io.settled] == [1, 2, 3, 4]
    assert io.tags(handled=True) == [1, 4]  # 1 was in a handler already; 4 is current
    assert [io.dispatcher.is_current(job) for job in io.settled] == [False, False, False, True]


def test_a_handler_that_raises_hands_its_error_back_and_frees_its_key() -> None:
    calls: list[int] = []

    def handle(received: Received) -> Outcome:
        calls.append(received.delivery_tag)
        if received.delivery_tag == 1:
            raise RuntimeError("the handler broke")
        return DONE

    io = IoThread(handle, workers=2)
    io.submit(1, "a")
    io.submit(2, "a")
    io.settle_until(2)

    first, second = io.settled
    assert isinstance(first.error, RuntimeError) and first.outcome is None
    assert second.outcome == DONE and calls == [1, 2]


def test_once_closed_every_job_not_started_is_taken_back_in_delivery_order() -> None:
    started: list[int] = []
    release = threading.Event()

    def handle(received: Received) -> Outcome:
        started.append(received.delivery_tag)
        release.wait(TIMEOUT)
        return DONE

    io = IoThread(handle, workers=2)
    for tag, key in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "d")]:
        io.submit(tag, key)
    # 1 and 2 in the two workers; 4 and 6 queued for a worker; 3 and 5 waiting behind 1.
    assert wait_until(lambda: sorted(started) == [1, 2])

    io.dispatcher.close()
    assert [job.delivery_tag for job in io.dispatcher.take_unstarted()] == [3, 4, 5, 6]
    assert sorted(job.delivery_tag for job in io.dispatcher.in_progress()) == [1, 2]
    release.set()
    io.settle_until(2)
    assert sorted(started) == [1, 2]
    assert io.dispatcher.in_progress() == []


def test_a_job_a_worker_takes_after_close_comes_back_skipped_never_started() -> None:
    handling = Handling()
    io = IoThread(handling, workers=2)
    io.dispatcher.close()
    io.submit(1, "a")
    io.submit(2, "b")
    io.settle_until(2)

    assert handling.spans == []
    assert io.tags(handled=False) == [1, 2]
    assert all(io.dispatcher.is_current(job) for job in io.settled)  # for the consumer to reject


def test_no_job_starts_once_close_returned_whatever_the_workers_are_doing() -> None:
    """Workers taking jobs as fast as they can while the dispatcher closes: each job either
    began before `close()` returned, or was never started and comes back (skipped by a
    worker that took it, or taken back by `take_unstarted`)."""
    for before_close, before_taking in itertools.product((0, 0.002, 0.005), (0, 0.0002, 0.002)):
        handling = Handling(seconds=0.0002)
        io = IoThread(handling, workers=4)
        for tag in range(1, 201):
            io.submit(tag, ("bucket", f"key-{tag}"))
        time.sleep(before_close)
        io.dispatcher.close()
        closed = time.monotonic()
        if before_taking:  # else taken back before the workers can take many
            time.sleep(before_taking)
        unstarted = [job.delivery_tag for job in io.dispatcher.take_unstarted()]
        io.settle_until(200 - len(unstarted))
        io.dispatcher.shutdown()

        assert all(span.began < closed for span in handling.spans)
        handled, skipped = io.tags(handled=True), io.tags(handled=False)
        assert sorted(span.tag for span in handling.spans) == sorted(handled)
        assert sorted([*handled, *skipped, *unstarted]) == list(range(1, 201))  # each once


def test_a_dispatcher_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Dispatcher(lambda received: DONE, workers=0, wake=lambda: None)


def test_a_jobs_time_runs_from_when_a_worker_started_it_not_from_its_delivery() -> None:
    """The duration a metric shows is the event's work: not its wait behind its object."""
    handling = Handling(seconds=0.2)
    io = IoThread(handling, workers=2)
    io.submit(1, "one object")
    io.submit(2, "one object")  # waits for the first
    io.settle_until(2)
    first, second = sorted(io.settled, key=lambda job: job.delivery_tag)
    began = {span.tag: span.began for span in handling.spans}
    assert second.started >= first.started + 0.2  # not when it was delivered
    assert abs(second.started - began[2]) < 0.05
