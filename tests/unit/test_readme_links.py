"""The README refers to nothing outside the repository: every relative link and every repository path it
names exists in the clone, and no path climbs out of it."""
from __future__ import annotations

import re

from tests.helpers import REPO

TEXT = (REPO / "README.md").read_text(encoding="utf-8")
TOP = ("src/", "tests/", "examples/", "bench/", "docs/", "scripts/", ".ci/")


def test_relative_links_exist():
    links = [target for target in re.findall(r"\]\(([^)\s]+)\)", TEXT) if not re.match(r"[a-z]+:", target)]
    assert links, "the README has relative links"
    missing = [t for t in links if not (REPO / t.split("#")[0]).exists()]
    assert missing == []


def test_named_repository_paths_exist():
    paths = {p for p in re.findall(r"`([^`\s]+)`", TEXT) if p.startswith(TOP)}
    assert "examples/acme-corp-automation" in paths
    assert [p for p in sorted(paths) if not (REPO / p).exists()] == []


def test_nothing_outside_the_clone():
    assert re.findall(r"(?<![\w.])\.\./[\w./-]+", TEXT) == []
    assert "/work/" not in TEXT
