"""A command and whoever runs it: a one-line complaint on standard error, standard output
that its reader may close half-way (`| head`), and a yes-or-no question on a terminal."""

from __future__ import annotations

import os
import sys
from typing import TextIO

PROG = "s3-events-handler"


def complain(message: str) -> None:
    """`message` on standard error, after the program's name, as every command says trouble."""
    print(f"{PROG}: {message}", file=sys.stderr)


class Output:
    """A stream its reader may close half-way (`list | head`): from then on nothing more is
    written, and `gone` tells the caller to stop, so a command reading the dead-letter queue
    leaves it as it was rather than failing in the middle of it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.gone = False

    def line(self, text: str) -> None:
        if self.gone:
            return
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            self.gone = True
            stop_writing(self._out)


def stop_writing(out: TextIO) -> None:
    """Point `out` at /dev/null once its reader has gone, so that what is still buffered,
    and the interpreter's last flush at exit, do not fail again."""
    try:
        descriptor = out.fileno()
    except (OSError, ValueError):  # no descriptor: nothing to flush at exit either
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


def is_yes(answer: str) -> bool:
    """`y` or `yes`, in any case: anything else, nothing at all included, is no."""
    return answer.strip().lower() in ("y", "yes")


def printable(text: str) -> str:
    """One line on a terminal: control characters (from a hostile key, say) shown escaped."""
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
