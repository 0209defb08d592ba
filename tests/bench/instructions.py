"""`python -m tests.bench.instructions`: instructions per event, counted by valgrind's callgrind.

CPU time on a shared machine moves with everything else the machine does (the same row
took 3.1 to 4.9 CPU ms an event within one bench here). The number of instructions a
process executes does not: callgrind counts them the same for the same work, whatever
else runs. So this counts them, for the floor and the consumer alike, to compare changes
to the code without the machine's noise.

Each mode runs twice, on a few events and on more, under `valgrind --tool=callgrind`
(tens of times slower); the difference of the two totals, divided by the difference of
the events, is what an event costs, without the start-up and the stop. It counts
instructions, in user space, of every thread: not the kernel's work for the process
(its system calls, its context switches), nor the time an instruction waits for memory.
Those the bench's CPU column has.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from tests.bench import harness
from tests.bench.cli import BROKER
from tests.bench.harness import BenchError, Rig

# valgrind prints, as the process exits: "==123== Collected : 4567890123".
_COLLECTED = re.compile(rb"Collected : (\d+)")
# How much longer than usual a process under callgrind may take to start, move, stop.
PATIENCE = 20.0


def count_per_event(rig: Rig, mode: harness.Mode, small: int, large: int) -> float:
    """Instructions per event of `mode`: its runs on `large` and on `small` events, set apart."""
    grinded = replace(
        mode,
        wrapper=("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        patience=PATIENCE,
    )
    totals = []
    for events in (small, large):
        run = rig.run(grinded, events, 0)
        totals.append(collected(Path(run.log_files[0])))
    return (totals[1] - totals[0]) / (large - small)


def collected(log: Path) -> int:
    """The instructions valgrind counted, from the end of the process's log."""
    found = _COLLECTED.findall(log.read_bytes())
    if not found:
        raise BenchError(f"valgrind reported no instruction count in {log}")
    return int(found[-1])


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.instructions",
        description="Instructions per essence event (callgrind), at 0 ms added latency.",
    )
    parser.add_argument("--modes", default="floor,serial,default", help="of floor,serial,default")
    parser.add_argument("--small", type=int, default=100, help="events of the first run")
    parser.add_argument("--large", type=int, default=400, help="events of the second run")
    args = parser.parse_args(argv)
    modes = [harness.MODES[name] for name in args.modes.split(",") if name]
    if not 0 < args.small < args.large:
        parser.error("needs 0 < --small < --large")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    counts = {}
    with (
        tempfile.TemporaryDirectory(prefix="s3eh-bench-") as workdir,
        Rig(Path(workdir), BROKER, ledger_dsn=None) as rig,
    ):
        for mode in modes:
            print(f"{mode.label} under callgrind…", file=out, flush=True)
            counts[mode.name] = count_per_event(rig, mode, args.small, args.large)
    floor = counts.get("floor")
    for name, count in counts.items():
        versus = f"  ({count / floor:.2f}x the floor)" if floor else ""
        print(f"{name:8s} {count / 1e6:7.3f} M instructions/event{versus}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
