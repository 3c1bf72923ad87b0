"""The parser a command line gets: only its command's module registers, and that gives the same
parse as the full parser (cli.COMMAND_MODULE says which module registers each command word)."""
from __future__ import annotations

import argparse
import importlib

import pytest

from polycrate import cli
from polycrate.errors import PolycrateError


def _registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"polycrate.cli.{module}").register(sub, cli.common_options())
    return set(sub.choices)


def test_the_table_names_the_module_of_every_command():
    table = {word: module for module in cli.COMMAND_MODULES for word in _registered(module)}
    assert table == cli.COMMAND_MODULE
    assert set(cli.build_parser()._subparsers._group_actions[0].choices) == set(table)


@pytest.mark.parametrize("words, module", [
    (["workflows", "list"], "workflows"),
    (["-w", "run", "workflows", "list"], "workflows"),  # -w's value is no command
    (["--output", "json", "runs", "list"], "runs"),
    (["-f", "run", "nightly"], "run"),
    (["-e", "run", "workflows", "list"], "workflows"),  # -e's value, though it reads as a command
    (["--help"], None),
    (["-h", "run"], None),
    ([], None),
    (["wrkflows", "list"], None),  # misspelt: the full parser says which commands there are
    (["--version"], None),
])
def test_the_command_word_after_the_global_options(words, module):
    top = cli.build_parser(["version"])  # the top-level options are the same for every command
    with_value = {flag for action in top._actions if action.nargs != 0 for flag in action.option_strings}
    assert {"-w", "--workspace", "-o", "--output", "-e", "--env"} <= with_value
    assert cli.command_module(words, with_value) == module


@pytest.mark.parametrize("words", [
    ["workflows", "list", "-o", "json"],
    ["-w", "/tmp/x", "workflow", "run", "nightly", "--step", "one", "--limit", "web*", "--no-preflight"],
    ["run", "b", "a", "--check", "--extra-vars", "x=1"],
    ["runs", "show", "latest"],
    ["-e", "run", "workflows", "list"],
    ["block", "inspect", "b"],
    ["install", "b", "c"],
    ["server", "token", "list"],
])
def test_the_partial_parser_parses_as_the_full_one(words):
    full = vars(cli.build_parser().parse_args(words))
    partial = vars(cli.build_parser(words).parse_args(words))
    assert partial == full
    assert len(cli.build_parser(words)._subparsers._group_actions[0].choices) < len(cli.COMMAND_MODULE)


def test_a_partial_parser_refuses_like_the_full_one():
    words = ["workflows", "lst"]
    messages = []
    for parser in (cli.build_parser(), cli.build_parser(words)):
        with pytest.raises(PolycrateError) as exc:
            parser.parse_args(words)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert "invalid choice: 'lst'" in messages[0]


def test_usage_errors_say_polycrate_once_and_hint_at_limit_for_ansible_users(capsys):
    assert cli.main(["run", "b", "go", "--bogus"]) == 2
    assert capsys.readouterr().err == "polycrate: error: unrecognized arguments: --bogus (see --help)\n"
    # -l is Polycrate's --local; ansible-playbook users type -l HOST for --limit
    assert cli.main(["workflows", "run", "nightly", "-l", "db01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polycrate: error: unrecognized") and err.count("polycrate") == 1 and err.count("\n") == 1, err
    assert "-l is --local (as in Polycrate), to run on db01 only say --limit db01" in err
