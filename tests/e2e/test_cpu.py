"""The consumer keeps to one CPU, and leaves it for another when other work fills it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import RunningService

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two CPUs to choose from",
)

# The follower looks every 10 s, give or take 2 s.
MOVE_TIMEOUT = 30.0


@pytest.fixture
def hog() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Busy processes a test starts on one CPU; killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def cpus_of_every_thread(pid: int) -> set[str]:
    """The CPU list each thread of `pid` may run on, as the kernel says it."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        found = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.MULTILINE)
        if found:
            lists.add(found.group(1))
    return lists


def test_the_consumer_leaves_a_cpu_another_process_keeps_busy(
    service: RunningService, hog: list[subprocess.Popen[bytes]]
) -> None:
    service.start_consumer()
    assert service.process is not None
    pinned = re.search(r"running on CPU (\d+) of the", service.log())
    assert pinned, service.log()
    first = int(pinned.group(1))
    assert cpus_of_every_thread(service.process.pid) == {str(first)}

    hog.append(
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=lambda: os.sched_setaffinity(0, {first}),
        )
    )
    deadline = time.monotonic() + MOVE_TIMEOUT
    while "moved from CPU" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.2)

    moved = re.search(r"moved from CPU (\d+) to CPU (\d+)", service.log())
    assert moved, service.log()
    assert int(moved.group(1)) == first
    assert cpus_of_every_thread(service.process.pid) == {moved.group(2)}
