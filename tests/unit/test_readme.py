"""The README's library example runs as printed.

Here in-process, on the editable install, in milliseconds; `tests/library/` runs the same
block from the installed wheel, beside a service with its own `domain`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY_SECTION = "## Using it as a library"


def library_example(readme: Path = REPO / "README.md") -> str:
    """The first Python block of the README's library section: the module a service writes."""
    text = readme.read_text()
    section = text[text.index(LIBRARY_SECTION) :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, f"no ```python block under {LIBRARY_SECTION!r}"
    return code.group(1)


def test_the_library_example_in_the_readme_makes_the_golden_sidecar(examples: Path) -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(library_example(), "README.md", "exec"), namespace)
    sidecars_for = namespace["sidecars_for"]
    assert callable(sidecars_for)
    message = json.loads((examples / "event-essence-created.json").read_text())
    sidecar = (examples / "sidecar-essence.xml").read_bytes()
    assert sidecars_for(message) == {"/VRT/DISK-SHARE-EVENTS/k98z0d4w1q.xml": sidecar}
