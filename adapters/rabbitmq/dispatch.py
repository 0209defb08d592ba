"""The worker pool: each delivery runs on one of up to `size` threads, those of one ordering key
one at a time and in the order they came (docs/reliability.md, "One object's events one at a
time, in order"). The I/O thread submits and takes back; the workers run; one lock."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from s3_events_handler.adapters.rabbitmq.settlement import Received, Settlement

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Job:
    """One delivery, with the settlement of the channel it came on: settled on that channel or
    not at all, as its tag names a message on that channel only."""

    received: Received
    key: Hashable
    """Jobs of one key run one at a time, in order (`ordering_key`)."""
    settlement: Settlement

    @property
    def delivery_tag(self) -> int:
        return self.received.delivery_tag


class Workers:
    """Runs `work(job)` for each submitted job on up to `size` threads, in order per key.

    Threads are started as they are needed and are daemons: a handler stuck in a
    call cannot keep the process from exiting once the consumer gave up on it.
    """

    def __init__(self, work: Callable[[Job], None], *, size: int, name: str = "worker") -> None:
        if size < 1:
            raise ValueError(f"workers must be at least 1: {size}")
        self._work = work
        self.size = size
        self._name = name
        self._lock = threading.Condition()
        self._in_hand: dict[Hashable, Job] = {}
        """By key, its one job queued for a worker or running."""
        self._waiting: dict[Hashable, deque[Job]] = {}
        """By key, the jobs behind the one in hand."""
        self._queued: deque[Job] = deque()
        """The jobs in hand no worker took yet."""
        self._threads = 0
        self._shut_down = False

    def submit(self, job: Job) -> None:
        """Queue `job` for a worker now, or once the job of its key in hand is done."""
        with self._lock:
            if job.key in self._in_hand:
                self._waiting.setdefault(job.key, deque()).append(job)
            else:
                self._queue(job)

    def take_unstarted(self) -> list[Job]:
        """The jobs no worker took yet, in delivery order, taken back for good: those queued for
        a worker and those behind another of their key. A job a worker took is in hand."""
        with self._lock:
            unstarted = [*self._queued, *itertools.chain(*self._waiting.values())]
            for job in self._queued:
                del self._in_hand[job.key]
            self._queued.clear()
            self._waiting.clear()
        return sorted(unstarted, key=lambda job: job.delivery_tag)

    def in_hand(self) -> list[Job]:
        """Queued for a worker or being worked on: submitted, not done, not taken back."""
        with self._lock:
            return list(self._in_hand.values())

    def shutdown(self) -> None:
        """Let every worker end once it is done with what it has; none is waited for."""
        with self._lock:
            self._shut_down = True
            self._lock.notify_all()

    def _queue(self, job: Job) -> None:
        """Put `job` in hand, starting a thread if every one is busy (lock held)."""
        self._in_hand[job.key] = job
        self._queued.append(job)
        self._lock.notify()
        if self._threads < min(self.size, len(self._in_hand)):
            self._threads += 1
            name = f"{self._name}-{self._threads}"
            threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        """A worker's loop: run jobs until shut down; each, done, lets the next of its key in."""
        while True:
            with self._lock:
                while not self._queued and not self._shut_down:
                    self._lock.wait()
                if self._shut_down:
                    return
                job = self._queued.popleft()
            try:
                self._work(job)
            except BaseException:  # `work` handles its own failures: this is a bug
                log.exception("message %d: the worker failed", job.delivery_tag)
            finally:
                with self._lock:
                    del self._in_hand[job.key]
                    waiting = self._waiting.get(job.key)  # never empty: gone with its last job
                    if waiting is not None:
                        self._queue(waiting.popleft())
                        if not waiting:
                            del self._waiting[job.key]
