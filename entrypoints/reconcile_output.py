"""What `reconcile` prints: a line per object not archived, a progress line on a terminal,
the summary on standard error."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from s3_events_handler.domain.bucket import ObjectState, Reconciled
from s3_events_handler.entrypoints.terminal import printable

# How often the progress line is redrawn, at most.
PROGRESS_SECONDS = 0.5


class Report:
    """Each result as it comes, never the listing held: only the counts are kept."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        as_json: bool,
        enqueue: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.err = err
        self._as_json = as_json
        self._enqueue = enqueue
        self._clock = clock
        self._started = clock()
        self._drawn = self._started
        self._progress = err.isatty()
        self.counts: Counter[ObjectState] = Counter()
        self.enqueued = 0

    @property
    def missing(self) -> int:
        return self.counts[ObjectState.MISSING]

    def add(self, result: Reconciled) -> None:
        self.counts[result.state] += 1
        self.enqueued += result.enqueued
        if result.state is not ObjectState.ARCHIVED:
            self._clear_progress()
            print(self._line(result), file=self.out, flush=self._progress)
        if self._progress and self._clock() - self._drawn >= PROGRESS_SECONDS:
            self._drawn = self._clock()
            self.err.write(f"\r{self._tally()} …")
            self.err.flush()

    def close(self, where: str) -> None:
        """The summary: counts by state, objects a second, the time taken."""
        self._clear_progress()
        self.out.flush()
        seconds = max(self._clock() - self._started, 1e-9)
        looked_at = sum(self.counts.values())
        print(
            f"{looked_at} object(s) of {where} looked at in {seconds:.1f} s "
            f"({looked_at / seconds:.0f} objects/s): {self._tally()}",
            file=self.err,
        )

    def _tally(self) -> str:
        tally = ", ".join(f"{self.counts[state]} {state.value}" for state in ObjectState)
        return f"{tally}, {self.enqueued} enqueued" if self._enqueue else tally

    def _line(self, result: Reconciled) -> str:
        stored = result.object
        modified = stored.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._as_json:
            facts: dict[str, object] = {
                "bucket": stored.bucket,
                "key": stored.key,
                "size": stored.size,
                "last_modified": modified,
                "state": result.state.value,
            }
            if self._enqueue:
                facts["enqueued"] = result.enqueued
            return json.dumps(facts, ensure_ascii=False)
        line = f"{result.state.value:<9}  {modified}  {stored.size:>13}  {printable(stored.key)}"
        return f"{line}  (enqueued)" if result.enqueued else line

    def _clear_progress(self) -> None:
        if self._progress and self._drawn != self._started:
            self.err.write("\r\x1b[K")
            self.err.flush()
