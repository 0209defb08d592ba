"""The README shows the test command CI runs, and the library example runs as printed.

The example lives in docs/library.md (the README points to it). Here it runs in-process, on
the editable install, in milliseconds; `tests/library/` runs the same block from the
installed wheel, beside a service with its own `domain`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY_PAGE = REPO / "docs" / "library.md"


def library_example(page: Path = LIBRARY_PAGE) -> str:
    """The page's first Python block: the module a service writes."""
    code = re.search(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    assert code is not None, f"no ```python block in {page.name}"
    return code.group(1)


def test_the_readme_shows_the_test_command_ci_runs() -> None:
    """`.ci/run` ends with the README's test command, and says so."""
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith(".venv/bin/python -m pytest")
    assert command in (REPO / "README.md").read_text()


def test_the_library_example_makes_the_golden_sidecar(examples: Path) -> None:
    namespace: dict[str, object] = {"__name__": "library_example"}
    exec(compile(library_example(), "docs/library.md", "exec"), namespace)
    sidecars_for = namespace["sidecars_for"]
    assert callable(sidecars_for)
    message = json.loads((examples / "event-essence-created.json").read_text())
    sidecar = (examples / "sidecar-essence.xml").read_bytes()
    assert sidecars_for(message) == {"/VRT/DISK-SHARE-EVENTS/k98z0d4w1q.xml": sidecar}
