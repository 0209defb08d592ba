"""`python -m tests.bench.reconcile`: how fast `reconcile` looks a bucket up in MediaHaven, and what
it costs in memory (docs/performance.md, "Reconcile").

For each added MediaHaven latency, a child process reconciles a bucket of `--objects`
objects: the listing is generated as it is read (S3 is not what is measured, and a
listing is streamed either way), the look-ups go through the real MediaHaven adapter to
the MediaHaven test server on loopback, with `CONCURRENCY` in flight and no rate limit,
and the ledger is SQLite, as the command's. The child imports the boto3 adapter as the
command does, so its peak RSS (the kernel's high-water mark) counts boto3 too. Little's
law bounds the rate at `concurrency / latency`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from s3_events_handler.domain.bucket import StoredObject
from s3_events_handler.domain.ports import BucketObjects

BUCKET = "mam-bench"
ARCHIVED_EVERY = 200  # a record for one object in this many
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


class GeneratedBucket(BucketObjects):
    """`count` objects made as they are listed: nothing of the listing is held."""

    def __init__(self, count: int) -> None:
        self._count = count

    def objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        for n in range(self._count):
            yield StoredObject(bucket, f"{prefix}{n:07}.mxf", 1 << 20, f'"{n:032x}"', LONG_AGO)

    def with_metadata(self, stored: StoredObject) -> StoredObject:
        return replace(stored, metadata={})


def run_child(objects: int, concurrency: int, url: str, secrets: Sequence[str]) -> dict[str, float]:
    """One reconciliation in this process; its figures."""
    import resource

    import requests

    import s3_events_handler.adapters.s3_objects  # noqa: F401  (boto3, as the command loads it)
    from s3_events_handler.adapters.ledger_sqlite import SqliteLedger
    from s3_events_handler.adapters.mediahaven import MediaHavenRecords
    from s3_events_handler.application.reconciling import RateLimit, ReconcileBucket

    client_id, client_secret, username, password = secrets
    with tempfile.TemporaryDirectory() as folder, requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
        session.mount("http://", adapter)
        ledger = SqliteLedger(Path(folder) / "ledger.sqlite3")
        records = MediaHavenRecords(
            session=session, base_url=url, client_id=client_id, client_secret=client_secret,
            username=username, password=password, timeout=30,
        )  # fmt: skip
        use_case = ReconcileBucket(
            objects=GeneratedBucket(objects), records=records, ledger=ledger,
            clock=lambda: datetime.now(UTC),
        )  # fmt: skip
        started = time.perf_counter()
        results = use_case.execute(
            BUCKET, older_than=timedelta(hours=1), workers=concurrency, rate=RateLimit(1e9)
        )
        states: dict[str, int] = {}
        for result in results:
            states[result.state.value] = states.get(result.state.value, 0) + 1
        seconds = time.perf_counter() - started
        ledger.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "objects": float(objects),
        "seconds": seconds,
        "objects_per_second": objects / seconds,
        "peak_rss_mib": peak_kib / 1024,
        "archived": float(states.get("archived", 0)),
    }


def measure(objects: int, latency_ms: float, concurrency: int) -> dict[str, float]:
    """A MediaHaven test server with `latency_ms` added, and a child reconciling against it."""
    from tests.support.mediahaven_server import FakeMediaHaven

    with FakeMediaHaven(latency=latency_ms / 1000) as mediahaven:
        for n in range(0, objects, ARCHIVED_EVERY):
            mediahaven.add_record(f"f-{n}", key=f"{n:07}.mxf", bucket=BUCKET)
        mediahaven.requests = _Discarding()  # 20,000 requests noted would be the server's memory
        secrets = [mediahaven.client_id, mediahaven.client_secret, mediahaven.username,
                   mediahaven.password]  # fmt: skip
        child = subprocess.run(
            [sys.executable, "-m", "tests.bench.reconcile", "--child", str(objects),
             str(concurrency), mediahaven.base_url, *secrets],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    figures: dict[str, float] = json.loads(child.stdout)
    figures["latency_ms"] = latency_ms
    figures["concurrency"] = concurrency
    figures["littles_law_bound"] = concurrency / (latency_ms / 1000) if latency_ms else 0.0
    return figures


class _Discarding(list):  # type: ignore[type-arg]
    """A list that keeps nothing: the test server's record of requests, switched off."""

    def append(self, item: object) -> None:
        return None


def table(rows: Sequence[dict[str, float]], out: TextIO) -> None:
    print("| added latency | objects | objects/s | Little's law bound | peak RSS |", file=out)
    print("| ---: | ---: | ---: | ---: | ---: |", file=out)
    for row in rows:
        bound = f"{row['littles_law_bound']:.0f}/s" if row["littles_law_bound"] else "-"
        print(
            f"| {row['latency_ms']:g} ms | {row['objects']:.0f} | "
            f"{row['objects_per_second']:.0f} | {bound} | {row['peak_rss_mib']:.0f} MiB |",
            file=out,
        )


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.reconcile", description=__doc__)
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--latency", default="0,5,50", help="added ms, comma-separated")
    parser.add_argument("--concurrency", type=int, default=16, help="CONCURRENCY")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        objects, concurrency, url, *secrets = args.child
        print(json.dumps(run_child(int(objects), int(concurrency), url, secrets)), file=out)
        return 0
    rows = [
        measure(args.objects, float(latency), args.concurrency)
        for latency in args.latency.split(",")
    ]
    table(rows, out)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
