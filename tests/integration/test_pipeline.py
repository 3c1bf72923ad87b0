"""The run pipeline (pipeline.py): one entry point that reads each file once and prepares a run once."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from polycrate import cli
from polycrate.config import yamlfile
from tests.conftest import assert_one_line_error, run_cli, write


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(
        root / "workspace.poly",
        """
        name: counted
        blocks:
          - name: child
            config: {word: from-workspace}
        workflows:
          - name: three
            steps:
              - {name: one, block: child, action: say}
              - {name: two, block: child, action: say}
              - {name: three, block: base, action: say}
        """,
    )
    write(
        root / "blocks/base/block.poly",
        """
        name: base
        config: {word: from-base}
        actions:
          - {name: say, script: ["echo ${POLYCRATE_STEP:-action} >> $POLYCRATE_WORKSPACE/said.txt"]}
        """,
    )
    write(root / "blocks/child/block.poly", "name: child\nfrom: base\n")
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    return root


@pytest.fixture
def parsed(monkeypatch):
    """The name of every YAML document polycrate parses, in this process."""
    seen: collections.Counter = collections.Counter()
    real = yamlfile._Loader.__init__

    def counting(self, stream, name):
        seen[str(name)] += 1
        real(self, stream, name)

    monkeypatch.setattr(yamlfile._Loader, "__init__", counting)
    return seen


def test_one_run_reads_each_poly_file_once(ws, parsed, capsys):
    assert cli.main(["workflows", "run", "three", "-w", str(ws)]) == 0
    assert (ws / "said.txt").read_text().split() == ["one", "two", "three"]
    polys = {str(Path(name).relative_to(ws)): n for name, n in parsed.items() if name.endswith(".poly")}
    assert polys == {"workspace.poly": 1, "blocks/base/block.poly": 1, "blocks/child/block.poly": 1}


def test_a_single_action_reads_each_poly_file_once(ws, parsed, capsys):
    assert cli.main(["run", "child", "say", "-w", str(ws)]) == 0
    assert max(n for name, n in parsed.items() if name.endswith(".poly")) == 1


@pytest.mark.parametrize("command", [["workflows", "run", "three"], ["workflows", "list"], ["workspace", "validate"],
                                     ["run", "child", "say"]])
def test_every_command_refuses_an_invalid_schedule_naming_file_and_line(ws, command):
    text = (ws / "workspace.poly").read_text()
    text = text.replace("  - name: three\n", '  - name: three\n    schedule: {on_calendar: "*-*-* 99:00:00"}\n')
    write(ws / "workspace.poly", text)
    line = text.splitlines().index('    schedule: {on_calendar: "*-*-* 99:00:00"}') + 1
    result = run_cli(*command, cwd=ws)
    assert_one_line_error(result, f"workspace.poly:{line}: workflow 'three': schedule:", "99:00:00")
    assert not (ws / "said.txt").exists() and not (ws / ".polycrate").exists()  # nothing ran, nothing recorded
