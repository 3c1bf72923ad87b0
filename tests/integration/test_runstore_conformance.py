"""Every run store keeps the protocol (polycrate.history.protocol.RunStore): the same tests, each store.

Parametrized over the implementations: the workspace's SQLite store, and PostgreSQL (team mode) on a real
server the tests start (tests/postgres_server.py; marker ``team``). Runs with chosen times are written through
``import_run``, itself part of the protocol; everything else through the calls the engine makes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from polycrate.errors import NotFoundError
from polycrate.history import (
    HostCounts,
    Notice,
    RunRecord,
    RunStore,
    SQLiteRunStore,
    StepRecord,
)
from polycrate.states import Phase, RunKind, RunState, StepState

StoreFactory = Callable[[], RunStore]


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    from tests.postgres_server import running_postgres

    yield from (server.dsn for server in running_postgres())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.team)])
def make_store(request, tmp_path) -> Iterator[StoreFactory]:
    """Opens the store of one workspace (each call a new connection to the same history)."""
    opened: list[RunStore] = []
    if request.param == "sqlite":
        def factory() -> RunStore:
            opened.append(SQLiteRunStore(tmp_path / "ws"))
            return opened[-1]
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        from polycrate.history.postgres import PostgresRunStore

        workspace = f"ws-{uuid.uuid4().hex[:8]}"  # tests share the server: each its own workspace

        def factory() -> RunStore:
            opened.append(PostgresRunStore(dsn, workspace=workspace, root=tmp_path / "ws"))
            return opened[-1]
    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store) -> RunStore:
    return make_store()


def _record(run_id: str, started: float, *, name: str = "nightly", status: str = RunState.SUCCEEDED,
            kind: str = RunKind.WORKFLOW, check: bool = False, only_step: str | None = None,
            steps: tuple[StepRecord, ...] = ()) -> RunRecord:
    ended = None if status == RunState.RUNNING else started + 10
    return RunRecord.from_columns({
        "id": run_id, "kind": kind, "name": name, "workflow": name if kind == RunKind.WORKFLOW else None,
        "started": started, "ended": ended, "status": status, "exit_code": None if ended is None else 0,
        "check_mode": check, "only_step": only_step, "user": "ann", "host": "ops1", "pid": 4242,
        "notices": [], "ansible_options": {},
    }, steps=steps)


def _full_run(store: RunStore) -> str:
    """A run written as the engine writes one: two steps, host counts, a notice, logs, a failure."""
    run_id = store.start_run(kind=RunKind.WORKFLOW, name="nightly", workflow="nightly", lock_key="workflow-nightly",
                             ansible_options={"limit": "web*"})
    store.add_steps(run_id, [
        {"position": 1, "name": "backup", "block": "db", "action": "dump", "status": StepState.NOT_RUN},
        {"position": 2, "name": "update", "block": "os", "action": "upgrade", "status": StepState.NOT_RUN},
        {"position": 3, "name": "alert", "block": "chat", "action": "say", "phase": Phase.ON_FAILURE,
         "status": StepState.NOT_RUN, "note": "after a failure"},
    ])
    store.update_step(run_id, 1, status=StepState.RUNNING, started=1000.0)
    log = store.step_log(run_id, 1, "backup")
    log.write("dumping ********")
    log.write("done: ü ✓")
    log.close()
    store.set_hosts(run_id, 1, {"db1": {"ok": 3, "changed": 1}})
    store.update_step(run_id, 1, status=StepState.SUCCEEDED, ended=1002.0, duration=2.0, exit_code=0, attempts=1)
    store.update_step(run_id, 2, status=StepState.RUNNING, started=1002.5)
    log = store.step_log(run_id, 2, "update")
    log.write("TASK [apt] fatal")
    log.close()
    store.set_hosts(run_id, 2, {"web1": {"ok": 1, "failed": 1}, "web2": {"ok": 2, "unreachable": 1}})
    store.add_notice(run_id, "waited 3 s for the lock")
    store.update_step(run_id, 2, status=StepState.FAILED, ended=1009.0, duration=6.5, exit_code=2, attempts=2,
                      failed_task="apt", failed_host="web1", message="dpkg was interrupted")
    store.finish_run(run_id, status=RunState.FAILED, exit_code=1, failed_step="update", failed_task="apt",
                     failed_host="web1", message="dpkg was interrupted")
    return run_id


def test_it_is_a_run_store(store):
    assert isinstance(store, RunStore)


def test_a_run_reads_back_as_written(make_store):
    run_id = _full_run(make_store())
    run = make_store().get_run(run_id)  # another connection: everything was committed
    assert isinstance(run, RunRecord) and run.id == run_id
    assert (run.kind, run.name, run.workflow, run.status, run.exit_code) == (
        RunKind.WORKFLOW, "nightly", "nightly", RunState.FAILED, 1)
    assert (run.failed_step, run.failed_task, run.failed_host, run.message) == (
        "update", "apt", "web1", "dpkg was interrupted")
    assert run.lock_key == "workflow-nightly" and run.pid == os.getpid() and run.user and run.host
    assert run.ended is not None and run.duration == round(run.ended - run.started, 3)
    assert run.ansible_options == {"limit": "web*"} and run.workflow_success is False
    assert [n.text for n in run.notices] == ["waited 3 s for the lock"] and isinstance(run.notices[0], Notice)
    assert [s.name for s in run.steps] == ["backup", "update", "alert"]
    backup, update, alert = run.steps
    assert (backup.status, backup.started, backup.ended, backup.duration, backup.exit_code, backup.attempts) == (
        StepState.SUCCEEDED, 1000.0, 1002.0, 2.0, 0, 1)
    assert backup.hosts == {"db1": HostCounts(ok=3, changed=1)}
    assert update.hosts["web2"] == HostCounts(ok=2, unreachable=1) and update.hosts["web1"].failed == 1
    assert (update.failed_task, update.failed_host, update.message) == ("apt", "web1", "dpkg was interrupted")
    assert alert.phase == Phase.ON_FAILURE and alert.note == "after a failure" and alert.log is None
    assert alert.status == StepState.NOT_RUN and alert.hosts == {}
    assert backup.log and update.log


def test_logs_read_whole_and_from_a_cursor(make_store):
    store = make_store()
    run_id = _full_run(store)
    run_id_again, logs = make_store().step_logs(run_id)
    assert run_id_again == run_id
    assert [(s.name, text) for s, text in logs] == [
        ("backup", "dumping ********\ndone: ü ✓\n"), ("update", "TASK [apt] fatal\n"), ("alert", "")]
    assert [(s.name, t) for s, t in store.step_logs(run_id, "update")[1]] == [("update", "TASK [apt] fatal\n")]
    with pytest.raises(NotFoundError, match="has no step 'updat'.*update"):
        store.step_logs(run_id, "updat")

    # a log that grows while a reader follows it: each read gives only what came since
    live = store.start_run(kind=RunKind.ACTION, name="b a", block="b", action="a")
    store.add_steps(live, [{"position": 1, "name": "a", "block": "b", "action": "a", "status": StepState.RUNNING}])
    writer = store.step_log(live, 1, "a")
    reader = make_store()
    assert reader.read_log(live, 1).data == b""
    writer.write("one")
    writer.write("two")
    first = _read_until(reader, live, 1, 0, b"one\ntwo\n")
    writer.write("three")
    second = _read_until(reader, live, 1, first.cursor, b"three\n")
    writer.close()
    assert reader.read_log(live, 1, second.cursor).data == b""
    assert reader.read_log(live, 1).data == b"one\ntwo\nthree\n"
    assert reader.read_log(live, 2).data == b"" and reader.read_log("no-such-run", 1).data == b""


def test_a_coloured_log_reads_plain_and_as_stored(make_store):
    """A step's log keeps Ansible's colour codes (for the web page); the plain reader, step_logs (`runs logs`,
    the JSON documents, the events), gives the text without them; read_log the bytes as stored."""
    store = make_store()
    run_id = store.start_run(kind=RunKind.ACTION, name="b a", block="b", action="a")
    store.add_steps(run_id, [{"position": 1, "name": "a", "block": "b", "action": "a", "status": StepState.RUNNING}])
    log = store.step_log(run_id, 1, "a")
    log.write("\x1b[0;32mok: [web1]\x1b[0m")
    log.write("plain \x1b[1;31mred\x1b[0m end")
    log.close()
    reader = make_store()
    assert reader.step_logs(run_id)[1][0][1] == "ok: [web1]\nplain red end\n"
    assert reader.read_log(run_id, 1).data == b"\x1b[0;32mok: [web1]\x1b[0m\nplain \x1b[1;31mred\x1b[0m end\n"


def _read_until(store: RunStore, run_id: str, position: int, cursor: int, want: bytes):
    """A live log is visible to other readers as it is written (within a short flush interval)."""
    deadline = time.monotonic() + 30
    got = b""
    while True:
        piece = store.read_log(run_id, position, cursor)
        got += piece.data
        cursor = piece.cursor
        if got == want or time.monotonic() > deadline:
            assert got == want
            return piece
        time.sleep(0.05)


def test_list_filters_and_orders_newest_first(store):
    ids = []
    for i, (name, status, kind) in enumerate([("nightly", "succeeded", "workflow"), ("nightly", "failed", "workflow"),
                                              ("db backup", "succeeded", "action"), ("hourly", "succeeded", "workflow"),
                                              ("nightly", "interrupted", "workflow")]):
        run_id = f"20261201-0{i}0000-00000{i}"
        assert store.import_run(_record(run_id, 1000.0 + i * 100, name=name, status=status, kind=kind), {})
        ids.append(run_id)
    running = store.start_run(kind=RunKind.WORKFLOW, name="nightly", workflow="nightly")
    store.add_steps(running, [{"position": 1, "name": "a", "block": "b", "action": "x", "status": StepState.RUNNING}])
    listed = store.list_runs(limit=None)
    assert [r.id for r in listed] == [running, *reversed(ids)]
    assert all(isinstance(r, RunRecord) and r.steps == () for r in listed)
    assert listed[0].current_step == "a" and listed[0].ended is None and listed[0].duration is not None
    assert [r.id for r in store.list_runs(name="nightly", limit=None)] == [running, ids[4], ids[1], ids[0]]
    assert [r.id for r in store.list_runs(kind="action")] == [ids[2]]
    assert [r.id for r in store.list_runs(status="failed")] == [ids[1]]
    assert [r.id for r in store.list_runs(since=1100.0, until=1300.0)] == [ids[2], ids[1]]
    assert [r.id for r in store.list_runs(limit=2)] == [running, ids[4]]


def test_run_references(store):
    with pytest.raises(NotFoundError, match="no runs recorded"):
        store.resolve_id("latest")
    a, b = "20261201-020000-aaa111", "20261201-030000-bbb222"
    store.import_run(_record(a, 1000.0), {})
    store.import_run(_record(b, 2000.0), {})
    assert store.resolve_id("latest") == b and store.resolve_id("latest~1") == a
    with pytest.raises(NotFoundError, match=r"only 2 run\(s\) recorded"):
        store.resolve_id("latest~2")
    assert store.resolve_id(a) == a and store.resolve_id(a[:-2]) == a and store.resolve_id("bbb") == b
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.resolve_id("2026")
    for missing in ("zzz", "%", "_", "2026120_"):  # LIKE's wildcards are literal
        with pytest.raises(NotFoundError, match="no run"):
            store.resolve_id(missing)
    assert store.get_run("bbb").id == b
    assert store.find_run(a).id == a and store.find_run(a[:-1]) is None and store.find_run("latest") is None


def test_latest_full_run_status_and_metrics(store):
    store.import_run(_record("20261201-010000-000001", 1000.0, status="failed"), {})
    store.import_run(_record("20261201-020000-000002", 2000.0), {})
    store.import_run(_record("20261201-030000-000003", 3000.0, check=True), {})  # check mode: no full run
    store.import_run(_record("20261201-040000-000004", 4000.0, only_step="a"), {})  # --step: no full run
    store.import_run(_record("20261201-050000-000005", 5000.0, status="running"), {})
    latest = store.latest_full_run("nightly")
    assert latest is not None and latest.id == "20261201-020000-000002" and latest.workflow_success
    assert store.latest_full_run("other") is None
    status = store.workflow_status("nightly")
    assert status.last.id == "20261201-020000-000002" and status.last_success == 2010.0
    assert status.running.id == "20261201-050000-000005"
    assert store.workflow_status("other").last is None
    [metrics] = store.workflow_metrics()
    assert metrics["workflow"] == "nightly" and metrics["last_success"] == 2010.0
    assert metrics["last_status"] == RunState.SUCCEEDED and metrics["last_duration"] == 10.0


def test_prune_keeps_the_newest_and_every_running_run(store):
    ids = [f"20261201-0{i}0000-00000{i}" for i in range(5)]
    for i, run_id in enumerate(ids):
        steps = (StepRecord(1, "a", StepState.SUCCEEDED, log="x"),)
        store.import_run(_record(run_id, 1000.0 + i, steps=steps), {1: b"line\n"})
    running = "20261130-000000-ffffff"
    store.import_run(_record(running, 900.0, status="running"), {})
    assert store.prune(keep_runs=2) == sorted(ids[:3])
    assert [r.id for r in store.list_runs(limit=None)] == [ids[4], ids[3], running]
    assert store.read_log(ids[0], 1).data == b"" and store.read_log(ids[4], 1).data == b"line\n"
    assert store.prune(keep_days=1) == sorted(ids[3:])  # epoch 1000 is long ago
    assert store.prune(keep_runs=0) == []


def test_reconcile_marks_a_dead_process_s_run_interrupted(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hour_ago = time.time() - 3600  # killed then, found now: its record ends at its last sign of life, not now
    gone = _record("20261201-010000-00000a", hour_ago, status="running")
    gone = RunRecord.from_dict({**gone.as_dict(), "pid": dead.pid, "host": _hostname(),
                                "steps": [StepRecord(1, "a", StepState.RUNNING, started=hour_ago + 1).as_dict(),
                                          StepRecord(2, "b", StepState.NOT_RUN).as_dict()]})
    store.import_run(gone, {})
    mine = store.start_run(kind=RunKind.WORKFLOW, name="other", workflow="other")  # this process: alive
    elsewhere = RunRecord.from_dict({**gone.as_dict(), "id": "20261201-010000-00000b", "host": "another-host"})
    store.import_run(elsewhere, {})  # another host's process: not ours to judge
    assert store.reconcile() == 1
    run = store.get_run(gone.id)
    assert run.status == RunState.INTERRUPTED and run.exit_code == 137 and run.ended is not None
    assert run.steps[0].status == StepState.INTERRUPTED and "ended without recording" in run.message
    assert run.ended == hour_ago + 1 and run.duration == 1.0 and run.failed_step == "a", run
    last_seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hour_ago + 1))
    assert f": last seen {last_seen}, found gone " in run.message and run.steps[0].message == run.message  # it ended between
    assert (run.steps[0].ended, run.steps[0].duration, run.steps[0].attempts) == (hour_ago + 1, 0.0, 1)
    assert run.steps[1].status == StepState.SKIPPED  # as after a stop (run/drive.py)
    assert store.get_run(mine).status == RunState.RUNNING
    assert store.get_run(elsewhere.id).status == RunState.RUNNING
    assert store.reconcile() == 0


def _hostname() -> str:
    import socket

    return socket.gethostname()


def test_export_then_import_keeps_everything_and_twice_is_once(make_store, tmp_path):
    source = make_store()
    run_id = _full_run(source)
    source.import_run(_record("20261201-010000-000001", 1000.0, kind=RunKind.ACTION, name="db dump"), {})
    exported = list(source.export_runs())
    assert [r.id for r, _ in exported] == ["20261201-010000-000001", run_id]  # oldest first
    run, logs = exported[1]
    assert logs == {1: "dumping ********\ndone: ü ✓\n".encode(), 2: b"TASK [apt] fatal\n"}

    target = SQLiteRunStore(tmp_path / "copy")  # into the other kind of store and back: nothing lost
    try:
        for record, texts in exported:
            assert target.import_run(record, texts)
            assert not target.import_run(record, texts)  # a second import changes nothing
        again = target.get_run(run_id)
        assert _comparable(again) == _comparable(run)
        assert [(s.name, t) for s, t in target.step_logs(run_id)[1]] == [
            (s.name, t) for s, t in source.step_logs(run_id)[1]]
        assert len(target.list_runs(limit=None)) == 2
    finally:
        target.close()


def _comparable(run: RunRecord) -> dict:
    data = run.as_dict()
    for step in data["steps"]:
        step["log"] = bool(step["log"])  # where a log lives is the store's own business; that it exists is not
    return data


def test_the_store_never_keeps_succeeded_for_a_run_with_an_interrupted_step(store):
    """polycrate.success's rule, applied by every store whatever its caller says (the closed pipe's old record)."""
    run_id = store.start_run(kind=RunKind.WORKFLOW, name="slow", workflow="slow")
    store.add_steps(run_id, [
        {"position": 1, "name": "tick", "block": "s", "action": "tick", "status": StepState.INTERRUPTED},
        {"position": 2, "name": "done", "block": "s", "action": "done", "status": StepState.NOT_RUN},
    ])
    store.finish_run(run_id, status=RunState.SUCCEEDED, exit_code=0)
    run = store.get_run(run_id)
    assert (run.status, run.exit_code, run.workflow_success) == (RunState.INTERRUPTED, 130, False)
    latest = store.latest_full_run("slow")  # what --resume reads
    assert latest is not None and latest.status == RunState.INTERRUPTED

    ok = store.start_run(kind=RunKind.WORKFLOW, name="slow", workflow="slow")
    store.add_steps(ok, [{"position": 1, "name": "tick", "block": "s", "action": "tick", "status": StepState.SUCCEEDED}])
    store.finish_run(ok, status=RunState.SUCCEEDED, exit_code=0)
    done = store.get_run(ok)
    assert (done.status, done.workflow_success) == (RunState.SUCCEEDED, True)


def test_where_a_run_ran_reads_back(store):
    run_id = store.start_run(kind=RunKind.WORKFLOW, name="w", workflow="w", runtime="container",
                             image="localhost/polycrate-base:1", image_digest="sha256:" + "a" * 64)
    run = store.get_run(run_id)
    assert (run.runtime, run.image, run.image_digest) == ("container", "localhost/polycrate-base:1", "sha256:" + "a" * 64)

