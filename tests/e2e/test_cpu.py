"""`consume` keeps to one of the CPUs it may use, unless PIN_CPU=false."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.service import RunningService

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two CPUs to choose from",
)


def cpus_of_every_thread(pid: int) -> set[str]:
    """The CPU list each thread of `pid` may run on, as the kernel says it."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        found = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.MULTILINE)
        if found:
            lists.add(found.group(1))
    return lists


def test_every_thread_of_the_consumer_keeps_to_one_cpu(service: RunningService) -> None:
    service.start_consumer()
    assert service.process is not None
    pinned = re.search(r"running on CPU (\d+) of the", service.log())
    assert pinned, service.log()
    assert cpus_of_every_thread(service.process.pid) == {pinned.group(1)}


def test_with_pin_cpu_false_the_consumer_keeps_every_cpu_it_may_use(
    service: RunningService,
) -> None:
    own = cpus_of_every_thread(os.getpid())
    service.start_consumer(PIN_CPU="false")
    assert service.process is not None
    assert "running on CPU" not in service.log()
    assert cpus_of_every_thread(service.process.pid) == own
