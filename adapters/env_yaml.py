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


class _EnvLoader(yaml.SafeLoader):
    """A safe loader that knows `!ENV`; one per load, as it remembers what was missing."""

    def __init__(self, stream: Any, environ: Mapping[str, str]) -> None:
        super().__init__(stream)
        self.environ = environ
        self.missing: list[str] = []


def _substitute(loader: _EnvLoader, node: yaml.ScalarNode) -> FromEnv:
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        names.append(name)
        value = loader.environ.get(name)
        if match.group("default") is not None:
            return value or match.group("default")
        if value is None or (not value and match.group("set") is None):
            loader.missing.append(name)
            return ""
        return value

    value = FromEnv(_REFERENCE.sub(replace, loader.construct_scalar(node)))
    value.variable = names[0] if names else ""
    return value


_EnvLoader.add_constructor("!ENV", _substitute)


def load_with_env(path: Path, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The document at `path` with its tags filled in from `environ`, and the required
    variables that were missing or empty, sorted, each once."""
    with path.open() as stream:
        loader = _EnvLoader(stream, environ)
        try:
            return loader.get_single_data(), sorted(set(loader.missing))
        finally:
            loader.dispose()
