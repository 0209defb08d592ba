"""The loopback world a run needs, and one run in it: feed, start, watch, stop, measure.

The fakes of MediaHaven, the PID service and the Organisations API (each with an added
latency per call), the FTP server and the queues are `tests/e2e/service.py`'s, so the
consumer is started exactly as the end-to-end tests start it. Everything a run waits
for is polled from one loop, without threads of the bench's own: the fake servers'
threads are the only other Python threads in the bench process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pika

from tests.bench import procstat
from tests.bench.events import Event, essence_events
from tests.bench.recorder import TransferRecorder
from tests.bench.report import MIB, PROGRESS_POINTS, Measurement, RssSample, percentile
from tests.e2e.service import FOLDERS, OR_ID, RunningService, command
from tests.support import amqp
from tests.support.http_stubs import FakeOrganisationsApi, FakePidService
from tests.support.mediahaven_server import FakeMediaHaven

REPO = Path(__file__).resolve().parents[2]
# What the consumer logs once it has subscribed to the incoming queue (the floor prints it too,
# in the same JSON shape).
SUBSCRIBED = b"consuming from"
PUBLISHED_HEADER = "x-bench-published-at"
"""Microseconds since the epoch when the bench published the event."""
POLL_SECONDS = 0.005
SAMPLE_SECONDS = 0.5
STARTUP_TIMEOUT = 60.0
STALL_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 15


class BenchError(RuntimeError):
    """A run that could not finish, with why and the end of the logs that say more."""


@dataclass(frozen=True)
class Mode:
    """What a row of the table runs: the consumer (how many, in which environment) or the floor."""

    name: str
    label: str
    processes: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    floor: bool = False
    profile_to: Path | None = None
    profile_clock: str = "cpu"
    wrapper: tuple[str, ...] = ()
    """A command the process runs under (valgrind, for `tests.bench.instructions`)."""
    patience: float = 1.0
    """How many times the usual time to start, progress and stop the process may take."""

    def argv(self) -> list[str]:
        return [*self.wrapper, *self._command()]

    def _command(self) -> list[str]:
        if self.floor:
            return [sys.executable, "-m", "tests.bench.floor"]
        if self.profile_to is not None:
            profiler = [sys.executable, "-m", "tests.bench.profiled", "--clock", self.profile_clock]
            return [*profiler, str(self.profile_to), "consume"]
        return [*command(), "consume"]


FLOOR = Mode("floor", "floor (bare serial loop)", floor=True)
# CONCURRENCY is being added to the service; until then it is ignored, and these two agree.
SERIAL = Mode("serial", "serial (CONCURRENCY=1)", env={"CONCURRENCY": "1"})
DEFAULT = Mode("default", "default settings")
# The consumer gets the bench's settings, not its environment: this is how to measure it unpinned.
UNPINNED = Mode("unpinned", "unpinned (PIN_CPU=false)", env={"PIN_CPU": "false"})
MODES = {mode.name: mode for mode in (FLOOR, SERIAL, DEFAULT, UNPINNED)}


def replicas(count: int, each: Mode = SERIAL) -> Mode:
    """`count` consumers like `each` on one queue: several processes sharing the work."""
    if each.floor or each.profile_to is not None:
        raise ValueError(f"replicas are consumers, not {each.label}")
    suffix = "" if each is SERIAL else f"-{each.name}"
    label = each.label if each is DEFAULT else each.label.split(" ", 1)[1]
    return Mode(
        f"replicas{suffix}",
        f"{count} replicas ({label})" if each is DEFAULT else f"{count} replicas {label}",
        processes=count,
        env=each.env,
    )


def profiled(path: Path, clock: str = "cpu") -> Mode:
    """The default consumer under cProfile (`tests.bench.profiled`): slower; not a table row."""
    return Mode(
        "profile",
        f"default settings, under cProfile ({clock} clock)",
        profile_to=path,
        profile_clock=clock,
    )


@dataclass
class _Process:
    """One started process, and what the bench has seen of it."""

    popen: subprocess.Popen[bytes]
    log: Path
    subscribed_at: float | None = None
    cpu_at_subscription: float = 0.0
    machine_at_subscription: tuple[int, int] = (0, 0)
    """`procstat.machine_ticks()` when the bench saw it subscribe."""
    _searched: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def subscription(self) -> float | None:
        """When its log says it subscribed, or None while it does not say so yet.

        The time is the log line's own (`time`, in the JSON log format), which the bench
        may read a poll later; where a line has none, the moment the bench read it.
        Reads only what was added to the log since the last call.
        """
        start = max(0, self._searched - len(SUBSCRIBED) + 1)
        with self.log.open("rb") as log:
            log.seek(start)
            text = log.read()
        self._searched = start + len(text)
        found = text.find(SUBSCRIBED)
        if found < 0:
            return None
        line = text[text.rfind(b"\n", 0, found) + 1 :].split(b"\n", 1)[0]
        try:
            return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return time.time()

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def _in_memory_folder() -> Path | None:
    """A new folder in memory (tmpfs), where the system has one, else None.

    For the FTP server's files: on a slow disk, creating a file for each sidecar cost
    the fake server more CPU than the consumer spent on the whole event, on the same
    two CPUs. The ledger stays on disk: its syncs are part of what the consumer costs.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK | os.X_OK):
        return None
    return Path(tempfile.mkdtemp(prefix="s3eh-bench-ftp-", dir=shm))


def _rss_mib(processes: Sequence[_Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(OSError, LookupError):  # it has just exited
            total += procstat.rss_kib(process.pid)
    return total / MIB


class Rig:
    """The fakes and the queues, started once for every run of a bench and removed after it."""

    def __init__(self, workdir: Path, broker: tuple[str, int], *, ledger_dsn: str | None) -> None:
        self.workdir = workdir
        self.ledger_dsn = ledger_dsn
        self._ftp_root = _in_memory_folder() or workdir / "ftp"
        self.service = RunningService(
            workdir=workdir,
            broker=broker,
            mediahaven=FakeMediaHaven(),
            # The real services keep connections alive; a fake that closes them would add
            # a connection per call to every event's cost.
            pid_service=FakePidService(keep_alive=True),
            organisations=FakeOrganisationsApi({OR_ID: "VRT"}, keep_alive=True),
            label="bench",
            ftp_root=self._ftp_root,
        )

    def __enter__(self) -> Self:
        try:
            self.service.start_fakes()
        except BaseException:
            self.service.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.service.close()
        finally:
            shutil.rmtree(self._ftp_root, ignore_errors=True)

    def set_latency(self, milliseconds: float) -> None:
        seconds = milliseconds / 1000
        self.service.mediahaven.latency = seconds
        self.service.pid_service.latency = seconds
        self.service.organisations.latency = seconds

    def run(self, mode: Mode, count: int, latency_ms: float) -> Measurement:
        """Preload `count` events, start `mode`, wait until every transfer request is in,
        stop it and say what it took."""
        self.set_latency(latency_ms)
        settings = self.service.settings
        amqp.purge(settings.host, settings.port, settings.incoming_queue, settings.transfer_queue)
        self._clear_ftp()
        tag = uuid.uuid4().hex[:8]
        events = essence_events(count, tag)
        published = self._preload(events)
        env = self._environment(mode, tag)
        processes: list[_Process] = []
        with TransferRecorder(
            settings.host, settings.port, settings.transfer_queue, [e.request_id for e in events]
        ) as recorder:
            started = time.time()
            try:
                for n in range(mode.processes):
                    processes.append(self._launch(mode, env, f"{mode.name}-{tag}-{n}"))
                ended, cpu, peaks, samples, busy = self._watch(
                    processes, recorder, count, started, mode.patience
                )
            finally:
                self._stop(processes, mode.patience)
        subscribed = [p.subscribed_at for p in processes if p.subscribed_at is not None]
        first = min(subscribed)
        seconds = ended - first
        latencies = [
            (recorder.arrivals[e.request_id] - published[e.request_id]) * 1000 for e in events
        ]
        return Measurement(
            mode=mode.name,
            label=mode.label,
            latency_ms=latency_ms,
            events=count,
            processes=mode.processes,
            seconds=seconds,
            events_per_second=count / seconds,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            cpu_ms_per_event=cpu * 1000 / count,
            machine_busy=busy,
            peak_rss_mib=max(peaks) / MIB,
            peak_rss_mib_total=sum(peaks) / MIB,
            startup_seconds=first - started,
            rss_at_progress=_rss_at_progress(samples, count),
            rss_series=samples,
            log_files=[str(p.log) for p in processes],
        )

    # -- the steps of a run --------------------------------------------------------------------

    def _clear_ftp(self) -> None:
        """Sidecars of earlier runs out of the way, so every run writes into the same folders."""
        for folder in FOLDERS:
            for path in (self.service.ftp.root / folder).iterdir():
                path.unlink()

    def _preload(self, events: Sequence[Event]) -> dict[str, float]:
        """Every event in the incoming queue before anything consumes it; when each was sent."""
        published: dict[str, float] = {}

        def stamp(n: int) -> Any:
            now = time.time()
            published[events[n].request_id] = now
            return pika.BasicProperties(
                delivery_mode=2,
                timestamp=int(now),
                headers={PUBLISHED_HEADER: int(now * 1_000_000)},
            )

        amqp.publish_persistent(
            self.service.settings, (event.body for event in events), properties=stamp
        )
        return published

    def _environment(self, mode: Mode, tag: str) -> dict[str, str]:
        env = self.service.environment(
            LEDGER_PATH=str(self.workdir / f"ledger-{tag}.sqlite3"),
            # As in any container: without HOME, requests looks the user up (getpwuid) to
            # find ~/.netrc on every call, which a deployed consumer does not pay for.
            HOME=str(self.workdir),
            # Replicas side by side would all bind the same port; an idle scrape endpoint
            # costs nothing measurable.
            METRICS_PORT="0",
        )
        if self.ledger_dsn:
            env["LEDGER_DSN"] = self.ledger_dsn
        if mode.floor or mode.profile_to is not None:
            env["PYTHONPATH"] = str(REPO)  # for `python -m tests.bench.…`
        env.update(mode.env)
        return env

    def _launch(self, mode: Mode, env: dict[str, str], name: str) -> _Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as output:
            popen = subprocess.Popen(
                mode.argv(), env=env, stdout=output, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        return _Process(popen=popen, log=log)

    def _watch(
        self,
        processes: Sequence[_Process],
        recorder: TransferRecorder,
        count: int,
        started: float,
        patience: float = 1.0,
    ) -> tuple[float, float, list[int], list[RssSample], float]:
        """Until every transfer request is in: (when the last came, CPU seconds the processes
        spent since they subscribed, their peak RSS in KiB, RSS samples, the share of the
        machine's CPUs busy meanwhile)."""
        startup_timeout, stall_timeout = STARTUP_TIMEOUT * patience, STALL_TIMEOUT * patience
        samples: list[RssSample] = []
        next_sample = 0.0
        done, progressed = 0, started
        while not recorder.complete:
            recorder.poll(POLL_SECONDS)
            now = time.time()
            if recorder.count > done:
                done, progressed = recorder.count, now
            for process in processes:
                if process.subscribed_at is None:
                    process.subscribed_at = process.subscription()
                    if process.subscribed_at is not None:
                        process.cpu_at_subscription = procstat.cpu_seconds(process.pid)
                        process.machine_at_subscription = procstat.machine_ticks()
                if process.popen.poll() is not None:
                    raise BenchError(
                        f"{process.log.name} exited with {process.popen.returncode} after "
                        f"{recorder.count} of {count} events:\n{process.tail()}"
                    )
            if now - started >= next_sample:
                samples.append(RssSample(now - started, recorder.count, _rss_mib(processes)))
                next_sample += SAMPLE_SECONDS
            if not any(p.subscribed_at for p in processes):
                if now - started > startup_timeout:
                    raise BenchError(
                        f"nothing subscribed within {startup_timeout:.0f} s:\n{processes[0].tail()}"
                    )
            elif now - progressed > stall_timeout:
                raise BenchError(
                    f"no transfer request for {stall_timeout:.0f} s after {done} of {count} "
                    f"events (retried or dead-lettered?):\n{processes[0].tail()}"
                )
        ended = recorder.last_arrival
        machine = procstat.machine_ticks()
        first = min((p for p in processes if p.subscribed_at), key=lambda p: p.subscribed_at or 0)
        busy = machine[0] - first.machine_at_subscription[0]
        total = machine[1] - first.machine_at_subscription[1]
        cpu = sum(
            procstat.cpu_seconds(p.pid) - p.cpu_at_subscription
            for p in processes
            if p.subscribed_at is not None
        )
        peaks = [procstat.peak_rss_kib(p.pid) for p in processes]
        samples.append(RssSample(time.time() - started, recorder.count, _rss_mib(processes)))
        if recorder.strays or recorder.duplicates:
            print(
                f"  note: {recorder.strays} unexpected and {recorder.duplicates} duplicate "
                "transfer requests",
                file=sys.stderr,
            )
        return ended, cpu, peaks, samples, busy / total if total else 0.0

    def _stop(self, processes: Sequence[_Process], patience: float = 1.0) -> None:
        """SIGTERM, as a platform stops a pod; killed when one does not stop in time."""
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                status = process.popen.wait(timeout=STOP_TIMEOUT * patience)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
                print(f"  note: {process.log.name} had to be killed", file=sys.stderr)
                continue
            if status != 0:
                print(f"  note: {process.log.name} exited with {status}", file=sys.stderr)


def _rss_at_progress(samples: Sequence[RssSample], count: int) -> dict[int, float]:
    """RSS when the run was first seen at least 10 %, 50 %, 90 %, 100 % through its events."""
    found: dict[int, float] = {}
    for point in PROGRESS_POINTS:
        needed = math.ceil(point / 100 * count)
        for sample in samples:
            if sample.done >= needed:
                found[point] = sample.rss_mib
                break
    return found
