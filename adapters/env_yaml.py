"""`config.yml` as YAML with `!ENV` tags: each tag's `${NAME}` references filled in from the
environment, each value remembering the variable it came from, and every required variable
that was missing or empty kept, so that all of them can be named at once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# ${NAME} required; ${NAME?} must be set but may be empty; ${NAME:-default} optional.
_REFERENCE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<set>\?)|:-(?P<default>[^}]*))?\}"
)


class FromEnv(str):
    """A value an `!ENV` tag filled in, with the variable it came from."""

    variable: str


def load_with_env(path: Path, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The document at `path` with its tags filled in from `environ`, and the required
    variables that were missing or empty, sorted, each once."""
    missing: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        value = environ.get(name)
        if match.group("default") is not None:
            return value or match.group("default")
        if value is None or (not value and match.group("set") is None):
            missing.add(name)
            return ""
        return value

    def substitute(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> FromEnv:
        text = loader.construct_scalar(node)
        value = FromEnv(_REFERENCE.sub(replace, text))
        first = _REFERENCE.search(text)
        value.variable = first.group("name") if first else ""
        return value

    class Loader(yaml.SafeLoader):
        """A safe loader that knows `!ENV`, for this one document."""

    Loader.add_constructor("!ENV", substitute)
    with path.open() as stream:
        return yaml.load(stream, Loader), sorted(missing)
