"""Keeping the consumer on one CPU, and moving it to another when that one has more room.

Only one thread at a time runs Python (the GIL), and a worker lets go of it for every
socket call and disk write. Spread over several CPUs, each of those hand-overs wakes
a thread on another CPU, which costs more than the Python it then runs: measured on
2 CPUs with 16 workers, about 1.5 ms of system time an event against 0.6 ms on one
CPU (docs/performance.md). On one CPU the threads hand over without waking another.

A process kept on one CPU is one the kernel can no longer move away from a busy
neighbour (another replica on the same node, another pod): `CpuFollower` looks every
few seconds at how busy each allowed CPU was with other work, and moves the process to
the one with clearly the most room.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# /proc/<pid>/stat: the CPU the process last ran on, and its user and system time,
# counted after the `(comm)` field.
_PROCESSOR_FIELD = 36
_UTIME, _STIME = 11, 12

# Moved only for this much more room (a share of one CPU's time) than where it is: a
# smaller gap is noise, and two replicas chasing one idle CPU would swap places.
MOVE_MARGIN = 0.3
FOLLOW_SECONDS = 10.0

Ticks = Mapping[int, tuple[int, int]]
"""Per CPU: (busy, all) clock ticks since boot, from /proc/stat."""


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on now (empty where the system cannot say)."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


def pin_to_one_cpu() -> int | None:
    """Confine every thread of this process, and those it starts, to one of the CPUs it may
    use: the one it runs on now, where the kernel placed it. The CPU, or None when it is not
    possible (not Linux) or there is nothing to choose."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    cpu = _current_cpu()
    if cpu not in allowed:
        cpu = min(allowed)
    move_every_thread(cpu)
    log.info("running on CPU %d of the %d it may use (PIN_CPU)", cpu, len(allowed))
    return cpu


def move_every_thread(cpu: int) -> None:
    """Every thread of this process to `cpu`; threads started from now on inherit it from
    the thread that starts them. A thread started while this runs is looked for again."""
    for _ in range(2):
        for thread in _threads():
            try:
                os.sched_setaffinity(thread, {cpu})
            except OSError:  # ended meanwhile
                continue


def roomiest_cpu(
    allowed: Collection[int], before: Ticks, after: Ticks, own_ticks: int, current: int
) -> int | None:
    """The allowed CPU that other work kept least busy between the two readings, when it had
    at least `MOVE_MARGIN` of a CPU more room than `current`; else None (stay)."""
    others: dict[int, float] = {}
    for cpu in allowed:
        if cpu not in before or cpu not in after:
            continue
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        if total <= 0:
            continue
        if cpu == current:
            busy -= own_ticks  # our own work is no reason to leave
        others[cpu] = max(busy, 0) / total
    if current not in others:
        return None
    best = min(others, key=lambda cpu: (others[cpu], cpu != current))
    return best if others[current] - others[best] >= MOVE_MARGIN else None


class CpuFollower:
    """Keeps the process on the CPU with the most room, looking every `interval` seconds
    (give or take a fifth, so that replicas on one node do not look and move together)."""

    def __init__(
        self,
        cpu: int,
        *,
        interval: float = FOLLOW_SECONDS,
        read_ticks: Callable[[], Ticks] = lambda: read_cpu_ticks(),
        read_own_ticks: Callable[[], int] = lambda: own_cpu_ticks(),
        allowed: Collection[int],
        move: Callable[[int], None] = move_every_thread,
    ) -> None:
        """`allowed`: the CPUs the process may use, as they were before it was pinned (once
        pinned, the kernel says only the one)."""
        self.cpu = cpu
        self._interval = interval
        self._read_ticks = read_ticks
        self._read_own_ticks = read_own_ticks
        self._move = move
        self._allowed = frozenset(allowed)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (read_ticks(), read_own_ticks())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cpu-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def step(self) -> int | None:
        """Look once; the CPU it moved to, or None when it stayed."""
        ticks, own = self._read_ticks(), self._read_own_ticks()
        (before, own_before), self._last = self._last, (ticks, own)
        target = roomiest_cpu(self._allowed, before, ticks, own - own_before, self.cpu)
        if target is None:
            return None
        self._move(target)
        log.info("moved from CPU %d to CPU %d, which other work left more room", self.cpu, target)
        self.cpu = target
        return target

    def _run(self) -> None:
        while not self._stopped.wait(self._interval * random.uniform(0.8, 1.2)):
            try:
                self.step()
            except OSError as error:  # /proc unreadable, a CPU taken away: stay put
                log.debug("not looking for a roomier CPU: %s", error)


def read_cpu_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, all) clock ticks since boot; idle and waiting for I/O are not busy."""
    ticks: dict[int, tuple[int, int]] = {}
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                if ticks:
                    break  # the per-CPU lines come together, right after the total
                continue
            fields = [int(value) for value in rest.split()[:8]]
            idle = fields[3] + fields[4]  # idle, iowait
            ticks[int(name[3:])] = (sum(fields) - idle, sum(fields))
    return ticks


def own_cpu_ticks() -> int:
    """User and system clock ticks of this process so far, every thread."""
    fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    return int(fields[_UTIME]) + int(fields[_STIME])


def _current_cpu() -> int | None:
    try:
        stat = Path("/proc/self/stat").read_text()
        return int(stat.rpartition(")")[2].split()[_PROCESSOR_FIELD])
    except (OSError, ValueError, IndexError):
        return None


def _threads() -> list[int]:
    """This process's threads (0, the calling one, when /proc cannot say)."""
    try:
        return [int(task.name) for task in Path("/proc/self/task").iterdir()]
    except OSError:
        return [0]


__all__ = [
    "CpuFollower",
    "move_every_thread",
    "own_cpu_ticks",
    "pin_to_one_cpu",
    "read_cpu_ticks",
    "roomiest_cpu",
    "usable_cpus",
]
