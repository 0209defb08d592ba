"""promtool, from Debian's prometheus package: skipped without it unless REQUIRE_PROMTOOL=1."""

from __future__ import annotations

import os
import shutil

import pytest


def promtool() -> str:
    """The path of promtool; skips the test without it, or fails under REQUIRE_PROMTOOL=1."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found (REQUIRE_PROMTOOL=1); apt-get install prometheus")
        pytest.skip("promtool not found; apt-get install prometheus")
    return found
