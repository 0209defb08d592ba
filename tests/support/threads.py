"""Calling something from several threads at the same instant, as the consumer's workers do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def side_by_side(
    call: Callable[[int], T], workers: int, timeout: float = 30.0
) -> list[T | Exception]:
    """What each of `workers` threads got from `call(n)` (n = 0, 1, …), all let go at once:
    its result, or the exception it raised; in the order they finished."""
    start = threading.Barrier(workers)
    answers: list[T | Exception] = []

    def run(n: int) -> None:
        start.wait()
        try:
            answers.append(call(n))
        except Exception as error:
            answers.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"a call outlasted {timeout} s"
    return answers


__all__ = ["side_by_side"]
