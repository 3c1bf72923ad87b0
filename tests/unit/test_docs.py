"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing page or anchor
fails), its generated reference covers every command and option of the parser and every key the schema
allows, and the README stays short."""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def reference_module():
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_reference"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strictly(site):
    for page in ("index.html", "reference/cli/index.html", "reference/files/index.html",
                 "how-to/coming-from-polycrate/index.html", "tutorial/first-workspace/index.html"):
        assert (site / page).is_file(), page
    assert "<!-- generated:" not in (site / "reference" / "cli" / "index.html").read_text()


def test_the_reserved_pages_are_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    for page in ("how-to/team-mode.md", "explanation/security-model.md", "how-to/unattended-runs.md",
                 "how-to/restore-drill.md"):
        assert (REPO / "docs" / page).is_file() and f"- {page}" in nav


def test_every_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md"))
    assert [p for p in pages if p not in nav] == []


def test_the_cli_reference_covers_every_command_and_option():
    """Walks the parser itself (not the generator's walk) and finds each command's section and each of
    its options in that section of the generated page."""
    from polycrate.cli import build_parser, common_options

    text = reference_module().cli_reference()
    sections = dict(re.findall(r"^#{3,6} polycrate (.+?) \{#[\w-]+\}\n(.*?)(?=^#{3,6} polycrate |\Z)", text, re.S | re.M))
    global_flags = {s for a in common_options()._actions for s in a.option_strings}
    seen = 0

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        nonlocal seen
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for name, sub in action.choices.items():
                path = (*words, name)
                key = " ".join(path)
                if key not in sections:  # an alias: named in its command's section
                    assert re.search(rf"`polycrate {re.escape(key)}`", text), f"command {key} is not in the reference"
                    continue
                seen += 1
                body = sections[key]
                for option in sub._actions:
                    if option.help == argparse.SUPPRESS or not option.option_strings:
                        continue
                    for flag in option.option_strings:
                        if flag in global_flags or flag in ("-h", "--help"):
                            continue
                        assert f"`{flag}`" in body, f"{key}: option {flag} is not in the reference"
                walk(sub, path)

    walk(build_parser(), ())
    assert seen > 60  # every command and sub-command, not one level only
    for flag in global_flags - {"-h", "--help"}:
        assert f"`{flag}`" in text.split("## Commands")[0], f"global option {flag}"


def test_the_files_reference_has_every_declared_key():
    from polycrate.config.declarations import SECTIONS

    text = reference_module().files_reference()
    for section in SECTIONS.values():
        assert f"### `{section.where}`" in text, section.where
        for field in section.fields:
            assert f"| `{field.key}` |" in text, (section.where, field.key)
    # a block entry's description is there (it was missing from the README)
    entry = text.split(f"### `{SECTIONS['block_entry'].where}`")[1].split("###")[0]
    assert "| `description` |" in entry


def test_the_exit_codes_are_those_of_polycrate_errors():
    from polycrate import errors

    text = reference_module().exit_codes_reference()
    for name in dir(errors):
        if name.startswith("EXIT_"):
            assert f"| {getattr(errors, name)} | `{name}` |" in text


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_bytes()) <= 10_240


def test_the_install_commands_name_this_version():
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for page in (REPO / "README.md", REPO / "docs" / "install.md"):
        wheels = set(re.findall(r"polycrate-([\w.+-]+?)-py3-none-any\.whl", page.read_text()))
        assert wheels == {version}, page


def test_the_changelog_has_this_version():
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^## {re.escape(version)}\b", (REPO / "CHANGELOG.md").read_text(), re.M)
