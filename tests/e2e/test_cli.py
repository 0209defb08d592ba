"""The command line itself: `--version`, every command's `--help`, `--config` on either side of
the command."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.e2e.service import REPO, RunningService, command
from tests.support import amqp

pytestmark = pytest.mark.e2e

COMMANDS = [
    ("consume",),
    ("process",),
    ("demo",),
    ("check-config",),
    ("dead-letters",),
    ("dead-letters", "list"),
    ("dead-letters", "show"),
    ("dead-letters", "replay"),
    ("dead-letters", "drop"),
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    shown = run("--version", cwd=tmp_path)
    assert (shown.returncode, shown.stdout) == (
        0,
        f"s3-events-handler {version('s3-events-handler')}\n",
    )


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_has_its_own_help(tmp_path: Path, words: tuple[str, ...]) -> None:
    shown = run(*words, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: s3-events-handler {' '.join(words)} ")
    assert "example" in shown.stdout
    assert ("--config" in shown.stdout) == (words != ("demo",))


def test_the_top_help_lists_every_command(tmp_path: Path) -> None:
    shown = run("--help", cwd=tmp_path)
    for name in ("consume", "process", "demo", "check-config", "dead-letters", "--version"):
        assert name in shown.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--config", "CONFIG", "dead-letters", "list"], id="before the command"),
        pytest.param(["dead-letters", "list", "--config", "CONFIG"], id="after the command"),
        pytest.param(["dead-letters", "--config", "CONFIG", "list"], id="between the words"),
    ],
)
def test_config_is_taken_before_or_after_the_command(
    service: RunningService, args: list[str]
) -> None:
    amqp.declare_service_topology(service.settings)
    argv = [str(REPO / "config.yml") if arg == "CONFIG" else arg for arg in args]
    listed = service.run(*argv, CONFIG_PATH=str(service.workdir / "not-this.yml"))
    assert listed.returncode == 0, listed.stderr


def test_a_config_given_after_the_command_wins_over_the_environment(
    service: RunningService,
) -> None:
    started = service.run("consume", "--config", "other.yml")
    assert started.returncode == 2
    assert "other.yml" in started.stderr
