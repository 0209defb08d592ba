"""The real `s3-events-handler` command, killed with SIGKILL around a chosen transaction commit:
`REPLAY_CRASH=<when>:<n>`.

`before-commit:3` dies once the third dead letter's copy is published and its ack sent,
but not committed; `after-commit:3` dies as soon as the broker confirmed the third commit.
Run as `python -m tests.e2e.crashing_replay dead-letters replay ...`.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from s3_events_handler.entrypoints.cli import main as cli

WHEN = ("before-commit", "after-commit")


def die(why: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"crashing {why}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def crash_around_commit(when: str, nth: int) -> None:
    """From now on, the process dies at `when` of the `nth` commit on any channel."""
    if when not in WHEN:
        raise ValueError(f"REPLAY_CRASH wants one of {WHEN}, not {when!r}")
    commit = BlockingChannel.tx_commit
    commits = 0

    def tx_commit(channel: Any) -> Any:
        nonlocal commits
        commits += 1
        if commits == nth and when == "before-commit":
            die(f"before commit {nth}")
        result = commit(channel)
        if commits == nth and when == "after-commit":
            die(f"after commit {nth}")
        return result

    BlockingChannel.tx_commit = tx_commit


def main() -> int:
    when, nth = os.environ["REPLAY_CRASH"].split(":")
    crash_around_commit(when, int(nth))
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
