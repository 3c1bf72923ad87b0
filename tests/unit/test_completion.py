"""Shell completion's candidates (cli/completion.py), computed from the real argument parser and a workspace."""
from __future__ import annotations

import argparse

import pytest

from polycrate.cli import build_parser
from polycrate.cli.completion import candidates, complete_main
from tests.helpers import run_cli_inprocess, write


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.fixture
def ws(tmp_path, monkeypatch):
    write(tmp_path / "workspace.poly", """
        name: comp
        workflows:
          - name: nightly
            description: the nightly run
            steps:
              - {name: backup, block: tools, action: dump}
              - {name: verify, block: tools, action: check}
          - name: weekly
            steps:
              - {name: report, block: tools, action: check}
        """)
    write(tmp_path / "blocks/tools/block.poly", """
        name: tools
        description: a few tools
        actions:
          - {name: dump, script: ["true"]}
          - {name: check, script: ["true"]}
        """)
    write(tmp_path / "blocks/other/block.poly", """
        name: other
        actions:
          - {name: hello, script: ["true"]}
        """)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def names(words, parser):
    return [value for value, _text in candidates(words, parser)]


def test_commands_are_the_parsers_commands(parser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert names([""], parser) == [n for n in sub.choices if not n.startswith("_")]
    assert {"run", "workflows", "completion", "runs"} <= set(names([""], parser))
    assert names(["wor"], parser) == ["workflow", "workflows", "workspace", "worker"]
    assert names(["worker", ""], parser) == ["list", "keygen"]  # not `execute`: a worker's own, added without help
    assert names(["workflows", ""], parser) == ["run", "list", "inspect", "schedule"]
    assert "__complete" not in names([""], parser)


def test_flags_and_their_choices(parser):
    assert names(["workflows", "run", "x", "--res"], parser) == ["--resume"]
    assert "--limit" in names(["run", "b", "a", "--l"], parser)
    assert names(["runs", "list", "--status", "f"], parser) == ["failed"]
    assert names(["-o", ""], parser) == ["text", "json", "yaml"]
    assert names(["--output=j"], parser) == ["--output=json"]
    assert names(["workspace", "init", ""], parser) == [":dirs"]
    assert names(["-w", ""], parser) == [":dirs"]


def test_workspace_names(ws, parser):
    assert names(["workflows", "run", ""], parser) == ["nightly", "weekly"]
    assert names(["workflows", "run", "n"], parser) == ["nightly"]
    assert names(["run", ""], parser)[:2] == ["nightly", "weekly"]  # workflows first, then blocks
    assert set(names(["run", ""], parser)) == {"nightly", "weekly", "tools", "other"}
    assert names(["run", "tools", ""], parser) == ["dump", "check"]
    assert names(["actions", "inspect", "other", ""], parser) == ["hello"]
    assert set(names(["blocks", "inspect", ""], parser)) == {"tools", "other"}
    assert set(names(["install", "tools", ""], parser)) == {"tools", "other"}  # BLOCK...
    assert names(["workflows", "run", "nightly", "--step", ""], parser) == ["backup", "verify", "report"]
    assert names(["runs", "list", "--workflow", "w"], parser) == ["weekly"]
    assert candidates(["workflows", "run", "n"], parser) == [("nightly", "the nightly run")]


def test_workspace_named_by_w(ws, parser, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert names(["workflows", "run", ""], parser) == []
    assert names(["-w", str(ws), "workflows", "run", ""], parser) == ["nightly", "weekly"]
    assert names(["workflows", "run", f"--workspace={ws}", ""], parser) == ["nightly", "weekly"]


def test_no_runs_no_run_names(ws, parser):
    assert names(["runs", "show", ""], parser) == []


def test_a_broken_workspace_completes_nothing_and_says_nothing(ws, parser):
    (ws / "workspace.poly").write_text("name: [unclosed\n", encoding="utf-8")
    assert names(["workflows", "run", ""], parser) == []
    result = run_cli_inprocess("__complete", "bash", "workflows", "run", "", cwd=ws)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hidden_command_output(ws, capsys):
    assert complete_main(["fish", "workflows", "run", "n"], build_parser) == 0
    assert capsys.readouterr().out == "nightly\tthe nightly run\n"
    assert complete_main(["bash", "workflows", "run", "n"], build_parser) == 0
    assert capsys.readouterr().out == "nightly\n"
    assert "__complete" not in run_cli_inprocess("--help").stdout


def test_a_reader_that_went_away_is_no_error():
    """`polycrate __complete … | head -1`, or a shell that stopped reading: no traceback, exit 0."""
    import os
    import subprocess
    import sys

    read, write_end = os.pipe()
    os.close(read)  # gone before the first candidate is written
    try:
        done = subprocess.run([sys.executable, "-m", "polycrate", "__complete", "bash", ""], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == ""
