"""No overlap, interrupts and killed runs, with real ansible-playbook runs."""
import json
import os
import re
import signal
import time
from datetime import datetime

import pytest

from tests.conftest import assert_one_line_error, run_cli
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
    kill_all(processes_with(str(root)))  # never leave a sleeping play behind, whatever failed


def _sleeping(root):
    """The long play is in its sleep task: the step was recorded, ran its first task and its `sleep 300` runs
    (between two tasks no process of the play carries the workspace's path: the first task's module alone
    was a race)."""
    return order(root) == ["sleep"] and any(_command(pid).startswith(b"sleep\0") for pid in processes_with(str(root)))


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_second_run_is_refused_and_names_the_first(ws):
    first = start_cli("workflows", "run", "long", cwd=ws)
    try:
        wait_for(lambda: _sleeping(ws), what="the first run to reach its sleep")
        running = db_rows(ws, "SELECT id, pid, host FROM runs WHERE status = 'running'")
        assert len(running) == 1
        started = time.monotonic()
        second = run_cli("workflows", "run", "long", cwd=ws, timeout=60)
        assert time.monotonic() - started < 15  # refused at once, not after the first ends
        assert_one_line_error(
            second, "workflow 'long' is already running", f"pid {first.pid}", running[0]["host"], running[0]["id"],
            code=3,
        )
        assert order(ws) == ["sleep"]  # the second run ran nothing
        # a different workflow is not blocked
        assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert len(db_rows(ws, "SELECT id FROM runs WHERE name = 'long'")) == 1  # the refused run left no record


def test_wait_waits_for_the_first_run(ws):
    first = start_cli("workflows", "run", "long", cwd=ws)
    waiting = None
    try:
        wait_for(lambda: _sleeping(ws), what="the first run to reach its sleep")
        second = start_cli("workflows", "run", "green", "--wait", cwd=ws)  # green is free: runs at once
        assert second.wait(120) == 0
        waiting = start_cli("workflows", "run", "long", "--wait", cwd=ws)
        wait_for(lambda: b"waiting for workflow 'long'" in _peek_stdout(waiting), timeout=30, what="the wait notice")
        assert waiting.poll() is None  # still waiting while the first holds the lock
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 130
        # the waiting run now gets the lock and starts its own sleep
        wait_for(lambda: order(ws).count("sleep") == 2, what="the waiting run to start")
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(60) == 130
    finally:
        for proc in (first, waiting):  # a failed assertion must not leave a run holding the lock
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(60)
    statuses = [r["status"] for r in db_rows(ws, "SELECT status FROM runs WHERE name = 'long' ORDER BY started")]
    assert statuses == ["interrupted", "interrupted"]


_stdout_seen: dict = {}


def _peek_stdout(proc) -> bytes:
    """Read what the process wrote to stdout so far (notices are part of the run's story), without blocking."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        chunk = b""
    _stdout_seen[proc.pid] = _stdout_seen.get(proc.pid, b"") + chunk
    return _stdout_seen[proc.pid]


def test_sigterm_stops_a_long_play_and_records_interrupted(ws):
    proc = start_cli("workflows", "run", "long", cwd=ws)
    wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
    assert processes_with(str(ws)), "the play should be running"
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)  # a hang guard, not a timing assertion: the play would sleep far longer
    assert code == 130
    assert processes_with(str(ws)) == []  # ansible, its workers and the sleep: all gone
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["status"] == "interrupted" and run["exit_code"] == 130
    assert run["steps"][0]["status"] == "interrupted"
    assert run["ended"] is not None
    shown = run_cli("runs", "show", "latest", cwd=ws).stdout  # stopped, not failed
    assert re.search(r"^stopped: +step ", shown, re.M) and not re.search(r"^failed:", shown, re.M), shown


def test_killed_run_does_not_block_and_reads_interrupted(ws):
    proc = start_cli("workflows", "run", "long", cwd=ws)
    wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
    killed_id = db_rows(ws, "SELECT id FROM runs WHERE status = 'running'")[0]["id"]
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the row stays 'running'
    proc.wait(30)
    assert db_rows(ws, "SELECT status FROM runs WHERE id = ?", killed_id)[0]["status"] == "running"
    # the play does not outlive polycrate (it gets SIGTERM when its parent dies)
    wait_for(lambda: processes_with(str(ws)) == [], timeout=15, what="the orphaned play to end")
    (ws / "blocks/b/block.poly").write_text(
        (ws / "blocks/b/block.poly").read_text().replace("{name: sleep, playbook: sleep.yml}", "{name: sleep, playbook: ok.yml}")
    )
    nxt = run_cli("workflows", "run", "long", cwd=ws)
    assert nxt.returncode == 0, nxt.output  # the OS freed the lock with the process
    runs = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    assert [(r["run_id"] == killed_id, r["status"]) for r in runs] == [(False, "succeeded"), (True, "interrupted")]
    shown = json.loads(run_cli("runs", "show", killed_id, "-o", "json", cwd=ws).stdout)
    assert shown["steps"][0]["status"] == "interrupted"


def test_killed_run_reads_interrupted_on_the_next_look(ws):
    proc = start_cli("workflows", "run", "long", cwd=ws)
    wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    wait_for(lambda: processes_with(str(ws)) == [], timeout=15, what="the orphaned play to end")
    listed = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]  # a look, no new run
    assert [r["status"] for r in listed] == ["interrupted"]


def test_a_killed_run_ends_in_its_record_when_it_was_last_seen_not_when_found(tmp_path):
    """SIGKILL (the OOM killer) leaves the row 'running'; the next look marks it interrupted. Its end is the
    run's last sign of life (its log's last line), never the moment of that look: the look may come hours
    later, and the run did not run that long. The step that was running reads as the SIGINT record's
    does: interrupted with its end and duration, one attempt; the steps after it skipped."""
    ws = make_workspace(tmp_path / "ws", extra="""
  - name: long-then-more
    steps:
      - {name: sleep, block: b, action: sleep}
      - {name: after, block: b, action: ok}
""")
    try:
        proc = start_cli("workflows", "run", "long-then-more", cwd=ws)
        wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        wait_for(lambda: processes_with(str(ws)) == [], timeout=15, what="the orphaned play to end")
        gone = time.time()  # the process has ended by now: any later time in the record is the look's
        shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    finally:
        kill_all(processes_with(str(ws)))
    epoch = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()  # noqa: E731
    started, ended = epoch(shown["started"]), epoch(shown["ended"])
    assert shown["status"] == "interrupted" and started <= ended <= gone, (shown["ended"], gone)
    assert shown["duration"] == pytest.approx(ended - started, abs=0.01)
    sleep, after = shown["steps"]
    assert (sleep["status"], sleep["attempts"], after["status"]) == ("interrupted", 1, "skipped"), shown["steps"]
    assert sleep["ended"] is not None and epoch(sleep["started"]) <= epoch(sleep["ended"]) <= ended, sleep
    assert sleep["duration"] == pytest.approx(epoch(sleep["ended"]) - epoch(sleep["started"]), abs=0.01)
    assert shown["failed_step"] == "sleep" and "killed?" in sleep["message"], shown


def test_what_a_stopped_step_prints_while_it_stops_is_shown_and_kept_in_its_log(tmp_path):
    """A step that cleans up on SIGINT says so ("stopping, cleaned up"): after Ctrl-C that line is on the terminal
    and in the step's log, as every line before it. Before, the lines printed after the stop were dropped."""
    ws = make_workspace(tmp_path / "ws", extra="""
  - name: tidy
    steps:
      - {name: tidy, block: b, action: tidy}
""")
    with open(ws / "blocks/b/block.poly", "a") as block:
        block.write("""  - name: tidy
    script:
      - "trap 'echo stopping, cleaned up the scratch files; exit 1' INT TERM"
      - echo ready
      - sleep 300 & wait
""")
    try:
        proc = start_cli("workflows", "run", "tidy", cwd=ws)
        wait_for(lambda: any("ready" in p.read_text() for p in (ws / ".polycrate/runs").glob("*/01-tidy.log")),
                 what="the step to be ready")
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=60)  # a hang guard: the step sleeps 300 s
    finally:
        kill_all(processes_with(str(ws)))
    assert proc.returncode == 130
    assert "\nstopping, cleaned up the scratch files\n" in out, out  # the line itself, not the `+ trap` line
    logs = run_cli("runs", "logs", "latest", cwd=ws).stdout
    assert "+ sleep 300 & wait\nstopping, cleaned up the scratch files\n" in logs, logs
    assert json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)["steps"][0]["status"] == "interrupted"


def test_a_run_killed_in_a_silent_task_ends_after_its_last_line(tmp_path):
    """The play prints nothing while its `sleep 300` task runs: the record of a run killed then must not end at
    the task's first line, as if the run had died there. While a step runs, its log is touched every few
    seconds of silence, so the last sign of life is the last moment it was seen running."""
    ws = make_workspace(tmp_path / "ws")
    try:
        proc = start_cli("workflows", "run", "long", cwd=ws)
        wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
        log = next((ws / ".polycrate/runs").glob("*/01-sleep.log"))
        last_line = log.stat().st_mtime
        # a condition, not a time: the step is seen alive after its last line
        wait_for(lambda: log.stat().st_mtime > last_line + 1, timeout=120, what="a sign of life after the last line")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        seen = log.stat().st_mtime
        wait_for(lambda: processes_with(str(ws)) == [], timeout=15, what="the orphaned play to end")
        shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    finally:
        kill_all(processes_with(str(ws)))
    ended = datetime.fromisoformat(shown["ended"].replace("Z", "+00:00")).timestamp()
    assert shown["status"] == "interrupted" and ended >= seen - 0.01 and ended > last_line + 1, (shown, last_line, seen)


STOPPABLE = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: record the step
      ansible.builtin.shell: echo "{{ lookup('env', 'POLYCRATE_STEP') or 'none' }}" >> {{ workspace.root }}/order.txt
    - name: a stop from here leaves nothing
      ansible.builtin.set_fact:
        polycrate_if_stopped: ""
    - name: stop the web service
      ansible.builtin.set_fact:
        polycrate_if_stopped: {service: "web stopped on {{ inventory_hostname }}: start it with `systemctl start web`"}
    - name: begin replacing the database
      ansible.builtin.set_fact:
        polycrate_if_stopped: "{{ polycrate_if_stopped | combine({'database': 'db half-replaced'}) }}"
    - name: sleep long
      ansible.builtin.command: sleep 300
"""


@pytest.mark.parametrize("how", ["sigterm", "timeout"])
def test_a_stopped_step_says_what_the_playbook_said_a_stop_would_leave(ws, how):
    """ansible-playbook runs no rescue or always after a stop, so a playbook says beforehand what a stop would
    leave half-done, in the fact polycrate_if_stopped (a sentence, or a dict of them by topic): the stopped
    step's message ends with the last word of each host, stopped by a signal or by the step's timeout. Before,
    the record said 'interrupted (SIGTERM)' and nothing of a service left stopped."""
    (ws / "blocks/b/sleep.yml").write_text(STOPPABLE)
    if how == "timeout":
        result = run_cli("workflows", "run", "timed", cwd=ws, timeout=120)
        assert result.returncode == 1, result.output
        said = "timed out after 3s"
    else:
        proc = start_cli("workflows", "run", "long", cwd=ws)
        wait_for(lambda: _sleeping(ws), what="the run to reach its sleep")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130
        assert ("polycrate: step sleep stopped: left web stopped on localhost: start it with `systemctl start web`; "
                "db half-replaced") in out + err  # at the terminal too
        said = "interrupted (SIGTERM)"
    step = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)["steps"][0]
    assert step["message"] == (f"{said}: left web stopped on localhost: start it with `systemctl start web`; "
                               "db half-replaced"), step
