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
    """Stale before a worker started it: not handled at all."""
    started: float = field(default_factory=time.monotonic)
    """When it was taken up (`time.monotonic`): an event's duration runs from here."""

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

    def take_waiting(self) -> list[Job]:
        """The jobs that wait behind another of their key, in arrival order; never started now."""
        return self._keys.take_waiting()

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
            if job.channel != self._channel:
                job.skipped = True
            else:
                try:
                    job.outcome = self._handle(job.received)
                except BaseException as error:  # handed back: the I/O thread decides
                    job.error = error
            self._finished.append(job)
            if not self._woken:  # one wake-up for all the jobs finished meanwhile
                self._woken = True
                self._wake()
            self._idle.release()


__all__ = ["Dispatcher", "Job"]
