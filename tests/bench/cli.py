"""`python -m tests.bench`: the consumer's throughput, latency, CPU and memory, per added latency.

For each added latency (ms per call to MediaHaven, the PID service and the Organisations
API) it runs the floor, the serial consumer (CONCURRENCY=1) and the consumer with its
default settings (and, with --replicas, several such consumers on one PostgreSQL
ledger), each on the same number of preloaded events, then prints one table, each row
the median of its runs (--repeat). See docs/performance.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tests.bench import harness
from tests.bench.harness import BenchError, Mode, Rig
from tests.bench.report import (
    Measurement,
    add_speedups,
    hotspots,
    medians,
    replica_summary,
    table,
    write_json,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_EVENTS = 2000
DEFAULT_LATENCIES = (0.0, 5.0, 50.0)
QUICK_EVENTS = 100
QUICK_LATENCIES = (0.0,)
DEFAULT_MODES = ("floor", "serial", "default")
PROFILE_TOP = 25
BROKER = (
    os.environ.get("TEST_BROKER_HOST", "127.0.0.1"),
    int(os.environ.get("TEST_BROKER_PORT", "5672")),
)
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Settings:
    """One bench: which rows, on how many events; what the command line chose."""

    events: int = DEFAULT_EVENTS
    latencies_ms: Sequence[float] = DEFAULT_LATENCIES
    modes: Sequence[str] = DEFAULT_MODES
    replicas: int = 1
    repeat: int = 1
    ledger: str = "sqlite"
    postgres_dsn: str = POSTGRES_DSN
    broker: tuple[str, int] = BROKER
    profile_to: Path | None = None
    profile_clock: str = "cpu"
    keep: bool = False

    def rows(self) -> list[Mode]:
        """The rows at each latency: floor, serial, default, then the replicas of each consumer
        mode asked for (of serial consumers when none was)."""
        modes = [harness.MODES[name] for name in self.modes]
        if self.replicas > 1:
            consumers = [mode for mode in modes if not mode.floor] or [harness.SERIAL]
            modes += [harness.replicas(self.replicas, each) for each in consumers]
        return modes

    def runs(self) -> Iterator[tuple[float, Mode]]:
        """Every run in order: by latency, then round by round (`repeat`), the rows in turn,
        so that a change in the machine's load over time falls on every row alike."""
        for latency in self.latencies_ms:
            for _ in range(self.repeat):
                for mode in self.rows():
                    yield latency, mode


@dataclass
class Result:
    rows: list[Measurement]
    """One per row and latency: the median of its runs."""
    context: dict[str, Any]
    runs: list[Measurement] = field(default_factory=list)
    """Every run, in the order they ran."""
    profile: Measurement | None = None
    profile_path: Path | None = None


@contextlib.contextmanager
def postgres_database(server_dsn: str) -> Iterator[str]:
    """A database of the bench's own on the server, dropped afterwards; its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"s3eh_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _context(settings: Settings) -> dict[str, Any]:
    """What the figures depend on besides the code: the machine, its load, the commit."""

    def git(*args: str) -> str:
        completed = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return completed.stdout.strip()

    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "events": settings.events,
        "latencies_ms": list(settings.latencies_ms),
        "ledger": settings.ledger,
        "replicas": settings.replicas,
        "repeat": settings.repeat,
    }


def run_bench(settings: Settings, out: TextIO) -> Result:
    """Every run of `settings`, in one loopback world that is removed afterwards, whatever
    happens (Ctrl-C included)."""
    context = _context(settings)
    result = Result(rows=[], context=context)
    workdir = Path(tempfile.mkdtemp(prefix="s3eh-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            dsn = None
            if settings.ledger == "postgres":
                dsn = stack.enter_context(postgres_database(settings.postgres_dsn))
            rig = stack.enter_context(Rig(workdir, settings.broker, ledger_dsn=dsn))
            runs = [
                _run(rig, mode, settings.events, latency, out) for latency, mode in settings.runs()
            ]
            result.rows = medians(runs)
            result.runs = runs
            if settings.profile_to is not None:
                mode = harness.profiled(settings.profile_to.resolve(), settings.profile_clock)
                latency = min(settings.latencies_ms)
                result.profile = _run(rig, mode, settings.events, latency, out)
                result.profile_path = settings.profile_to
    finally:
        if settings.keep:
            print(f"logs and files kept in {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    add_speedups(result.rows)
    context["load_average_after"] = os.getloadavg()
    return result


def _run(rig: Rig, mode: Mode, events: int, latency: float, out: TextIO) -> Measurement:
    print(f"[{latency:g} ms] {mode.label}: {events} events…", file=out, flush=True)
    row = rig.run(mode, events, latency)
    print(
        f"  {row.events_per_second:.1f} events/s over {row.seconds:.2f} s "
        f"(start-up {row.startup_seconds:.2f} s), {row.cpu_ms_per_event:.2f} CPU ms/event; "
        f"{row.progress_line()}",
        file=out,
        flush=True,
    )
    return row


def _latencies(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from None
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}")
    return values


def _modes(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in harness.MODES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(harness.MODES)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs RabbitMQ on 127.0.0.1:5672 (TEST_BROKER_HOST/PORT), and PostgreSQL "
        "(TEST_POSTGRES_DSN) for --ledger postgres. Measures; asserts nothing.",
    )
    parser.add_argument(
        "--events",
        type=int,
        help=f"events per run (default {DEFAULT_EVENTS}; --quick {QUICK_EVENTS})",
    )
    parser.add_argument(
        "--latency",
        type=_latencies,
        help="added ms per call to MediaHaven, PID and Organisations, comma-separated "
        f"(default {','.join(f'{v:g}' for v in DEFAULT_LATENCIES)}; --quick 0)",
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=DEFAULT_MODES,
        help=f"rows per latency, of {','.join(harness.MODES)} "
        f"(default {','.join(DEFAULT_MODES)}; '' for none)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="add a row of this many consumers on one queue for each consumer mode in --modes "
        "(serial ones when there is none; needs --ledger postgres)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every row this many times, in turns; the table gives each row's medians",
    )
    parser.add_argument(
        "--ledger",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: a file per run; postgres: one database made for the bench, dropped after",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EVENTS} events at 0 ms, unless told otherwise"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        nargs="?",
        const=Path("consumer.prof"),
        help="also run the default consumer under cProfile at the lowest latency, write the "
        "profile here (default consumer.prof) and print its top functions",
    )
    parser.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: each thread's CPU time (default); wall: waiting included",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (consumer logs, ledgers)"
    )
    return parser


def settings_from(argv: Sequence[str] | None) -> tuple[Settings, Path | None]:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.replicas < 1:
        command_line.error("--replicas must be at least 1")
    if args.repeat < 1:
        command_line.error("--repeat must be at least 1")
    if args.replicas > 1 and args.ledger != "postgres":
        command_line.error(
            "--replicas needs --ledger postgres: several consumers share a ledger only there"
        )
    events = (
        args.events if args.events is not None else (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    )
    if events < 1:
        command_line.error("--events must be at least 1")
    latencies = args.latency or (QUICK_LATENCIES if args.quick else DEFAULT_LATENCIES)
    settings = Settings(
        events=events,
        latencies_ms=latencies,
        modes=args.modes,
        replicas=args.replicas,
        repeat=args.repeat,
        ledger=args.ledger,
        profile_to=args.profile,
        profile_clock=args.profile_clock,
        keep=args.keep,
    )
    return settings, args.json


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the bench as Ctrl-C does: through every `finally`, so nothing is left."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    settings, json_path = settings_from(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_bench(settings, out)
    except KeyboardInterrupt:
        print("interrupted: what the bench started is stopped and removed", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.rows:
        print(f"\n{settings.events} events per run, commit {result.context['commit']}:", file=out)
        if settings.repeat > 1:
            print(f"(each row the median of {settings.repeat} runs)", file=out)
        print(table(result.rows), file=out)
        for line in replica_summary(result.rows):
            print(line, file=out)
    if result.profile is not None and result.profile_path is not None:
        print(f"\nprofile: {result.profile_path}", file=out)
        for sort in ("cumulative", "tottime"):
            print(
                "\n" + hotspots(result.profile_path, settings.events, sort=sort, limit=PROFILE_TOP),
                file=out,
            )
    if json_path is not None:
        rows = [*result.rows, *([result.profile] if result.profile else [])]
        write_json(json_path, result.context, rows, runs=result.runs)
        print(f"\nfigures written to {json_path}", file=out)
    return 0
