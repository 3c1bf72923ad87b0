"""Step controls (timeout, retries, on_failure) and check mode, with real ansible-playbook runs."""
import json
import signal
import sqlite3

import pytest

from tests.conftest import assert_one_line_error, run_cli, write
from tests.integration.runs_workspace import (
    db_rows,
    kill_all,
    make_workspace,
    order,
    processes_with,
    start_cli,
    wait_for,
)


@pytest.fixture
def ws(tmp_path):
    root = make_workspace(tmp_path / "ws")
    yield root
    kill_all(processes_with(str(root)))


def _latest(ws):
    return json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)


def test_timeout_stops_a_sleeping_play(ws):
    # the play sleeps 300 s and the step's timeout is 3 s: run_cli's timeout (120 s) is only a hang guard
    result = run_cli("workflows", "run", "timed", cwd=ws, timeout=120)
    assert result.returncode == 1, result.output
    assert order(ws) == ["sleep"]  # 'after' never ran
    assert processes_with(str(ws)) == []  # the sleep went with the play
    run = _latest(ws)
    sleep, after = run["steps"]
    assert sleep["status"] == "failed" and sleep["message"] == "timed out after 3s"
    assert sleep["duration"] >= 3  # it ran until its timeout, not less
    assert after["status"] == "skipped"
    assert run["failed_step"] == "sleep" and run["message"] == "timed out after 3s"
    assert "timed out after 3s" in result.stdout


def test_retries_run_a_flaky_step_until_it_succeeds(ws):
    result = run_cli("workflows", "run", "flaky", cwd=ws)
    assert result.returncode == 0, result.output
    assert (ws / "attempts.txt").read_text().count("x") == 3  # failed twice, succeeded on the third
    step = _latest(ws)["steps"][0]
    assert step["status"] == "succeeded" and step["attempts"] == 3
    assert step["message"] is None
    log = run_cli("runs", "logs", "latest", cwd=ws).stdout
    assert "attempt 2 of 4" in log and "attempt 3 of 4" in log and "attempt 4 of 4" not in log


def test_retries_give_up_after_the_last_attempt(ws):
    result = run_cli("workflows", "run", "too-flaky", cwd=ws)
    assert result.returncode == 1
    assert (ws / "attempts.txt").read_text().count("x") == 2  # 1 + retries: 1
    step = _latest(ws)["steps"][0]
    assert step["status"] == "failed" and step["attempts"] == 2
    assert step["failed_task"] == "succeed on the third attempt" and step["message"] == "flaky: attempt 2"


def test_on_failure_steps_run_only_on_failure(ws):
    ok = run_cli("workflows", "run", "green", cwd=ws)
    assert ok.returncode == 0, ok.output
    assert order(ws) == ["backup", "verify"]  # no notify
    green = _latest(ws)
    assert green["steps"][2]["name"] == "notify" and green["steps"][2]["status"] == "not_run"

    (ws / "order.txt").unlink()
    bad = run_cli("workflows", "run", "nightly", cwd=ws)
    assert bad.returncode == 1  # a successful on_failure step does not turn the run green
    assert order(ws) == ["backup", "update", "notify"]
    nightly = _latest(ws)
    notify = nightly["steps"][-1]
    assert (notify["name"], notify["phase"], notify["status"]) == ("notify", "on_failure", "succeeded")
    assert nightly["status"] == "failed" and nightly["failed_step"] == "update"


def test_step_controls_are_validated(ws):
    text = (ws / "workspace.poly").read_text().replace("timeout: 3}", "timeout: soon}")
    write(ws / "workspace.poly", text)
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "workspace.poly:", "'timeout' must be a number")
    text = text.replace("timeout: soon}", "retries: -1}")
    write(ws / "workspace.poly", text)
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "'retries' must be a whole number")


def test_check_mode_changes_nothing_that_a_real_run_changes(ws):
    (ws / "existing.txt").write_text("original\n")
    before = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and ".polycrate" not in p.parts}

    check = run_cli("workflows", "run", "changes", "--check", "--diff", cwd=ws)
    assert check.returncode == 0, check.output
    after = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and ".polycrate" not in p.parts}
    assert after == before  # nothing created, nothing changed
    assert "skipped (check mode)" in check.stdout
    assert "+added by the play" in check.stdout  # --diff shows what would change
    run = _latest(ws)
    assert run["check_mode"] is True
    assert [s["status"] for s in run["steps"]] == ["succeeded", "skipped_check"]
    assert run["steps"][0]["hosts"]["localhost"]["changed"] == 2  # would change both

    real = run_cli("workflows", "run", "changes", cwd=ws)
    assert real.returncode == 0, real.output
    assert (ws / "changed.txt").read_text() == "changed\n"
    assert (ws / "existing.txt").read_text() == "original\nadded by the play\n"
    assert (ws / "script.txt").read_text() == "script\n"


def test_check_mode_skips_a_script_action(ws):
    result = run_cli("run", "b", "script", "--check", cwd=ws)
    assert result.returncode == 0, result.output
    assert "skipped: script actions do not run in check mode" in result.stdout
    assert not (ws / "script.txt").exists()


def test_inspect_shows_step_controls_and_on_failure(ws):
    flaky = json.loads(run_cli("workflows", "inspect", "flaky", "-o", "json", cwd=ws).stdout)
    assert flaky["steps"][0]["retries"] == 3 and flaky["steps"][0]["retry_delay"] == 0.5
    nightly = json.loads(run_cli("workflows", "inspect", "nightly", "-o", "json", cwd=ws).stdout)
    assert [s["name"] for s in nightly["on_failure"]] == ["notify"]
    text = run_cli("workflows", "inspect", "timed", cwd=ws).stdout
    assert "TIMEOUT" in text and "3s" in text


def test_a_stop_while_a_step_waits_to_retry_records_the_attempts_that_ran(tmp_path):
    """Ctrl-C during `retry_delay`, after attempt 1 failed and before attempt 2 started: one attempt ran, the
    step is interrupted (its retries were not used up: it might have succeeded), and its message says both.
    Before, the record said 2 attempts and 'failed' with attempt 1's message."""
    ws = make_workspace(tmp_path / "ws", extra="""
  - name: patient
    steps:
      - {name: flaky, block: b, action: flaky, retries: 1, retry_delay: 300}
      - {name: verify, block: b, action: ok}
""")
    try:
        proc = start_cli("workflows", "run", "patient", cwd=ws)

        def waiting() -> bool:  # the run's notice, written just before the delay starts
            try:
                rows = db_rows(ws, "SELECT notices FROM runs") if (ws / ".polycrate/runs.db").exists() else []
            except sqlite3.OperationalError:  # the file exists, its schema not yet (the run is creating it)
                return False
            return bool(rows) and "attempt 2 of 2 in 300s" in rows[0]["notices"]

        wait_for(waiting, timeout=120, what="the step to wait for its retry")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130  # a hang guard: the delay is 300 s
    finally:
        kill_all(processes_with(str(ws)))
    assert (ws / "attempts.txt").read_text().count("x") == 1  # one attempt ran
    run = _latest(ws)
    flaky, verify = run["steps"]
    assert (run["status"], flaky["status"], flaky["attempts"], verify["status"]) == (
        "interrupted", "interrupted", 1, "skipped"), run["steps"]
    assert flaky["message"].startswith("interrupted (SIGINT) while waiting to retry") and "flaky: attempt 1" in \
        flaky["message"], flaky["message"]
    assert run["failed_step"] == "flaky" and run["message"] == flaky["message"]
