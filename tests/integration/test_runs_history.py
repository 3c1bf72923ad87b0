"""The run store through the real CLI and real ansible-playbook: records, runs list/show/logs, resume, no_log."""
import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, write
from tests.integration.runs_workspace import SECRET, db_rows, make_workspace, order


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def test_failing_workflow_is_recorded_with_step_task_and_message(ws):
    result = run_cli("workflows", "run", "nightly", cwd=ws)
    assert result.returncode == 1, result.output
    assert order(ws) == ["backup", "update", "notify"]  # on_failure ran, verify did not

    listed = run_cli("runs", "list", "--output", "json", cwd=ws)
    assert listed.returncode == 0, listed.output
    runs = json.loads(listed.stdout)["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["kind"] == "workflow" and run["name"] == "nightly"
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert run["failed_step"] == "update"
    assert run["failed_task"] == "check free disk space"
    assert run["failed_host"] == "localhost"
    assert run["message"] == "disk /var is full on purpose"
    assert run["user"] and run["host"] and run["ended"] >= run["started"]
    assert f"polycrate runs show {run['run_id']}" in result.stdout  # the summary names the run

    shown = run_cli("runs", "show", run["run_id"], "--output", "json", cwd=ws)
    detail = json.loads(shown.stdout)
    steps = {s["name"]: s for s in detail["steps"]}
    assert [s["name"] for s in detail["steps"]] == ["backup", "update", "verify", "notify"]
    assert steps["backup"]["status"] == "succeeded" and steps["backup"]["duration"] > 0
    assert steps["update"]["status"] == "failed" and steps["update"]["failed_task"] == "check free disk space"
    assert steps["verify"]["status"] == "skipped"
    assert steps["notify"]["status"] == "succeeded" and steps["notify"]["phase"] == "on_failure"
    # per-host counts from the event stream: one changed shell task, then the failure
    assert steps["backup"]["hosts"] == {
        "localhost": {"ok": 1, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0, "rescued": 0, "ignored": 0}
    }
    assert steps["update"]["hosts"]["localhost"]["failed"] == 1
    assert steps["update"]["hosts"]["localhost"]["ok"] == 1

    text = run_cli("runs", "show", run["run_id"][:17], cwd=ws)  # a unique prefix is enough
    assert text.returncode == 0, text.output
    assert "check free disk space" in text.stdout and "disk /var is full on purpose" in text.stdout
    assert "update" in text.stdout and "failed" in text.stdout and "localhost" in text.stdout


def test_runs_logs_hold_the_full_output(ws):
    run_cli("workflows", "run", "nightly", cwd=ws)
    logs = run_cli("runs", "logs", "latest", "--step", "update", cwd=ws)
    assert logs.returncode == 0, logs.output
    assert "TASK [check free disk space]" in logs.stdout and "disk /var is full on purpose" in logs.stdout
    assert "PLAY RECAP" in logs.stdout
    all_logs = run_cli("runs", "logs", "latest", "--output", "json", cwd=ws)
    data = json.loads(all_logs.stdout)
    assert [s["name"] for s in data["steps"]] == ["backup", "update", "verify", "notify"]
    assert "TASK [record the step]" in data["steps"][0]["log"]
    assert data["steps"][2]["log"] == ""  # skipped: no log
    missing = run_cli("runs", "logs", "latest", "--step", "updte", cwd=ws)
    assert_one_line_error(missing, "no step 'updte'", "did you mean 'update'")


def test_runs_list_filters_and_limits(ws):
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    assert run_cli("workflows", "run", "nightly", cwd=ws).returncode == 1
    assert run_cli("run", "b", "ok", cwd=ws).returncode == 0
    all_runs = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    assert [(r["kind"], r["name"], r["status"]) for r in all_runs] == [
        ("action", "b ok", "succeeded"),
        ("workflow", "nightly", "failed"),
        ("workflow", "green", "succeeded"),
    ]
    green = json.loads(run_cli("runs", "list", "--workflow", "green", "-o", "json", cwd=ws).stdout)["runs"]
    assert [r["name"] for r in green] == ["green"]
    assert len(json.loads(run_cli("runs", "list", "--limit", "1", "-o", "json", cwd=ws).stdout)["runs"]) == 1
    table = run_cli("runs", "list", cwd=ws)
    assert table.stdout.splitlines()[0].split()[:5] == ["RUN", "STARTED", "KIND", "NAME", "STATUS"]
    assert_one_line_error(run_cli("runs", "show", "nope", cwd=ws), "no run 'nope'")
    assert (ws / ".polycrate" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_resume_skips_succeeded_steps_and_runs_the_rest(ws):
    first = run_cli("workflows", "run", "fixable", cwd=ws)
    assert first.returncode == 1
    assert order(ws) == ["backup", "update"]
    failed_id = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"][0]["run_id"]

    (ws / "fixed").write_text("yes\n")
    (ws / "order.txt").unlink()
    resumed = run_cli("workflows", "run", "fixable", "--resume", "--output", "json", cwd=ws)
    assert resumed.returncode == 0, resumed.output
    assert order(ws) == ["update", "verify"]  # backup succeeded before: not run again
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from"] == failed_id
    assert [s["status"] for s in summary["steps"]] == ["succeeded_before", "succeeded", "succeeded"]

    record = json.loads(run_cli("runs", "show", summary["run_id"], "-o", "json", cwd=ws).stdout)
    assert record["resumed_from"] == failed_id and record["status"] == "succeeded"
    assert record["steps"][0]["note"] == f"succeeded in run {failed_id}"
    old = json.loads(run_cli("runs", "show", failed_id, "-o", "json", cwd=ws).stdout)
    assert old["status"] == "failed"  # the old record stays as it was

    again = run_cli("workflows", "run", "fixable", "--resume", cwd=ws)
    assert_one_line_error(again, "nothing to resume", "succeeded", code=1)
    assert order(ws) == ["update", "verify"]


def test_a_resume_of_a_resume_names_the_run_where_each_skipped_step_really_ran(ws):
    """A step skipped by two resumes in a row succeeded in the first run, not in the resume before: its note says
    the run where it ran (the second resume's note named the first resume, where it had not run)."""
    first = run_cli("workflows", "run", "fixable", cwd=ws)
    assert first.returncode == 1, first.output
    first_id = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"][0]["run_id"]
    second = run_cli("workflows", "run", "fixable", "--resume", "-o", "json", cwd=ws)  # still broken
    assert second.returncode == 1 and json.loads(second.stdout)["resumed_from"] == first_id, second.output
    (ws / "fixed").write_text("yes\n")
    third = run_cli("workflows", "run", "fixable", "--resume", "-o", "json", cwd=ws)
    assert third.returncode == 0, third.output
    doc = json.loads(third.stdout)
    assert doc["resumed_from"] == json.loads(second.stdout)["run_id"]
    assert [(s["name"], s["status"], s["note"]) for s in doc["steps"]] == [
        ("backup", "succeeded_before", f"succeeded in run {first_id}"), ("update", "succeeded", None),
        ("verify", "succeeded", None)]
    assert order(ws) == ["backup", "update", "update", "update", "verify"]  # backup ran once, in the first run


def test_resume_with_no_history_says_so(ws):
    result = run_cli("workflows", "run", "green", "--resume", cwd=ws)
    assert_one_line_error(result, "nothing to resume", "no recorded run", code=1)
    assert order(ws) == []


def test_no_log_secret_reaches_neither_store_nor_logs(ws):
    result = run_cli("workflows", "run", "secret", cwd=ws)
    assert result.returncode == 1, result.output
    assert SECRET not in result.output
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["failed_task"] == "fail with it"
    assert "hidden" in run["message"] and SECRET not in run["message"]
    logs = run_cli("runs", "logs", "latest", cwd=ws)
    assert "TASK [use the password]" in logs.stdout and SECRET not in logs.stdout
    # every byte polycrate keeps: the database (and its WAL) and every log file
    state = ws / ".polycrate"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any(p.name == "runs.db" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert not db_rows(ws, "SELECT * FROM steps WHERE message LIKE ?", f"%{SECRET}%")


def test_retention_keeps_the_last_runs_and_their_logs(tmp_path):
    ws = make_workspace(tmp_path / "ws", "history:\n  keep_runs: 2\n")
    for _ in range(3):
        assert run_cli("run", "b", "ok", cwd=ws).returncode == 0
    runs = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    assert len(runs) == 2
    kept = sorted(p.name for p in (ws / ".polycrate" / "runs").iterdir())
    assert kept == sorted(r["run_id"] for r in runs)  # the oldest run's log folder went with it


def test_a_module_that_could_not_run_names_what_its_interpreter_said(tmp_path):
    """A host whose python3 is a shim that finds no Python (pyenv: "python3.13: command not found", rc 127; seen
    on this very machine through Ansible's interpreter discovery): Ansible's message is only "Module result
    deserialization failed: No start of json char found". The record and the summary now also say what the
    interpreter printed (its module_stderr)."""
    shim = tmp_path / "python3.13"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: interp\nblocks:\n  - name: b\nworkflows:\n  - name: w\n    steps:\n"
                                   "      - {name: one, block: b, action: one}\n")
    write(root / "blocks/b/block.poly", "name: b\nactions:\n  - {name: one, playbook: one.yml}\n")
    write(root / "blocks/b/one.yml", "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                                     "    - name: a module that needs python\n      ansible.builtin.command: 'true'\n")
    write(root / "inventory.yml", f"all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: {shim}\n")
    failed = run_cli("workflows", "run", "w", "--local", cwd=root)
    assert failed.returncode == 1, failed.output
    assert "pyenv: python3.13: command not found" in failed.stdout, failed.output
    [run] = json.loads(run_cli("runs", "list", "-o", "json", cwd=root).stdout)["runs"]
    shown = json.loads(run_cli("runs", "show", run["run_id"], "-o", "json", cwd=root).stdout)
    assert shown["failed_task"] == "a module that needs python"
    assert "pyenv: python3.13: command not found" in shown["message"], shown["message"]
