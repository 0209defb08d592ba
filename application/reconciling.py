"""How fast and how wide `reconcile` goes (contract §8): up to `CONCURRENCY` look-ups in flight,
at most `--rate` a second, and no more than a window of objects in hand."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from s3_events_handler.domain.bucket import ObjectState, Reconciled, StoredObject
from s3_events_handler.domain.reconciliation import ReconcileBucket

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_RATE = 50.0


class RateLimit:
    """At most `per_second` starts a second, spaced evenly: each `wait` returns no sooner
    than 1/`per_second` after the one before it. Thread-safe; the wait happens outside the
    lock, so waiting callers queue up in order without holding each other."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"a rate must be more than 0 a second: {per_second}")
        self._spacing = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._spacing
        if start > now:
            self._sleep(start - now)


def bounded_map(
    work: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[tuple[T, R]]:
    """`(item, work(item))` for each item, in the items' order, `work` running on up to
    `workers` threads; at most `window` items (default twice `workers`) are taken from
    `items` ahead of the one yielded, so memory stays flat however many there are.

    An exception of `work` is raised where its item's result would have come; nothing
    after it is yielded, and the items in hand are cancelled or left to finish. An
    exception of `items` is raised once the items taken before it have been yielded.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1: {workers}")
    ahead = window if window is not None else 2 * workers
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
    try:
        try:
            for item in items:
                pending.append((item, pool.submit(work, item)))
                if len(pending) >= ahead:
                    done, future = pending.popleft()
                    yield done, future.result()
        except Exception:
            # `items` failed (a listing cut off): what is in hand still counts, then the failure.
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
            raise
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def reconcile(
    use_case: ReconcileBucket,
    objects: Iterable[StoredObject],
    *,
    workers: int,
    rate: RateLimit,
    tenant: str | None = None,
) -> Iterator[Reconciled]:
    """The use case over `objects`: look-ups on `workers` threads at `rate`, results in
    listing order; the missing ones enqueued (with `tenant`) by the calling thread, in that
    order, so nothing is published past the first failure."""

    def look_up(stored: StoredObject) -> ObjectState:
        rate.wait()
        return use_case.state_of(stored)

    for stored, state in bounded_map(look_up, objects, workers=workers):
        yield use_case.settle(stored, state, tenant)
