"""What the kernel says a process used, read from /proc: no dependency, any process we started.

CPU counts every thread of the process (the consumer handles messages on worker
threads), in clock ticks (10 ms on most kernels): fine over a run, coarse for one event.
"""

from __future__ import annotations

import os

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Fields of /proc/<pid>/stat after the `(comm)` field, which may itself hold spaces.
_UTIME, _STIME = 11, 12


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far (its children not included)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[_UTIME]) + int(fields[_STIME])) / _TICKS_PER_SECOND


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise LookupError(f"/proc/{pid}/status has no {field}")


def rss_kib(pid: int) -> int:
    """Resident memory now (VmRSS)."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The most resident memory the process ever had (VmHWM, the high-water mark)."""
    return _status_kib(pid, "VmHWM")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every CPU of the machine so far, from the first line of
    /proc/stat; idle and waiting for I/O count as not busy."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
    # guest time is counted in user time already
    total = sum(fields[:8])
    return total - idle, total
