"""The worker pool: deliveries handled several at once, one at a time per object.

The consumer's I/O thread submits each delivery with its ordering key; a worker
thread runs it (`work`), and only once that returned, the delivery settled, does the
next delivery of the same key start (`application.ordering.KeyedQueue`). So two
events about one object are never handled at the same time, and are settled in the
order they arrived. The bookkeeping is shared by the I/O thread and the workers, under
one lock.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from s3_events_handler.adapters.rabbitmq.received import Received
from s3_events_handler.adapters.rabbitmq.settlement import Settlement
from s3_events_handler.application.ordering import KeyedQueue

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Job:
    """One delivery, with the channel it came on: settled on that channel's connection or
    not at all, as its tag names a message on that channel only."""

    received: Received
    key: Hashable
    """Jobs of one key run one at a time, in order (`ordering_key`)."""
    channel: Any
    """The pika channel it came on; `channel.connection` is the way back to the I/O thread."""
    settlement: Settlement
    """That channel's."""

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
        self._lock = threading.Lock()
        self._keys: KeyedQueue[Job] = KeyedQueue()
        self._in_hand: dict[Job, None] = {}  # admitted, not done; in submission order
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, job: Job) -> None:
        """Queue `job` for a worker now, or once the job of its key before it is done."""
        with self._lock:
            if self._keys.admit(job.key, job):
                self._admit(job)

    def take_unstarted(self) -> list[Job]:
        """The jobs no worker took yet, in delivery order; their keys are free again.

        Those waiting behind another job of their key, and those queued for a worker. A
        job a worker takes meanwhile is in hand: it runs (the consumer's `work` decides
        what it does with it).
        """
        with self._lock:
            unstarted = self._keys.take_waiting()
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # a worker's signal to end, from `shutdown()`: not ours
                    self._queue.put(None)
                    break
                unstarted.append(job)
                del self._in_hand[job]
                self._keys.release(job.key)  # nothing waits behind it: taken above
        return sorted(unstarted, key=lambda job: job.delivery_tag)

    def in_hand(self) -> list[Job]:
        """Queued for a worker or being worked on: submitted, not done, not taken back."""
        with self._lock:
            return list(self._in_hand)

    def shutdown(self) -> None:
        """Let every worker end once it is done with what it has; none is waited for."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)

    def _admit(self, job: Job) -> None:
        """Queue `job` for a worker, starting a thread if every one is busy (lock held)."""
        self._in_hand[job] = None
        self._queue.put(job)
        if len(self._threads) < min(self.size, len(self._in_hand)):
            name = f"{self._name}-{len(self._threads) + 1}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self) -> None:
        """A worker's loop: run jobs until told to stop; each frees its key when done."""
        while (job := self._queue.get()) is not None:
            try:
                self._work(job)
            except BaseException:  # `work` handles its own failures: this is a bug
                log.exception("message %d: the worker failed", job.delivery_tag)
            finally:
                self._done(job)

    def _done(self, job: Job) -> None:
        with self._lock:
            del self._in_hand[job]
            following = self._keys.release(job.key)
            if following is not None:
                self._admit(following)


__all__ = ["Job", "Workers"]
