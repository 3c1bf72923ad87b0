"""Every command-line value bounded (issue 14): numbers, paths and names too long or too large for
what they feed give one short line and exit 2."""
from __future__ import annotations

import pytest

from tests.integration.fuzz_workspaces import BASE, _dump, run_inprocess, tree_digest


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "ws"
    for rel, data in BASE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(_dump(data))
    return root


def one_line(outcome, *words):
    assert outcome.escaped is None and outcome.code == 2, (outcome.code, outcome.stderr[-500:])
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("polycrate: error: ") and len(lines[0]) < 700, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("limit", ["9" * 30, "0", "-1", "1e9", "10000001", "x"])
def test_runs_list_limit(ws, limit):
    one_line(run_inprocess(["-w", str(ws), "runs", "list", "--limit", limit], 60), "--limit")


def test_runs_list_limit_in_range_works(ws):
    assert run_inprocess(["-w", str(ws), "runs", "list", "--limit", "1000000"], 60).code == 0


@pytest.mark.parametrize("command", [["workflows", "list"], ["run", "app", "hello"], ["runs", "list"],
                                     ["workspace", "validate"]])
def test_a_5000_character_workspace_path(ws, command):
    line = one_line(run_inprocess(["-w", "/tmp/" + "a" * 5000, *command], 60))
    assert "characters" in line  # the path is shortened, not printed whole


@pytest.mark.parametrize("command", [["workflows", "run", "n" * 100_000], ["run", "b" * 100_000, "x"],
                                     ["runs", "show", "r" * 100_000], ["workflows", "inspect", "w" * 100_000]])
def test_huge_names_are_refused_in_one_short_line(ws, command):
    before = tree_digest(ws)
    one_line(run_inprocess(["-w", str(ws), *command], 60))
    if command[0] != "runs":  # `runs` commands open (and so create) the run store before they look
        assert tree_digest(ws) == before


def test_workspace_init_on_an_existing_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    one_line(run_inprocess(["workspace", "init", str(target)], 60), "is a file")
    assert target.read_text() == "mine\n"
    existing = tmp_path / "ws"
    existing.mkdir()
    (existing / "workspace.poly").write_text("name: keep\n")
    one_line(run_inprocess(["workspace", "init", str(existing)], 60), "already exists")
    assert (existing / "workspace.poly").read_text() == "name: keep\n"
