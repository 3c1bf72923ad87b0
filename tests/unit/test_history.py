"""The run store, the lock, retention, resume planning and the event reader: pure logic on real files."""
import json
import os
import subprocess
import sys
import time

import pytest

from polycrate.run.engine import resume_point
from polycrate.runtime.events import read_events
from polycrate.errors import LockedError, NotFoundError
from polycrate.history import RunRecord, SQLiteRunStore as RunStore, StepRecord, open_store
from polycrate.run.request import PlannedStep
from polycrate.states import LEGACY_STEP_STATES, RunKind, RunState, StepState
from polycrate.history.locking import RunLock, is_held
from polycrate.notify.metrics import render
from polycrate.config.schema import parse_run_settings
from polycrate.errors import ConfigError
from polycrate.config.yamlfile import load_yaml


def _run(store, name="nightly", status="succeeded", started=None, lock_key=None):
    run_id = store.start_run(kind="workflow", name=name, workflow=name, lock_key=lock_key)
    store.add_steps(run_id, [{"position": 1, "name": "a", "block": "b", "action": "x", "status": "not run"}])
    log = store.step_log(run_id, 1, "a")
    log.write("line")
    log.close()
    if started is not None:
        store.db.execute("UPDATE runs SET started = ? WHERE id = ?", (started, run_id))
    if status != RunState.RUNNING:
        store.finish_run(run_id, status=status, exit_code=0 if status == "succeeded" else 1)
    return run_id


def test_store_lives_in_a_gitignored_folder(tmp_path):
    store = RunStore(tmp_path)
    assert store.path == tmp_path / ".polycrate" / "runs.db"
    assert (tmp_path / ".polycrate" / ".gitignore").read_text().strip().endswith("*")
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_prune_keeps_the_newest_runs_and_removes_their_logs(tmp_path):
    store = RunStore(tmp_path)
    ids = [_run(store, started=1000 + i) for i in range(5)]
    running = _run(store, status=RunState.RUNNING, started=900)  # never removed while running
    removed = store.prune(keep_runs=2)
    assert removed == sorted(ids[:3])
    left = [r.id for r in store.list_runs(limit=None)]
    assert left == [ids[4], ids[3], running]
    for run_id in ids[:3]:
        assert not (store.logs_dir / run_id).exists()
    assert (store.logs_dir / ids[4]).is_dir()
    assert store.db.execute("SELECT COUNT(*) FROM steps WHERE run_id IN (?,?,?)", ids[:3]).fetchone()[0] == 0


def test_prune_by_age(tmp_path):
    store = RunStore(tmp_path)
    old = _run(store, started=time.time() - 10 * 86400)
    new = _run(store)
    assert store.prune(keep_days=7) == [old]
    assert [r.id for r in store.list_runs()] == [new]


def test_resolve_id_by_prefix_latest_and_errors(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(NotFoundError, match="no runs recorded"):
        store.resolve_id("latest")
    a = _run(store, started=1)
    b = _run(store, started=2)
    assert store.resolve_id("latest") == b
    assert store.resolve_id(a) == a
    assert store.resolve_id(a[:-1]) == a
    with pytest.raises(NotFoundError, match="no run 'zzz'"):
        store.resolve_id("zzz")
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.resolve_id("2")  # both ids start with the year
    with pytest.raises(NotFoundError):
        store.resolve_id("%")  # LIKE wildcards are literal


def test_reconcile_marks_runs_of_dead_processes_interrupted(tmp_path):
    store = RunStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = _run(store, status=RunState.RUNNING, lock_key="workflow-nightly")
    store.db.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, run_id))
    alive = _run(store, name="other", status=RunState.RUNNING)  # this process: alive, no lock
    assert store.reconcile() == 1
    assert store.get_run(run_id).status == RunState.INTERRUPTED
    assert store.get_run(run_id).steps[0].status == StepState.NOT_RUN  # "not run": an old store's wording
    assert store.get_run(alive).status == RunState.RUNNING


def test_reconcile_trusts_a_held_lock_only_for_its_own_run(tmp_path):
    store = RunStore(tmp_path)
    lock = RunLock(tmp_path, "workflow-nightly", "workflow 'nightly'")
    lock.acquire()
    mine = _run(store, status=RunState.RUNNING, lock_key="workflow-nightly")
    lock.write_holder(mine)
    assert store.reconcile() == 0
    # same pid, but the lock now names another run: the row is stale
    lock.write_holder("another-run")
    assert store.reconcile() == 1
    assert store.get_run(mine).status == RunState.INTERRUPTED
    lock.release()


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = RunLock(tmp_path, "workflow-nightly", "workflow 'nightly'")
    first.acquire()
    first.write_holder("run-123")
    second = RunLock(tmp_path, "workflow-nightly", "workflow 'nightly'")
    with pytest.raises(LockedError) as err:
        second.acquire()
    message = str(err.value)
    assert f"pid {os.getpid()}" in message and "run-123" in message and "already running" in message
    assert err.value.exit_code == 3
    assert is_held(first.path)
    first.release()
    assert not is_held(first.path)
    second.acquire()  # free again
    second.release()


def test_lock_of_a_killed_process_is_free(tmp_path):
    code = (
        "import time\n"
        "from polycrate.history.locking import RunLock\n"
        "l = RunLock(__import__('pathlib').Path(%r), 'workflow-x', 'x'); l.acquire(); print('locked', flush=True)\n"
        "time.sleep(60)\n"
    ) % str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    mine = RunLock(tmp_path, "workflow-x", "x")
    with pytest.raises(LockedError, match=f"pid {proc.pid}"):
        mine.acquire()
    proc.kill()
    proc.wait()
    assert (tmp_path / ".polycrate/locks/workflow-x.lock").exists()  # the file stays ...
    mine.acquire()  # ... and blocks nobody
    mine.release()


def test_resume_point_skips_only_the_leading_finished_steps():
    def previous(first: str) -> RunRecord:
        steps = [StepRecord(1, "backup", first), StepRecord(2, "update", "failed"), StepRecord(3, "verify", "skipped")]
        return RunRecord(id="r", kind="workflow", name="w", started=0.0, status="failed", steps=tuple(steps))

    planned = [PlannedStep(n, "b", n) for n in ("backup", "update", "verify")]
    assert resume_point(previous("succeeded"), planned) == {"backup"}
    assert resume_point(previous(StepState.SUCCEEDED_BEFORE), planned) == {"backup"}  # a resumed run, resumed again
    assert resume_point(previous("skipped (resumed)"), planned) == {"backup"}  # as stores before states.py wrote it
    assert resume_point(previous("interrupted"), planned) == set()


def test_read_events_counts_hosts_and_finds_the_last_real_failure(tmp_path):
    path = tmp_path / "events.jsonl"
    events = [
        {"event": "ok", "host": "h1", "task": "t1", "changed": True},
        {"event": "failed", "host": "h1", "task": "ignored", "ignore_errors": True, "message": "meh"},
        {"event": "failed", "host": "h2", "task": "t2", "ignore_errors": False, "message": "boom"},
        {"event": "skipped", "host": "h1", "task": "t3"},
    ]
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n{\"event\": \"ok\", \"ho")  # cut by a kill
    hosts, failure = read_events(path)
    assert failure == {"task": "t2", "host": "h2", "message": "boom"}
    assert hosts["h1"] == {"ok": 2, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 1}
    assert hosts["h2"]["failed"] == 1
    stats = {"h1": {"ok": 5, "changed": 2, "failed": 0, "unreachable": 0, "skipped": 1}}
    with path.open("a") as handle:
        handle.write("\n" + json.dumps({"event": "stats", "hosts": stats}) + "\n")
    assert read_events(path)[0] == stats  # Ansible's own recap wins when the play got that far
    assert read_events(tmp_path / "missing") == ({}, None)


def test_metrics_render_escapes_labels():
    text = render('ws"1', [{"workflow": "a\\b", "last_run": 2.0, "last_success": None, "last_duration": 1.5,
                            "last_status": "failed", "last_exit_code": 1}])
    assert 'workspace="ws\\"1",workflow="a\\\\b"' in text
    assert "polycrate_workflow_last_success_timestamp_seconds{" in text and "} 0.000" in text


def _settings(tmp_path, text):
    path = tmp_path / "workspace.poly"
    path.write_text(text)
    return parse_run_settings(load_yaml(path), path)


def test_run_settings_parse_and_validate(tmp_path):
    s = _settings(
        tmp_path,
        "history: {keep_runs: 50, keep_days: 30}\n"
        "webhooks:\n  - url: https://hooks.example/x\n    headers: {Authorization: Bearer t}\n    on: [success, failure]\n"
        "metrics: {path: /var/lib/node_exporter/polycrate.prom}\n",
    )
    assert (s.keep_runs, s.keep_days) == (50, 30)
    assert s.webhooks[0].on == ("success", "failure") and s.webhooks[0].headers == (("Authorization", "Bearer t"),)
    assert s.metrics_path == "/var/lib/node_exporter/polycrate.prom"
    assert _settings(tmp_path, "webhooks:\n  - url: http://x/\n").webhooks[0].on == ("failure",)
    with pytest.raises(ConfigError, match="'keep_runs' must be a whole number >= 1"):
        _settings(tmp_path, "history: {keep_runs: 0}\n")
    with pytest.raises(ConfigError, match="not 'always'"):
        _settings(tmp_path, "webhooks:\n  - url: http://x/\n    on: [always]\n")
    with pytest.raises(ConfigError, match="must start with http"):
        _settings(tmp_path, "webhooks:\n  - url: ftp://x/\n")
    with pytest.raises(ConfigError, match="unknown key 'keep'"):
        _settings(tmp_path, "history: {keep: 3}\n")


def test_open_store_reconciles(tmp_path):
    store = RunStore(tmp_path)
    run_id = _run(store, status=RunState.RUNNING)
    store.db.execute("UPDATE runs SET pid = 999999999 WHERE id = ?", (run_id,))
    store.close()
    assert open_store(tmp_path).get_run(run_id).status == RunState.INTERRUPTED


def test_step_states_of_old_stores_read_as_todays(tmp_path):
    """Stores written before states.py kept display wording as step states: they load as the states they meant."""
    store = RunStore(tmp_path)
    run_id = store.start_run(kind="workflow", name="w", workflow="w")
    old = list(LEGACY_STEP_STATES)
    store.add_steps(run_id, [{"position": i, "name": f"s{i}", "block": "b", "action": "x", "status": text}
                             for i, text in enumerate(old, 1)])
    store.finish_run(run_id, status="failed", exit_code=1)
    run = store.get_run(run_id)
    store.close()
    assert [s.status for s in run.steps] == [StepState(LEGACY_STEP_STATES[t]) for t in old]
    assert run.status is RunState.FAILED
    assert [StepState(t) for t in old] == [StepState.NOT_RUN, StepState.FAILED_ALLOWED, StepState.SKIPPED_CHECK,
                                           StepState.SUCCEEDED_BEFORE]


def test_the_records_that_matter_are_synced_the_rest_not(tmp_path):
    # a run's start, each step's end and the run's end commit at synchronous=FULL (an fsync, which
    # covers the commits before it); the updates in between at NORMAL (consistent, and kept through a
    # crash of polycrate; a power loss may take them back)
    store = open_store(tmp_path)
    level = ["NORMAL"]
    writes: list[tuple[str, str]] = []

    def trace(statement: str) -> None:
        if statement.startswith("PRAGMA synchronous ="):
            level[0] = statement.split("=")[1].strip()
        elif statement.startswith(("INSERT", "UPDATE")):
            writes.append((" ".join(statement.split()[:4]), level[0]))

    store.db.set_trace_callback(trace)
    run_id = store.start_run(kind=RunKind.WORKFLOW, name="nightly")
    store.update_step(run_id, 1, status=StepState.RUNNING, started=time.time())
    store.step_log(run_id, 1, "one").close()
    store.update_step(run_id, 1, status=StepState.SUCCEEDED, ended=time.time(), duration=0.1)
    store.finish_run(run_id, status=RunState.SUCCEEDED, exit_code=0)
    assert writes[:-1] == [
        ("INSERT INTO runs (id,", "FULL"),  # the run is recorded
        ("UPDATE steps SET status", "NORMAL"),  # running
        ("UPDATE steps SET log", "NORMAL"),
        ("UPDATE steps SET status", "FULL"),  # the step's end
    ]
    assert writes[-1][0].startswith("UPDATE runs") and writes[-1][1] == "FULL"  # the run's end
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between them
    store.close()
