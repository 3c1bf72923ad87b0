"""The README and the documentation refer to nothing outside the repository: every relative link of the
README and every repository path either names (`src/...`, `tests/...`) exists in the clone, and no path
climbs out of it. (Links between the documentation's pages are checked by `mkdocs build --strict`,
tests/unit/test_docs.py.)"""
from __future__ import annotations

import re

import pytest

from tests.helpers import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = sorted((REPO / "docs").rglob("*.md"))
TOP = ("src/", "tests/", "examples/", "bench/", "docs/", "scripts/", ".ci/", "requirements/")


def test_relative_links_exist():
    links = [target for target in re.findall(r"\]\(([^)\s]+)\)", README) if not re.match(r"[a-z]+:", target)]
    assert links, "the README has relative links"
    missing = [t for t in links if not (REPO / t.split("#")[0]).exists()]
    assert missing == []


def test_the_readme_links_every_documentation_page():
    linked = {target.split("#")[0] for target in re.findall(r"\]\((docs/[^)\s]+)\)", README)}
    pages = {str(p.relative_to(REPO)) for p in PAGES}
    assert pages - linked == set()


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_named_repository_paths_exist(page):
    text = page.read_text(encoding="utf-8")
    paths = {p.rstrip(".,:;") for p in re.findall(r"`([^`\s]+)`", text) if p.startswith(TOP)}
    # `tests/x.py::test_name` names a test: its file must exist, and the test in it
    missing = [p for p in sorted(paths) if not (REPO / p.split("#")[0].split("::")[0]).exists()
               or ("::" in p and f"def {p.split('::')[1].split('[')[0]}(" not in (REPO / p.split("::")[0]).read_text())]
    assert missing == []


def test_the_example_workspace_is_named():
    assert "`examples/acme-corp-automation`" in README


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_outside_the_clone(page):
    text = page.read_text(encoding="utf-8")
    assert re.findall(r"(?<![\w.\]])\(?\.\./\.\./\.\./[\w./-]+", text) == []  # deeper than docs/a/b.md may go
    assert "/work/" not in text
