"""The README and docs/ hold together: their links land, and the settings table is whole.
(The README's test command and the library example: test_readme.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_config import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
# [text](target): the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_link_lands_on_a_file_and_heading_that_exist(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        landing = (page.parent / path).resolve() if path else page
        assert landing.exists(), f"{target} in {page.name}"
        if anchor:
            assert anchor in anchors(landing), f"{target} in {page.name}"


def test_the_settings_table_has_every_variable_of_env_example() -> None:
    rows = (REPO / "docs" / "configuration.md").read_text().splitlines()
    listed = {
        name
        for row in rows
        if row.startswith("| ")
        for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    example = (REPO / ".env.example").read_text()
    variables = set(re.findall(r"^(?:# ?)?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert len(variables) > 40
    assert variables - listed == set()
