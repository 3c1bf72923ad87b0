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


SHELL_OPERATORS = frozenset(";&|()<>")


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def shell_commands(text: str):
    """(line, words after `polycrate`) of each polycrate command in the page's sh/bash code blocks: at the
    start of a line or after `&&`, `|`, `;`, `(` or `$(`, up to the next shell operator; `# ...` is a comment."""
    import shlex

    for block in re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
            lexer.whitespace_split, lexer.commenters = True, "#"
            words = list(lexer)
            for i, word in enumerate(words):
                starts = i == 0 or set(words[i - 1]) <= SHELL_OPERATORS or words[i - 1].endswith("$")
                if starts and (word == "polycrate" or word.endswith("/polycrate")):
                    end = next((j for j in range(i + 1, len(words)) if set(words[j]) <= SHELL_OPERATORS), len(words))
                    yield line.strip(), words[i + 1:end]


def parse_command(words: list[str]) -> str | None:
    """The parser's refusal of `polycrate WORDS` (its last line), or None when it parses, as main() parses."""
    import contextlib
    import io

    from polycrate.cli import _kubectl_words, build_parser
    from polycrate.cli.flags import check_command_takes_them
    from polycrate.errors import PolycrateError

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser = build_parser(words)
            words = _kubectl_words(parser, list(words))
            parser.words = tuple(words)
            check_command_takes_them(parser.parse_args(words))
    except SystemExit as exc:
        return None if not exc.code else (err.getvalue().strip().splitlines() or ["exit"])[-1]
    except PolycrateError as exc:
        return str(exc)
    return None


def test_every_polycrate_command_in_the_docs_code_blocks_parses():
    """A newcomer types the code blocks as written: each `polycrate ...` command in README.md and docs/ is
    parsed by the real argument parser (as main() parses it, flags checked against the command), so a
    renamed command or flag, a flag a command does not take, or a missing argument fails here."""
    found, refused = 0, []
    for page in doc_pages():
        for line, words in shell_commands(page.read_text()):
            found += 1
            error = parse_command(words)
            if error is not None:
                refused.append(f"{page.relative_to(REPO)}: {line}: {error}")
    assert found > 50  # the README's, the tutorial's and the how-to guides' blocks, not one page's
    assert refused == []


def test_every_flag_named_with_a_command_in_the_docs_prose_is_one_it_takes():
    """Inline `polycrate COMMAND ... --flag` (or `COMMAND SUBCOMMAND ... --flag`) in the prose: the command takes
    each long flag named with it (placeholders such as NAME or RUN are not checked)."""
    import argparse
    import shlex

    from polycrate.cli import COMMAND_MODULE, build_parser, common_options

    root = build_parser()
    shared = {s for a in common_options()._actions for s in a.option_strings} | {"--help", "--version"}
    commands = "|".join(map(re.escape, COMMAND_MODULE))
    refused, checked = [], 0
    for page in doc_pages():
        prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).replace("\n", " ")
        for text in re.findall(rf"`(?:polycrate )?((?:{commands}) [^`]+)`", prose):
            try:
                words = shlex.split(text)
            except ValueError:
                continue
            parser, path = root, []
            for word in words:
                if word.startswith("-"):
                    continue
                subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
                if not subs or word not in subs[0].choices:
                    break
                parser, path = subs[0].choices[word], [*path, word]
            if not path or path[0] == "k":  # not a command (a message quoted), or kubectl's own flags
                continue
            takes = {s for a in parser._actions for s in a.option_strings} | shared
            for word in words:
                if word.startswith("--") and len(word) > 2:
                    checked += 1
                    if word.split("=")[0] not in takes:
                        refused.append(f"{page.relative_to(REPO)}: `polycrate {text}`: {word}")
    assert checked > 25
    assert refused == []
