"""The README's library example runs as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_library_example_in_the_readme_works(examples: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Using it as a library") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    event = json.loads((examples / "event-essence-created-no-md5.json").read_text())
    namespace = {"record": event["Records"][0], "print": lambda *args: None}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    assert list(namespace["transport"].uploaded) == ["/VRT/DISK-SHARE-EVENTS/pid0000001.xml"]
    assert len(namespace["transfers"].published) == 1
