"""The destination table (`DESTINATION_CONFIG`): which folder of the transport server each
CP's sidecars go to, by environment and kind of file."""

from __future__ import annotations

from pathlib import Path

import yaml

from s3_events_handler.adapters.config import ConfigError
from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.model import DEFAULT_FOLDER, Destinations, FileKind
from s3_events_handler.domain.rules import require_path_segment


def load_destinations(path: Path, *, environment: str, transfer_host: str) -> Destinations:
    """The destination table of one environment, CP names lower-cased for matching; the caller
    logs it once the start has succeeded.

    A table that cannot be read or is not the documented shape stops the start, naming
    `DESTINATION_CONFIG`: guessing would send sidecars to the wrong folder.
    """
    try:
        with path.open() as stream:
            table = yaml.safe_load(stream)
    except OSError as error:
        problems = [f"cannot be read: {error.strerror}"]
    except yaml.YAMLError as error:
        problems = [f"cannot be parsed as YAML: {_yaml_problem(error)}"]
    else:
        folders, problems = _folders(table, environment)
    if problems:
        raise ConfigError.of(
            f"DESTINATION_CONFIG={str(path)!r} is not valid: " + "; ".join(problems)
        )
    return Destinations(transfer_host=transfer_host, folders=folders)


def _folders(table: object, environment: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """environment -> CP name -> {essence, collateral} -> folder; also every shape problem."""
    table = {} if table is None else table
    if not isinstance(table, dict):
        return {}, ["it does not hold a mapping of environments"]
    # APP_ENVIRONMENT is compared case-insensitively, here as for the PID service.
    section = table.get(environment)
    if section is None:
        wanted = environment.lower()
        section = next((v for k, v in table.items() if str(k).lower() == wanted), None)
    section = {} if section is None else section
    if not isinstance(section, dict):
        return {}, [f"{environment} is not a mapping of CP names"]
    kinds = [kind.value for kind in FileKind]
    folders: dict[str, dict[str, str]] = {}
    problems = []
    for cp_name, by_kind in section.items():
        where = f"{environment}.{cp_name}"
        if not isinstance(by_kind, dict):
            problems.append(f"{where} is not a mapping of {' and '.join(kinds)}")
            continue
        problems.extend(
            f"{where}.{key} is not one of {', '.join(kinds)}" for key in by_kind if key not in kinds
        )
        entry = {}
        for kind in kinds:
            folder = by_kind.get(kind, DEFAULT_FOLDER)
            if not isinstance(folder, str):
                problems.append(f"{where}.{kind} is not a folder name")
                continue
            try:
                entry[kind] = require_path_segment(folder, "folder")
            except BadInput as error:
                problems.append(f"{where}.{kind}: {error}")
        folders[str(cp_name).lower()] = entry
    return folders, problems


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message spans lines and repeats the path; where and what fit on one."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return one_line(str(error))
