"""How fast, and in how much memory, the core handles events: no network, in-memory adapters.

Run: `.venv/bin/python -m tests.bench.in_memory_throughput [EVENTS]`. It measures;
it asserts nothing. The throughput through the real broker, FTP server and HTTP fakes
is printed by `tests/faults/test_downstream_faults.py` (1,000 events).
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import Delivery, Done
from s3_events_handler.application.retries import RetrySchedule
from tests.unit.builders import World

EXAMPLES = Path(__file__).resolve().parents[1] / "golden"


def bodies(count: int) -> list[bytes]:
    message = json.loads((EXAMPLES / "event-essence-created.json").read_text())
    record = message["Records"][0]
    out = []
    for n in range(count):
        record["responseElements"]["x-viaa-request-id"] = f"bench-{n}"
        record["s3"]["object"]["key"] = f"bench-{n:07d}.MXF"
        out.append(json.dumps(message).encode())
    return out


def run(count: int) -> tuple[float, int]:
    """Seconds taken and events done, on a fresh in-memory world."""
    world = World(pids=tuple(f"{n:010d}" for n in range(count)))
    handler = MessageHandler(ingest=world.ingest, remove=world.remove, retries=RetrySchedule())
    work = bodies(count)
    started = time.perf_counter()
    outcomes = [handler.handle(Delivery(body=body)) for body in work]
    return time.perf_counter() - started, sum(isinstance(o, Done) for o in outcomes)


def main(count: int) -> None:
    elapsed, done = run(count)
    tracemalloc.start()  # a second run for memory: tracing slows the first one's timing
    run(count)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{count} essence events in {elapsed:.2f} s: {count / elapsed:,.0f} events/s, "
        f"{elapsed / count * 1e6:.0f} µs each; {done} done; "
        f"peak traced memory {peak / 2**20:.1f} MiB (the fakes keep every sidecar)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
