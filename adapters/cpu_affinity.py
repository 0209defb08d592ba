"""Keeping the consumer on one CPU (`PIN_CPU`): its threads take turns on the GIL anyway,
and over several CPUs each hand-over wakes another CPU, which costs more than the Python it
runs (docs/performance.md). Which CPUs it may use is the platform's to say.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# /proc/self/stat: the CPU the process last ran on, counted after the `(comm)` field.
_PROCESSOR_FIELD = 36


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
    for _ in range(2):  # a thread started meanwhile is looked for again
        for thread in _threads():
            with contextlib.suppress(OSError):  # ended meanwhile
                os.sched_setaffinity(thread, {cpu})
    log.info("running on CPU %d of the %d it may use (PIN_CPU)", cpu, len(allowed))
    return cpu


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
