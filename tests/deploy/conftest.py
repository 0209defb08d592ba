"""The kustomize the deploy tests render with: skipped without one, unless REQUIRE_KUSTOMIZE=1
(as .ci/run sets it), then a failure."""

from __future__ import annotations

import os

import pytest

from tests.deploy.manifests import kustomize_command


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    command = kustomize_command()
    if command is None:
        what = "no kubectl with kustomize v4 or newer here to render deploy/"
        if os.environ.get("REQUIRE_KUSTOMIZE") == "1":
            pytest.fail(f"{what} (REQUIRE_KUSTOMIZE=1)")
        pytest.skip(what)
    return command
