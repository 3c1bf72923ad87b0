"""`polycrate runs stop` in team mode: the run on its worker is recorded as interrupted by whom from the engine's
first write (the step's row, which only the engine writes, says who), and nothing of the stopped playbook stays:
a `connection: local` task whose `sleep 300` runs as a shell's background job (SIGINT ignored) is gone with it.

Real parts: PostgreSQL, a `polycrate worker` process, ansible-playbook, the CLI. No timed assertions: waits
poll with a generous deadline; the time from the stop to the record is printed.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write
from tests.integration.test_stop_leaves_nothing import alive
from tests.team.conftest import committed
from tests.team.harness import Team
from tests.helpers import wait_for

pytestmark = pytest.mark.team



def _workspace(root: Path, marks: Path) -> Path:
    write(root / "workspace.poly", """
        name: stopws
        blocks:
          - name: b
        workflows:
          - name: long
            steps:
              - {name: sleep, block: b, action: sleep}
              - {name: after, block: b, action: sleep}
        """)
    write(root / "blocks/b/block.poly", """
        name: b
        actions:
          - {name: sleep, playbook: sleep.yml}
        """)
    write(root / "blocks/b/sleep.yml", f"""
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: a long task with a background job
              ansible.builtin.shell: |
                sleep 300 &
                echo "$! $$ $PPID" > {marks}/task.pids
                wait
        """)
    write(root / "inventory.yml",
          f"all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: {sys.executable}\n")
    return committed(root)


@pytest.fixture
def team(team_env, tmp_path) -> Iterator[Team]:
    marks = tmp_path / "marks"
    marks.mkdir()
    team = Team(_workspace(tmp_path / "ws", marks), marks, team_env, tmp_path)
    try:
        yield team
    finally:
        team.stop_all()
        for pid in _task_pids(marks):  # a failed assertion leaves no sleep behind either
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _task_pids(marks: Path) -> list[int]:
    text = (marks / "task.pids").read_text() if (marks / "task.pids").exists() else ""
    return [int(p) for p in text.split()] if len(text.split()) == 3 else []


def test_runs_stop_records_who_from_the_first_write_and_leaves_no_task_process(team):
    team.start_worker("w1")
    launched = team.cli("workflows", "run", "long")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    pids = wait_for(lambda: _task_pids(team.marks), "the task wrote its pids")
    assert all(alive(p) for p in pids[:2]), pids
    stopped = team.cli("runs", "stop", run_id)
    assert stopped.returncode == 0, stopped.output

    def ended() -> dict | None:
        rows = team.sql("SELECT status FROM runs WHERE workspace = 'stopws' AND id = %s", run_id)
        return rows[0] if rows and rows[0]["status"] != "running" else None

    wait_for(ended, "the stopped run's record to end")
    shown = team.show(run_id)
    who = f"interrupted by {getpass.getuser()}@{socket.gethostname()} (polycrate runs stop)"
    assert shown["status"] == "interrupted" and shown["message"] == who, shown
    # the step's row is the engine's, written as the interrupt unwinds the step: who stopped it, from the start
    assert [(s["status"], s["message"]) for s in shown["steps"]] == [("interrupted", who), ("skipped", None)]
    # the step is recorded once its processes have ended: nothing of the task is left
    assert [p for p in pids if alive(p)] == [], pids
    stored = team.sql("SELECT t.stop_requested, r.ended FROM team_runs t JOIN runs r ON r.workspace = t.workspace"
                      " AND r.id = t.id WHERE t.id = %s", run_id)[0]
    print(f"runs stop: the request stored to the run recorded as ended {stored['ended'] - stored['stop_requested']:.2f}"
          f" s (load {os.getloadavg()[0]:.1f})")


def test_a_run_stopped_while_queued_is_recorded_as_never_started(team):
    """No worker serves the queue: the run is stopped before any process took it. Its record says it never
    started (the contract's `started` is null, no duration, no host or pid of a run process), not that it
    started at the moment of the stop; `runs list` and `runs show` say so in words."""
    launched = team.cli("workflows", "run", "long")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    stopped = team.cli("runs", "stop", run_id)
    assert stopped.returncode == 0 and "before it started" in stopped.output, stopped.output
    shown = team.show(run_id)  # validated against the run schema by run_cli
    assert (shown["status"], shown["exit_code"], shown["steps"]) == ("interrupted", 130, []), shown
    assert (shown["started"], shown["duration"], shown["host"], shown["pid"]) == (None, None, None, None), shown
    assert shown["ended"] is not None and "before it started" in shown["message"], shown
    listed = team.cli("runs", "list", "-o", "json")
    assert [r["started"] for r in json.loads(listed.stdout)["runs"] if r["run_id"] == run_id] == [None]
    # lists, --since/--until and the API's paging place it at its end (its `started` is null: nothing to page by)
    since = team.cli("runs", "list", "-o", "json", "--since", shown["ended"])
    assert [r["run_id"] for r in json.loads(since.stdout)["runs"]] == [run_id], since.output
    line = next(line for line in team.cli("runs", "list").stdout.splitlines() if run_id in line)
    assert "never started" in line and "interrupted" in line, line
    text = team.cli("runs", "show", run_id).stdout
    assert f"started:   never (launched by {getpass.getuser()})" in text and "pid" not in text and " after " not in text, text
