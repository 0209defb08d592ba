"""The building blocks of the command line: a command with its own help and `--config` after
its name too, and the types its arguments are checked against."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any


def config_option(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """`--config`: where the settings structure is, `default` when not given."""
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help="settings structure (default: $CONFIG_PATH or ./config.yml)",
    )


def add_command(
    commands: Any,
    name: str,
    summary: str,
    text: str,
    *,
    reads_settings: bool = True,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """A command `name` of `commands` (argparse's subparsers): `summary` in its parent's list,
    `text` in its own help, `defaults` set on the arguments it parses."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if reads_settings:  # `--config` after the command too; SUPPRESS keeps one given before it
        config_option(sub, default=argparse.SUPPRESS)
    sub.set_defaults(**defaults)
    return sub


def choice_arguments(sub: argparse.ArgumentParser, done: str) -> None:
    """How `replay` and `drop` are told which dead letters: one way, never all by default."""
    chosen = sub.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--all", action="store_true",
        help="every dead letter (never by default: one of these four choices is needed)",
    )  # fmt: skip
    chosen.add_argument(
        "--id", dest="ids", action="append", metavar="ID", type=non_empty,
        help="the dead letter with this id (as listed); repeat for more",
    )  # fmt: skip
    chosen.add_argument(
        "--reason", metavar="TEXT", type=non_empty,
        help="those whose x-error contains TEXT, in any case",
    )  # fmt: skip
    chosen.add_argument(
        "--reason-regex", metavar="PATTERN", type=regular_expression,
        help="those whose x-error matches the regular expression PATTERN (searched)",
    )  # fmt: skip
    sub.add_argument(
        "--limit", metavar="N", type=positive,
        help="at most the first N of those chosen (head first); not with --id",
    )  # fmt: skip
    sub.add_argument(
        "--dry-run", action="store_true", help=f"list what would be {done}; change nothing"
    )

    def check(args: argparse.Namespace) -> None:
        if args.limit is not None and args.ids:
            sub.error("--limit goes with --all, --reason or --reason-regex: ids say which")

    sub.set_defaults(check=check)


def non_empty(text: str) -> str:
    """Text that says something: an id, a piece of a reason."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def positive(text: str) -> int:
    """A whole number of 1 or more: a `--limit`."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def regular_expression(text: str) -> str:
    """A regular expression Python compiles, kept as text."""
    try:
        re.compile(non_empty(text))
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a regular expression: {error}") from None
    return text
