"""Handing deliveries to worker threads: several at once, one at a time per object.

The consumer's I/O thread owns the broker connection and everything here but the
workers' own loop: it submits each delivery, picks up the finished ones and settles
them, then releases them, which starts the next delivery waiting for the same object
(`application.ordering.KeyedQueue`). So two events about one object are never handled
at the same time, and are settled in the order they arrived.

A delivery belongs to the channel it came on: its tag means nothing on another one.
Each job remembers its channel; once the consumer opened a new one, a job of an old
one is stale: a worker skips it if it has not started it, and the consumer drops
its outcome (the broker redelivers the message on the new channel).

Once the consumer stops, no job starts (contract §6): `close()` makes the workers skip every
job they take from then on, and `take_unstarted()` gives the I/O thread the jobs no
worker took yet, so that it hands them all back to the broker at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.application.messages import Outcome
from s3_events_handler.application.ordering import KeyedQueue

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Job:
    """One delivery on its way through the workers, and what became of it."""

    received: Received
    key: Hashable
    """Jobs of one key are handled one at a time, in order (`ordering_key`)."""
    channel: int
    """The consumer's number of the channel it came on."""
    outcome: Outcome | None = None
    error: BaseException | None = None
    """What the handler raised instead of returning an outcome."""
    skipped: bool = False
    """Not handled at all: stale, or taken by a worker after the dispatcher closed."""
    started: float = field(default_factory=time.monotonic)
    """When a worker started it (`time.monotonic`): an event's duration runs from here, not
    from its delivery, which may have waited behind another event of its object."""

    @property
    def delivery_tag(self) -> int:
        return self.received.delivery_tag


class Dispatcher:
    """Runs `handle` for each submitted job on up to `workers` threads, in order per key.

    Worker threads are started as they are needed and are daemons: a handler stuck
    in a call cannot keep the process from exiting once the consumer gave up on it.
    Everything but the workers' loop is for the I/O thread only.
    """

    def __init__(
        self,
        handle: Callable[[Received], Outcome],
        *,
        workers: int,
        wake: Callable[[], None],
        name: str = "worker",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1: {workers}")
        self._handle = handle
        self._size = workers
        self._wake = wake
        self._name = name
        self._keys: KeyedQueue[Job] = KeyedQueue()
        self._in_progress: dict[Job, None] = {}  # in submission order
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._finished: deque[Job] = deque()
        self._woken = False  # the I/O thread was woken and has not looked at `_finished` since
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._channel = 0
        self._closed = False
        # Re-entrant: `close()` may run in a signal handler that interrupted `close()`.
        self._closing = threading.RLock()

    @property
    def workers(self) -> int:
        return self._size

    def new_channel(self) -> int:
        """The number of the channel deliveries come on from now on; older jobs are stale."""
        self._channel += 1
        return self._channel

    def is_current(self, job: Job) -> bool:
        return job.channel == self._channel

    def submit(self, job: Job) -> None:
        """Start `job` now, or once the job of its key before it is released."""
        if self._keys.admit(job.key, job):
            self._start(job)

    def finished(self) -> Iterator[Job]:
        """The jobs whose handler returned (or raised, or which were skipped) so far."""
        self._woken = False  # before looking: a job finished after this wakes the I/O thread
        while self._finished:
            yield self._finished.popleft()

    def release(self, job: Job) -> None:
        """`job` is settled (or dropped): the next job of its key may start."""
        del self._in_progress[job]
        following = self._keys.release(job.key)
        if following is not None:
            self._start(following)

    def close(self) -> None:
        """No job starts from now on: a worker hands back each job it takes, skipped.

        Safe from any thread and in a signal handler: it only sets a flag, under the lock
        a worker holds while it decides whether to start a job, so once this returned no
        worker can start one.
        """
        with self._closing:
            self._closed = True

    def take_unstarted(self) -> list[Job]:
        """After `close()`: the jobs no worker started, in delivery order, to hand back.

        Those waiting behind another job of their key, and those queued for a worker
        (admitted, their key held: released here). A job a worker takes meanwhile comes
        back from `finished()`, skipped.
        """
        unstarted = self._keys.take_waiting()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # a worker's signal to end, from `shutdown()`: not ours to take
                self._jobs.put(None)
                break
            unstarted.append(job)
            self.release(job)
        return sorted(unstarted, key=lambda job: job.delivery_tag)

    def in_progress(self) -> list[Job]:
        """Started and not released yet (the handler may be done): the jobs in hand."""
        return list(self._in_progress)

    @property
    def in_hand(self) -> int:
        """How many jobs `in_progress` holds; safe to read from any thread."""
        return len(self._in_progress)

    def shutdown(self) -> None:
        """Let every worker end once it is done with what it has; none is waited for."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)

    def _start(self, job: Job) -> None:
        self._in_progress[job] = None
        self._jobs.put(job)
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        """A worker's loop: handle jobs until told to stop; every job comes back finished."""
        while (job := self._jobs.get()) is not None:
            if not self._may_start(job):
                job.skipped = True
            else:
                job.started = time.monotonic()  # the event's duration: its work, not its wait
                try:
                    job.outcome = self._handle(job.received)
                except BaseException as error:  # handed back: the I/O thread decides
                    job.error = error
            self._finished.append(job)
            if not self._woken:  # one wake-up for all the jobs finished meanwhile
                self._woken = True
                self._wake()
            self._idle.release()

    def _may_start(self, job: Job) -> bool:
        """Whether a worker may start `job`: it came on the current channel and the dispatcher
        is not closed; decided under the lock `close()` takes."""
        with self._closing:
            return job.channel == self._channel and not self._closed


__all__ = ["Dispatcher", "Job"]
