"""`consume` keeps itself on one CPU: checked in a process of its own, not pytest's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from s3_events_handler.adapters.cpu_affinity import CpuFollower, read_cpu_ticks, roomiest_cpu

PINNED_PROCESS = """
import json, os, threading
from s3_events_handler.adapters.cpu_affinity import pin_to_one_cpu
before = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
before.start()
cpu = pin_to_one_cpu()
later = []
thread = threading.Thread(target=lambda: later.append(sorted(os.sched_getaffinity(0))))
thread.start(); thread.join()
print(json.dumps({"cpu": cpu, "main": sorted(os.sched_getaffinity(0)),
                  "started_before": sorted(os.sched_getaffinity(before.native_id)),
                  "started_after": later[0]}))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two CPUs to choose from",
)
def test_every_thread_is_kept_on_the_one_cpu_the_process_ran_on() -> None:
    allowed = os.sched_getaffinity(0)
    run = subprocess.run(
        [sys.executable, "-c", PINNED_PROCESS], capture_output=True, text=True, check=True
    )
    pinned = json.loads(run.stdout)
    assert pinned["cpu"] in allowed
    one = [pinned["cpu"]]
    assert pinned["main"] == pinned["started_before"] == pinned["started_after"] == one


def test_a_process_that_may_use_one_cpu_only_is_left_as_it_is() -> None:
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs Linux")
    one = min(os.sched_getaffinity(0))
    run = subprocess.run(
        [sys.executable, "-c", PINNED_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {one}),
    )
    pinned = json.loads(run.stdout)
    assert pinned["cpu"] is None
    assert pinned["main"] == [one]


# -- moving to the CPU with the most room ------------------------------------------------------


def ticks(at: int = 100, **busy_of: int) -> dict[int, tuple[int, int]]:
    """A reading `at` ticks since boot: `cpu0=80` means CPU 0 was busy 80 of them."""
    return {int(name[3:]): (busy, at) for name, busy in busy_of.items()}


NOTHING = ticks(0, cpu0=0, cpu1=0)


def test_a_cpu_other_work_keeps_busy_is_left_for_one_with_room() -> None:
    assert roomiest_cpu({0, 1}, NOTHING, ticks(cpu0=90, cpu1=10), own_ticks=20, current=0) == 1


def test_its_own_work_is_no_reason_to_move() -> None:
    assert roomiest_cpu({0, 1}, NOTHING, ticks(cpu0=95, cpu1=10), own_ticks=90, current=0) is None


def test_a_small_difference_is_no_reason_to_move() -> None:
    """Two replicas chasing the idler CPU would only swap places."""
    assert roomiest_cpu({0, 1}, NOTHING, ticks(cpu0=45, cpu1=20), own_ticks=0, current=0) is None


def test_only_cpus_it_may_use_are_chosen() -> None:
    busy = ticks(cpu0=90, cpu1=90, cpu2=0)
    before = ticks(0, cpu0=0, cpu1=0, cpu2=0)
    assert roomiest_cpu({0, 1}, before, busy, own_ticks=0, current=0) is None


def test_the_follower_moves_once_and_then_measures_from_where_it_is() -> None:
    readings = iter([NOTHING, ticks(100, cpu0=90, cpu1=0), ticks(200, cpu0=180, cpu1=40)])
    own = iter([0, 10, 50])
    moves: list[int] = []
    follower = CpuFollower(
        0,
        read_ticks=lambda: next(readings),
        read_own_ticks=lambda: next(own),
        move=moves.append,
        allowed={0, 1},
    )

    assert follower.step() == 1
    assert follower.step() is None  # CPU 1's 40 busy ticks were its own
    assert moves == [1] and follower.cpu == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux")
def test_the_kernel_says_how_busy_each_cpu_it_may_use_was() -> None:
    readings = read_cpu_ticks()
    assert set(os.sched_getaffinity(0)) <= set(readings)
    assert all(0 <= busy <= total for busy, total in readings.values())


MOVED_PROCESS = """
import json, os, threading
from s3_events_handler.adapters.cpu_affinity import move_every_thread, pin_to_one_cpu
first = pin_to_one_cpu()
worker = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
worker.start()
target = [cpu for cpu in sorted(%s) if cpu != first][0]
move_every_thread(target)
print(json.dumps({"target": target, "main": sorted(os.sched_getaffinity(0)),
                  "worker": sorted(os.sched_getaffinity(worker.native_id))}))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two CPUs to choose from",
)
def test_a_move_takes_every_thread_along() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    run = subprocess.run(
        [sys.executable, "-c", MOVED_PROCESS % allowed], capture_output=True, text=True, check=True
    )
    moved = json.loads(run.stdout)
    assert moved["main"] == moved["worker"] == [moved["target"]]
