"""The project as another service gets it: a wheel, installed in a fresh venv beside a
service that has its own `domain` package.

The editable install and the repository's own folders on `sys.path` hide exactly what goes
wrong here (a bare top-level `domain`, a missing `py.typed`, a module left out of the
wheel), so none of that is used: the wheel is built from a copy of the sources and the
service runs in a venv that has only the wheel and its dependencies.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.test_readme import library_example

pytestmark = pytest.mark.library

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "application", "adapters", "entrypoints")
# Left out of the copy the wheel is built from: what a clean checkout does not have.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".env",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.sqlite3",
)
# What pip says when it cannot get a build dependency or a dependency at all: this machine
# cannot build or install anything, which says nothing about the project.
NO_INDEX = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
)

# The service's own `domain`: the name every hexagonal service uses for its core.
SERVICE_DOMAIN_INIT = '"""The tiny service\'s own domain, not s3-events-handler\'s."""\n'
SERVICE_DOMAIN_MODEL = '''"""What the tiny service itself is about."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Shipment:
    """A value of the service's own, to show its `domain` is the one imported."""

    reference: str
'''
SERVICE_MAIN = '''"""Archives an S3 event on in-memory adapters; says, as JSON, what it imported."""

import json
import sys
from pathlib import Path

import domain.model
import s3_events_handler.domain.model
from archive import sidecars_for
from domain.model import Shipment


def main(event_file: str) -> None:
    message = json.loads(Path(event_file).read_text())
    sidecars = sidecars_for(message)
    report = {
        "own": Shipment(reference="s-1").reference,
        "own_domain": domain.model.__file__,
        "our_domain": s3_events_handler.domain.model.__file__,
        "top_level": {
            name: getattr(sys.modules.get(name), "__file__", None)
            for name in ("domain", "application", "adapters", "entrypoints")
        },
        "sidecars": {path: body.decode("utf-8") for path, body in sidecars.items()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
'''


@dataclass(frozen=True)
class Installed:
    """A fresh venv with the wheel and its dependencies in it."""

    python: Path
    site_packages: Path

    @property
    def bin(self) -> Path:
        return self.python.parent


def missing(what: str) -> None:
    """Skip, or fail when the run says the library must be tested (as REQUIRE_BROKER does)."""
    if os.environ.get("REQUIRE_LIBRARY") == "1":
        pytest.fail(f"{what} (REQUIRE_LIBRARY=1)")
    pytest.skip(f"{what}; set REQUIRE_LIBRARY=1 to make this a failure")


def clean_environment() -> dict[str, str]:
    """The caller's environment without what would let this checkout leak into the venv
    (PYTHONPATH, MYPYPATH, the active venv); pip's own settings stay."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTHON", "MYPY")) and name != "VIRTUAL_ENV"
    }


def run(command: Sequence[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=cwd,
        timeout=300,
        check=False,
    )


def pip(python: str | Path, *args: str | Path, doing: str) -> None:
    """pip, with its cache; no index to reach skips (or fails), any other failure fails."""
    done = run([python, "-m", "pip", "--disable-pip-version-check", "--quiet", *args])
    if done.returncode == 0:
        return
    said = done.stdout + done.stderr
    why = [line.strip() for line in said.splitlines() if any(s in line for s in NO_INDEX)]
    if why:
        missing(f"cannot {doing}: pip reaches no package index ({why[0]})")
    raise AssertionError(f"pip could not {doing} (exit {done.returncode}):\n{said}")


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the sources, installed once with its dependencies."""
    root = tmp_path_factory.mktemp("library")
    sources = root / "sources"
    shutil.copytree(REPO, sources, ignore=NOT_SOURCES)
    pip(
        sys.executable,
        "wheel",
        "--no-deps",
        "--wheel-dir",
        root / "dist",
        sources,
        doing="build the wheel",
    )
    [wheel] = (root / "dist").glob("*.whl")
    made = run([sys.executable, "-m", "venv", root / "venv"])
    if made.returncode != 0:
        missing(f"cannot make a venv (python3-venv missing?): {made.stderr.strip()}")
    python = root / "venv" / "bin" / "python"
    pip(python, "install", wheel, doing="install the wheel and its dependencies")
    where = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    return Installed(python=python, site_packages=Path(where.stdout.strip()))


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service of its own: its `domain` package, docs/library.md's example as `archive.py`,
    and a `main.py` that uses both."""
    root = tmp_path_factory.mktemp("service")
    (root / "domain").mkdir()
    (root / "domain" / "__init__.py").write_text(SERVICE_DOMAIN_INIT)
    (root / "domain" / "model.py").write_text(SERVICE_DOMAIN_MODEL)
    (root / "archive.py").write_text(library_example())
    (root / "main.py").write_text(SERVICE_MAIN)
    (root / "mypy.ini").write_text("[mypy]\n")  # its own, so no other configuration is read
    return root


def test_a_service_with_its_own_domain_archives_the_golden_event(
    installed: Installed, service: Path, examples: Path
) -> None:
    done = run([installed.python, "main.py", examples / "event-essence-created.json"], service)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    sidecars = {path: text.encode("utf-8") for path, text in report["sidecars"].items()}
    golden = (examples / "sidecar-essence.xml").read_bytes()
    assert sidecars == {"/VRT/DISK-SHARE-EVENTS/k98z0d4w1q.xml": golden}
    # The service's `domain` is its own, ours is where pip put it, and ours never
    # claimed (or imported) a bare layer name.
    assert report["own"] == "s-1"
    assert Path(report["own_domain"]) == service / "domain" / "model.py"
    ours = installed.site_packages / "s3_events_handler" / "domain" / "model.py"
    assert Path(report["our_domain"]) == ours
    assert report["top_level"] == {
        "domain": str(service / "domain" / "__init__.py"),
        "application": None,
        "adapters": None,
        "entrypoints": None,
    }


def test_the_wheel_installs_one_top_level_name_holding_the_four_layers(
    installed: Installed,
) -> None:
    site = installed.site_packages
    [dist_info] = site.glob("s3_events_handler-*.dist-info")
    with (dist_info / "RECORD").open(newline="") as record:
        # Paths outside site-packages (`../../../bin/s3-events-handler`) are the command.
        top_level = {row[0].split("/")[0] for row in csv.reader(record) if row[0][:3] != "../"}
    assert top_level == {"s3_events_handler", dist_info.name}
    package = site / "s3_events_handler"
    assert not (package / "__init__.py").exists()  # a namespace: the layers and nothing else
    assert sorted(p.name for p in package.iterdir() if p.name != "__pycache__") == sorted(LAYERS)
    assert [layer for layer in LAYERS if not (package / layer / "py.typed").is_file()] == []
    assert [layer for layer in LAYERS if (site / layer).exists()] == []


def test_the_service_passes_mypy_strict_against_the_installed_wheel(
    installed: Installed, service: Path
) -> None:
    """The project's mypy, looking only at the venv's site-packages: the wheel's `py.typed`
    is what makes its types count (without it: "missing library stubs or py.typed")."""
    done = run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-executable",
            installed.python,
            "--config-file",
            service / "mypy.ini",
            "--cache-dir",
            service / ".mypy_cache",
            "main.py",
            "archive.py",
            "domain",
        ],
        cwd=service,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_installed_command_runs_the_demo(installed: Installed) -> None:
    """The wheel's console script, and the demo needing nothing from the repository."""
    done = run([installed.bin / "s3-events-handler", "demo"])
    assert done.returncode == 0, done.stderr
    assert "--- sidecar /VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml" in done.stdout
