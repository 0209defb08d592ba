"""`consume` keeps itself on one CPU: checked in a process of its own, not pytest's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
