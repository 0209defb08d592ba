"""The real consumer, killed with SIGKILL right after a chosen step: `CRASH_AT=<step>`.

Steps: `pid` (the PID is in the ledger), `upload` (the sidecar is on the server),
`transfer` (the broker confirmed the transfer request), `ack` (the handler is done,
the message not yet acked). Run as `python -m tests.faults.crashing_consumer`.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from dependency_injector import providers

from s3_events_handler.entrypoints.service import consume, start

CRASH_POINTS = {"pid": ("ledger", "claim_pid"), "upload": ("transport", "upload"),
                "transfer": ("transfers", "publish"), "ack": ("handler", "handle")}  # fmt: skip


class CrashAfter:
    """Stands in for an adapter; after `method` returned, the process dies on the spot."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner = inner
        self._method = method

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            sys.stderr.write(f"crashing after {self._method}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
            return result

        return call


def main() -> int:
    provider_name, method = CRASH_POINTS[os.environ["CRASH_AT"]]
    container = start(Path(os.environ["CONFIG_PATH"]))
    provider = getattr(container, provider_name)
    provider.override(providers.Object(CrashAfter(provider(), method)))
    try:
        return consume(container)
    finally:
        container.shutdown_resources()


if __name__ == "__main__":
    sys.exit(main())
