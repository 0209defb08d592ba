"""The workers: what a worker does with a delivery, and the pool that runs several at once, one
at a time per object.

A worker runs the handler, then hands the settlement back to the I/O thread with
`add_callback_threadsafe` of the connection the delivery came on, and waits for it
(`Work`). The consumer's I/O thread submits each delivery with its ordering key; a
worker thread runs it, and only once that returned, the delivery settled, does the next
delivery of the same key start (`Workers`, with `application.ordering.KeyedQueue`). So two
events about one object are never handled at the same time, and are settled in the
order they arrived. The pool's bookkeeping is shared by the I/O thread and the workers,
under one lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

from s3_events_handler.adapters.rabbitmq.connection import connection_lost
from s3_events_handler.adapters.rabbitmq.io_thread import call_on_io_thread
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.application.messages import Delivery, Outcome
from s3_events_handler.application.ordering import KeyedQueue
from s3_events_handler.application.retries import RetrySchedule, transient_outcome

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


class Work:
    """What a worker does with one delivery: the handler's outcome, settled on the I/O thread.

    A handler that raised is that message's transient failure (contract §6); the
    outcome is carried out on the delivery's own channel, then accounted for.
    """

    def __init__(
        self,
        handler: Callable[[Delivery], Outcome],
        retries: RetrySchedule,
        *,
        stopping: Callable[[], bool],
        settled: Callable[[Job, Settled, float], None],
    ) -> None:
        """`stopping`: whether the consumer stopped; `settled(job, settled, started)`: for its
        metrics and log line, on the I/O thread."""
        self._handler = handler
        self._retries = retries
        self._stopping = stopping
        self._settled = settled
        self.messages_handled = 0
        """Messages whose outcome was carried out and acked; counted on the I/O thread."""

    def __call__(self, job: Job) -> None:
        """On a worker: handle the delivery, then have the I/O thread settle it on the connection
        it came on, and wait. Once the consumer stops, it goes back to the queue unstarted."""
        if self._stopping():
            settle = partial(job.settlement.give_back, job.received)
        else:
            started = time.monotonic()  # the event's duration: its work, not its wait
            settle = partial(self._settle, job, self._outcome_of(job.received), started)
        try:
            call_on_io_thread(job.channel.connection, settle)
        except Exception as error:
            if not connection_lost(error):
                raise
            log.debug("message %d: not settled, its connection is gone", job.delivery_tag)

    def _outcome_of(self, received: Received) -> Outcome:
        """The handler's outcome; for a handler that raised, a transient failure (contract §6)."""
        delivery = received.delivery()
        try:
            return self._handler(delivery)
        except BaseException as error:  # settled as that message's failure, never dropped
            log.error(
                "message %d: the handler raised; handled as a transient failure",
                received.delivery_tag,
                exc_info=error,
            )
            return transient_outcome(delivery, error, self._retries)

    def _settle(self, job: Job, outcome: Outcome, started: float) -> None:
        """On the I/O thread: carry out the outcome (confirmed republishes, then the ack), and
        account for it. A message no queue takes is held back instead (`Settlement`)."""
        settled = job.settlement.carry_out(job.received, outcome)
        if settled is None:
            return
        self.messages_handled += 1
        try:
            self._settled(job, settled, started)
        except Exception:  # the message is settled: nothing left to redo
            log.exception("message %d settled, but not accounted for", job.delivery_tag)


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


__all__ = ["Job", "Work", "Workers"]
