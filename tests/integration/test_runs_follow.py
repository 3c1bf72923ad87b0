"""Finding and following runs: runs logs --follow, runs list of a running run, filters, run names."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.integration.runs_workspace import start_cli, wait_for
from tests.integration.term_workspace import make_term_workspace


@pytest.fixture
def ws(tmp_path):
    return make_term_workspace(tmp_path / "ws")


def _runs(ws, *args):
    result = run_cli("runs", "list", "-o", "json", *args, cwd=ws)
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)["runs"]


def _running(ws):
    runs = _runs(ws, "--status", "running")
    return runs[0] if runs and runs[0]["current_step"] else None


@pytest.mark.parametrize("workflow, code", [("gated", 0), ("gated-fails", 1)])
def test_follow_streams_a_running_run_and_ends_with_its_exit_status(ws, workflow, code):
    run = start_cli("workflows", "run", workflow, cwd=ws)
    try:
        wait_for(lambda: _running(ws), what="the run to be at its first step")
        listed = _running(ws)
        assert listed["status"] == "running" and listed["current_step"] == "first"
        assert listed["duration"] is not None and listed["duration"] >= 0  # the time so far
        table = run_cli("runs", "list", cwd=ws).stdout
        assert "running" in table and "first" in table

        follower = subprocess.Popen(
            [sys.executable, "-m", "polycrate", "runs", "logs", "latest", "--follow"],
            cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seen = []
        for line in follower.stdout:  # what the run printed before the follower started comes first
            seen.append(line.rstrip("\n"))
            if "before the gate" in line:
                break
        (ws / "go").write_text("")  # now the run goes on; everything from here is printed live
        rest, err = follower.communicate(timeout=120)
        out = "\n".join(seen) + "\n" + rest
        assert follower.returncode == code, out + err
        assert "after the gate" in out
        assert ("hello from second" in out) == (code == 0)
        assert ("about to fail" in out) == (code == 1)
        assert out.index("before the gate") < out.index("after the gate")
        assert out.strip().splitlines()[-1].endswith(f"(exit {code})")
    finally:
        (ws / "go").write_text("")
        run.communicate(timeout=120)
    assert run.returncode == code


def test_status_kind_and_time_filters(ws):
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    assert run_cli("workflows", "run", "broken", cwd=ws).returncode == 1
    assert run_cli("run", "app", "hello", cwd=ws).returncode == 0
    failed = _runs(ws, "--status", "failed")
    assert [(r["name"], r["status"]) for r in failed] == [("broken", "failed")]
    assert {r["status"] for r in _runs(ws, "--status", "succeeded")} == {"succeeded"}
    assert [r["kind"] for r in _runs(ws, "--kind", "action")] == ["action"]
    assert [r["name"] for r in _runs(ws, "--kind", "workflow")] == ["broken", "green"]
    assert [r["name"] for r in _runs(ws, "--workflow", "green")] == ["green"]
    assert len(_runs(ws, "--since", "1d")) == 3
    assert _runs(ws, "--until", "1d") == []
    assert len(_runs(ws, "--since", "2000-01-01", "--until", "2999-01-01T00:00Z")) == 3
    assert_one_line_error(run_cli("runs", "list", "--since", "yesterday", cwd=ws), "not a time: 'yesterday'")
    # a list cut short says so, and how to see the rest: its --until lists the older ones (the last row again)
    cut = run_cli("runs", "list", "--limit", "2", cwd=ws)
    rows = [line.split()[0] for line in cut.stdout.splitlines()[1:] if not line.startswith("(")]
    hint = re.search(r"^\(the newest 2 shown; more match: --limit N for more, --until '([^']+)' for older ones\)$",
                     cut.stdout, re.M)
    assert len(rows) == 2 and hint, cut.stdout
    older = [r["run_id"] for r in _runs(ws, "--until", hint.group(1))]
    every = [r["run_id"] for r in _runs(ws)]
    assert rows[-1] in older and set(rows) | set(older) == set(every), (older, rows)  # nothing skipped
    assert "more match" not in run_cli("runs", "list", "--limit", "3", cwd=ws).stdout
    # the states as a user types them, not as Python spells them (was: <RunState.RUNNING: 'running'>, ...)
    assert_one_line_error(run_cli("runs", "list", "--status", "done", cwd=ws),
                          "invalid choice: 'done' (choose from 'running', 'succeeded', 'failed', 'interrupted', 'lost')")


def test_a_filter_that_matches_no_run_says_so_and_which(ws):
    """`runs list` with a filter that matched nothing printed the table's header alone: now one line naming the
    filter and how many runs the store holds; `-o json` stays `[]` (the contract)."""
    empty = run_cli("runs", "list", cwd=ws)
    assert (empty.returncode, empty.stdout) == (0, "no runs recorded yet\n"), empty.output
    nothing = run_cli("runs", "list", "--status", "failed", cwd=ws)
    assert nothing.stdout == "no run matches --status failed: no runs recorded yet\n", nothing.output
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    assert run_cli("run", "app", "hello", cwd=ws).returncode == 0
    result = run_cli("runs", "list", "--workflow", "broken", "--status", "failed", cwd=ws)
    assert (result.returncode, result.stdout) == (
        0, "no run matches --workflow broken --status failed (2 runs recorded)\n"), result.output
    assert _runs(ws, "--workflow", "broken", "--status", "failed") == []
    until = run_cli("runs", "list", "--until", "2000-06-01", cwd=ws).stdout
    assert until.startswith("no run matches --until 2000-06-01 00:00:00 ") and until.endswith(" (2 runs recorded)\n"), until
    assert "RUN" in run_cli("runs", "list", "--workflow", "green", cwd=ws).stdout.splitlines()[0]


def test_runs_are_named_by_latest_tilde_and_random_part(ws):
    for workflow in ("green", "broken", "green"):
        run_cli("workflows", "run", workflow, cwd=ws)
    ids = [r["run_id"] for r in _runs(ws)]  # newest first

    def show(ref):
        result = run_cli("runs", "show", ref, "-o", "json", cwd=ws)
        assert result.returncode == 0, result.output
        return json.loads(result.stdout)["run_id"]

    assert show("latest") == ids[0]
    assert show("latest~0") == ids[0]
    assert show("latest~1") == ids[1]
    assert show("latest~2") == ids[2]
    assert_one_line_error(run_cli("runs", "show", "latest~3", cwd=ws), "no run 'latest~3'", "only 3 run(s)")
    random_part = ids[1].rsplit("-", 1)[1]
    # the shortest prefix of the random part that no other id shares
    prefix = next(random_part[:n] for n in range(1, 7)
                  if sum(i.rsplit("-", 1)[1].startswith(random_part[:n]) for i in ids) == 1
                  and not any(i.startswith(random_part[:n]) for i in ids))
    assert show(prefix) == ids[1]
    assert show(random_part) == ids[1]
    logs = run_cli("runs", "logs", "latest~1", cwd=ws)
    assert "about to fail" in logs.stdout


def test_follow_of_a_finished_run_prints_it_and_its_status(ws):
    assert run_cli("workflows", "run", "broken", cwd=ws).returncode == 1
    result = run_cli("runs", "logs", "latest", "--follow", cwd=ws)
    assert result.returncode == 1, result.output
    assert "hello from hello" in result.stdout and "about to fail" in result.stdout
    assert_one_line_error(run_cli("runs", "logs", "latest", "--follow", "--step", "nope", cwd=ws), "no step 'nope'")
