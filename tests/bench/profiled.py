"""`s3-events-handler` under cProfile, every thread of it.

`python -m tests.bench.profiled [--clock cpu|wall] OUT ARGS…` runs `s3-events-handler ARGS…`.

`python -m cProfile` profiles the thread that starts it, and only that one: the
consumer's main thread just moves bytes for pika, while each message is handled on
a worker thread of its own, so the work worth profiling would be missing. Here every
thread gets a profiler of its own (one profiler cannot follow two threads), and the
profiles are added together and written to OUT when the command returns, which the
consumer does on SIGTERM. A thread still running a second after that is left out.

The clock is each thread's CPU time by default: what a function costs in CPU, not how
long it waited for an answer (`--clock wall` shows the waiting too).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from collections.abc import Callable, Sequence

from s3_events_handler.entrypoints import cli

JOIN_SECONDS = 1.0


class EveryThread:
    """Profiles `run()` on the calling thread and every thread started while it runs."""

    def __init__(self, clock: Callable[[], float] | None = time.thread_time) -> None:
        """`clock=None` is cProfile's own wall clock, the cheapest to read."""
        self._clock = clock
        self.main = self._profile()
        self.finished: list[cProfile.Profile] = []
        self._running: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def run(self, call: Callable[[], int]) -> int:
        original = threading.Thread.run

        def profiled_run(thread: threading.Thread) -> None:
            profile = self._profile()
            with self._lock:
                self._running.add(thread)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()
                with self._lock:
                    self.finished.append(profile)
                    self._running.discard(thread)

        threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
        try:
            return self.main.runcall(call)
        finally:
            threading.Thread.run = original  # type: ignore[method-assign]

    def _profile(self) -> cProfile.Profile:
        return cProfile.Profile() if self._clock is None else cProfile.Profile(self._clock)

    def dump(self, path: str) -> int:
        """Write the sum of the profiles to `path`; how many threads it covers."""
        with self._lock:
            running = list(self._running)
        for thread in running:  # a worker finishing its last message
            thread.join(JOIN_SECONDS)
        with self._lock:
            profiles = [self.main, *self.finished]
        pstats.Stats(*profiles).dump_stats(path)
        return len(profiles)


CLOCKS: dict[str, Callable[[], float] | None] = {"cpu": time.thread_time, "wall": None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.profiled", description="s3-events-handler under cProfile"
    )
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("output", help="where to write the profile (pstats format)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="s3-events-handler arguments")
    args = parser.parse_args(argv)
    profiler = EveryThread(CLOCKS[args.clock])
    try:
        return profiler.run(lambda: cli.main(args.command))
    finally:
        threads = profiler.dump(args.output)
        print(f"profile of {threads} threads written to {args.output}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
