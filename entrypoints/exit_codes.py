"""The exit statuses of every `s3-events-handler` command, defined once; what each means
for each command is in its `--help` and in docs/operations.md ("Exit statuses")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the shell sees when a command ends; `MEANINGS` says each in one line."""

    OK = 0
    FAILED = 1
    SETTINGS = 2
    TEMPFAIL = 75
    BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program SIGPIPE stopped


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: (
        "something did not go through: dead-lettered, not replayed, a system down, objects missing"
    ),
    ExitCode.SETTINGS: "nothing done: a setting, an argument or a file is wrong",
    ExitCode.TEMPFAIL: (
        "try again later (EX_TEMPFAIL): process's event to be retried, no broker, "
        "a system gone mid-way"
    ),
    ExitCode.BROKEN_PIPE: "standard output closed by its reader (| head): the output cut short",
}
