"""Team mode's workers through the real CLI: `polycrate worker` processes against a real PostgreSQL, runs
launched with `workflows run` from another process, read back with `runs show/logs` from a third.

No timed assertions: every wait polls for a state with a generous deadline; times are measured and printed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import run_cli, wait_for
from tests.team.harness import Team

pytestmark = pytest.mark.team

SECRET = "hunter2-TEAM-NOLOG"
LAUNCHES = 50  # launches of one workflow in the overlap test
DEADLINE = 180.0  # seconds a poll waits before the test fails (a busy machine, never a timed assertion)


def _workspace(root: Path, marks: Path) -> Path:
    write(root / "workspace.poly", """
        name: teamws
        blocks:
          - name: b
        workflows:
          - name: hello
            steps:
              - {name: greet, block: b, action: greet}
              - {name: secret, block: b, action: secret}
          - name: exclusive
            steps:
              - {name: inside, block: b, action: inside}
          - name: gate
            steps:
              - {name: wait, block: b, action: wait}
              - {name: after, block: b, action: greet}
          - name: elsewhere
            queue: dmz
            steps:
              - {name: greet, block: b, action: greet}
        """)
    write(root / "blocks/b/block.poly", f"""
        name: b
        actions:
          - name: greet
            script:
              - echo "hello from the worker"
          - name: secret
            script:
              - cat "$POLYCRATE_WORKSPACE/artifacts/secrets/secrets.poly"
          - name: inside
            script:
              - mkdir {marks}/inside || {{ echo overlap >> {marks}/overlaps; exit 1; }}
              - echo "$$ $(date +%s.%N)" >> {marks}/inside.log
              - sleep 0.3
              - rmdir {marks}/inside
          - name: wait
            script:
              - echo started >> {marks}/gate-started
              - while [ ! -e {marks}/open ]; do sleep 0.1; done
        """)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    write(root / ".gitignore", ".polycrate/\nartifacts/secrets/secrets.poly\n")
    write(root / "artifacts/secrets/secrets.poly", f"config:\n  password: {SECRET}\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    return root


@pytest.fixture
def team(team_env, tmp_path) -> Iterator[Team]:
    marks = tmp_path / "marks"
    marks.mkdir()
    team = Team(_workspace(tmp_path / "ws", marks), marks, team_env, tmp_path)
    try:
        yield team
    finally:
        team.stop_all()


def _launch(team: Team, workflow: str, *extra: str) -> str:
    launched = team.cli("workflows", "run", workflow, *extra)
    assert launched.returncode == 0, launched.output
    return launched.stdout.strip().splitlines()[-1]


def _status(team: Team, run_id: str) -> str | None:
    rows = team.sql("SELECT status FROM runs WHERE workspace = 'teamws' AND id = %s", run_id)
    return rows[0]["status"] if rows else None


def test_a_launched_run_runs_on_a_worker_and_reads_back_from_another_process(team):
    team.start_worker("w1")
    waited = team.cli("workflows", "run", "hello", "--wait")
    assert waited.returncode == 0, waited.output
    run_id = waited.stdout.splitlines()[0]
    assert "queued on 'default'" in waited.stderr and "hello from the worker" in waited.stdout
    shown = team.show(run_id)  # another process, from the backend
    assert shown["status"] == "succeeded" and shown["user"] and shown["host"]
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [("greet", "succeeded"), ("secret", "succeeded")]
    logs = team.cli("runs", "logs", run_id)
    assert logs.returncode == 0 and "password: ********" in logs.stdout, logs.output
    assert SECRET not in logs.stdout + json.dumps(shown) + team.worker_log("w1")
    row = team.sql("SELECT * FROM team_runs WHERE id = %s", run_id)[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=team.ws, capture_output=True, text=True).stdout.strip()
    assert (row["state"], row["worker"], row["git_commit"], row["queue"]) == ("done", "w1", head, "default")

    listed = team.cli("worker", "list", "-o", "json")
    workers = json.loads(listed.stdout)["workers"]
    assert [(w["name"], w["queues"], w["state"]) for w in workers] == [("w1", ["default"], "alive")]
    assert workers[0]["last_heartbeat"] is not None



def test_a_worker_s_run_records_the_commit_it_ran(team):
    """Which version of the workspace a worker ran is in the run's record (`runs show`, its JSON, the run's
    page): two runs launched at two commits each name their own. Before, only the launch's line said it."""
    team.start_worker("w1")

    def head() -> str:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=team.ws, capture_output=True, text=True,
                              check=True).stdout.strip()

    def launched_at() -> tuple[str, str]:
        waited = team.cli("workflows", "run", "hello", "--wait")
        assert waited.returncode == 0, waited.output
        return waited.stdout.splitlines()[0], head()

    first, first_commit = launched_at()
    (team.ws / "NOTES.md").write_text("a change\n")
    subprocess.run(["git", "add", "-A"], cwd=team.ws, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "notes"],
                   cwd=team.ws, check=True)
    second, second_commit = launched_at()
    assert first_commit != second_commit
    for run_id, commit in ((first, first_commit), (second, second_commit)):
        assert team.show(run_id)["git_commit"] == commit
        text = team.cli("runs", "show", run_id)
        assert f"commit:    {commit}" in text.stdout.splitlines(), text.output


def test_a_dirty_tree_is_not_queued_and_another_commit_fails_the_run_with_nothing_executed(team):
    (team.ws / "inventory.yml").write_text("all: {}\n")
    refused = team.cli("workflows", "run", "hello")
    assert refused.returncode == 2 and "uncommitted changes (inventory.yml)" in refused.stderr, refused.output
    assert team.sql("SELECT count(*) AS n FROM team_runs")[0]["n"] == 0
    subprocess.run(["git", "checkout", "inventory.yml"], cwd=team.ws, check=True)

    run_id = _launch(team, "hello")  # launched at this commit; the worker's folder moves on before it runs
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty",
                    "-m", "later"], cwd=team.ws, check=True)
    team.start_worker("w1")
    wait_for(lambda: _status(team, run_id) == "failed", "the run is recorded as failed")
    shown = team.show(run_id)
    assert "the launch asked for" in shown["message"] and "nothing executed" in shown["message"]
    assert shown["steps"] == []  # nothing ran


def test_two_workers_never_run_two_copies_of_a_workflow(team):
    """Two launchers (as two hosts would) race to launch one workflow while two workers take its runs: every
    launch made while a run is queued or running is refused, the accepted ones run one after the other.

    The launches go through ``team.launch.enqueue`` (what `workflows run` calls once it has read the workspace
    and checked its commit), each launcher on its own connection, retrying within milliseconds: a CLI process
    per attempt would cost ~0.8 s of this 2-core machine each and leave the race windows mostly untried. The
    CLI's refusal (exit 3, the running run named) is test_a_second_launch_names_the_running_run_and_its_worker.
    """
    import threading

    from polycrate.history.store import current_user
    from polycrate.team.launch import AlreadyRunning, Launch, checked_commit, enqueue

    team.start_worker("w1")
    team.start_worker("w2")
    launch = Launch(workspace="teamws", root=team.ws.resolve(), workflow="exclusive", queue="default",
                    git_commit=checked_commit(team.ws), launched_by=current_user())
    accepted: list[str] = []
    refused: list[str] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def launcher() -> None:
        try:
            while True:
                with guard:
                    if len(accepted) >= LAUNCHES:
                        return
                try:
                    run_id = enqueue(team.env["POLYCRATE_BACKEND"], launch)
                except AlreadyRunning as exc:
                    with guard:
                        refused.append(str(exc))
                    time.sleep(0.2)  # ~10 attempts a second in all: the race, without starving the workers
                    continue
                with guard:
                    accepted.append(run_id)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=launcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE * 4)
    assert not errors, errors
    assert refused and all("workflow 'exclusive' is already" in r for r in refused), refused[:3]
    # both launchers may each have one accepted past the count (the guard is per attempt): they all run
    wait_for(lambda: all(_status(team, r) not in (None, "running") for r in accepted), "every run ended")
    rows = team.sql("SELECT id, started, ended, status FROM runs WHERE workspace = 'teamws' ORDER BY started")
    assert len(rows) == len(accepted) >= LAUNCHES
    assert [r["status"] for r in rows] == ["succeeded"] * len(accepted)
    for before, after in zip(rows, rows[1:], strict=False):
        assert before["ended"] <= after["started"], (before, after)  # one after the other, never two at once
    assert not (team.marks / "overlaps").exists()
    assert len((team.marks / "inside.log").read_text().splitlines()) == len(accepted)
    import statistics

    launched = team.sql("SELECT t.worker, t.launched, r.started, r.ended FROM team_runs t JOIN runs r"
                        " ON r.workspace = t.workspace AND r.id = t.id")
    print(f"{len(accepted)} runs, {len(refused)} launches refused while one was queued or running; runs by worker: "
          f"{ {w: sum(1 for r in launched if r['worker'] == w) for w in sorted({r['worker'] for r in launched})} }; "
          f"median launch to record opened {statistics.median(r['started'] - r['launched'] for r in launched):.2f} s, "
          f"median run {statistics.median(r['ended'] - r['started'] for r in launched):.2f} s "
          f"(load {os.getloadavg()[0]:.1f})")


def test_a_second_launch_names_the_running_run_and_its_worker(team):
    team.start_worker("w1")
    run_id = _launch(team, "gate")
    wait_for(lambda: (team.marks / "gate-started").exists(), "the step started")
    second = team.cli("workflows", "run", "gate")
    assert second.returncode == 3, second.output
    assert f"already running: run {run_id} on worker w1" in second.stderr
    (team.marks / "open").touch()
    wait_for(lambda: _status(team, run_id) == "succeeded", "the run succeeded")


def test_stop_from_another_process_interrupts_the_run_on_its_worker(team):
    team.start_worker("w1")
    run_id = _launch(team, "gate")
    wait_for(lambda: (team.marks / "gate-started").exists(), "the step started")
    asked = time.monotonic()
    stopped = run_cli("runs", "stop", run_id, cwd=team.ws, env=team.env)
    assert stopped.returncode == 0, stopped.output
    returned = time.monotonic()  # the stop request is in the database (the CLI's own start-up is before this)
    wait_for(lambda: _status(team, run_id) == "interrupted", "the run is interrupted")
    took, after_request = time.monotonic() - asked, time.monotonic() - returned
    shown = team.show(run_id)
    assert shown["message"].startswith("interrupted by ") and "(polycrate runs stop)" in shown["message"]
    assert shown["steps"][0]["status"] == "interrupted" and shown["steps"][1]["status"] == "skipped"
    stored = team.sql("SELECT t.stop_requested, r.ended FROM team_runs t JOIN runs r ON r.workspace = t.workspace"
                      " AND r.id = t.id WHERE t.id = %s", run_id)[0]
    print(f"runs stop: the request stored to the run recorded as ended {stored['ended'] - stored['stop_requested']:.2f} s"
          f" (the times in the database); {took:.2f} s from starting the stop command to seeing 'interrupted', "
          f"{after_request:.2f} s after that command returned (load {os.getloadavg()[0]:.1f})")
    again = team.cli("runs", "stop", run_id)
    assert again.returncode != 0 and "not running" in again.stderr


def test_a_killed_worker_s_run_becomes_lost_never_runs_twice_and_frees_the_lock(team):
    doomed = team.start_worker("w1")
    run_id = _launch(team, "gate")
    wait_for(lambda: (team.marks / "gate-started").exists(), "the step started")
    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its run's process: nobody is left to record an end
    doomed.wait()
    killed = time.time()
    team.start_worker("w2")  # the one alive: it finds the silent worker's run (10 s of silence at least)
    wait_for(lambda: _status(team, run_id) == "lost", "the run is marked lost")
    shown = team.show(run_id)
    assert "its worker w1" in shown["message"] and "stopped heartbeating" in shown["message"]
    steps = [(s["name"], s["status"]) for s in shown["steps"]]
    assert steps == [("wait", "interrupted"), ("after", "skipped")], steps
    # it ended at its last sign of life (w1's last heartbeat), before the kill: not when w2 found it, 10 s later
    row = team.sql("SELECT r.ended, r.failed_step, s.started AS step_started, s.ended AS step_ended, s.duration"
                   " FROM runs r JOIN steps s ON s.workspace = r.workspace AND s.run_id = r.id AND s.position = 1"
                   " WHERE r.workspace = 'teamws' AND r.id = %s", run_id)[0]
    assert row["step_started"] <= row["ended"] <= killed, (row, killed)
    assert row["step_ended"] == row["ended"] and row["failed_step"] == "wait"
    assert abs(row["duration"] - (row["ended"] - row["step_started"])) < 0.01
    assert "last seen " in shown["message"] and "found silent " in shown["message"]
    assert not [n for n in shown["notices"] if "stopped heartbeating" in n["text"]]  # said once, not a third time

    def states() -> tuple[str, str]:
        listed = {w["name"]: w for w in json.loads(team.cli("worker", "list", "-o", "json").stdout)["workers"]}
        return listed["w1"]["state"], listed["w2"]["state"]

    wait_for(lambda: states() == ("lost", "alive"), "worker list shows w1 lost and w2 alive")
    wait_for(lambda: team.sql("SELECT status FROM procrastinate_jobs WHERE args->>'run_id' = %s", run_id)[0]["status"]
             == "failed", "the lost run's job is finished (the workflow's lock is free)")
    (team.marks / "open").touch()
    again = team.cli("workflows", "run", "gate", "--wait")  # the lock is free: a new launch runs, on w2
    assert again.returncode == 0, again.output
    assert _status(team, run_id) == "lost"  # never re-run by itself, never overwritten
    assert len((team.marks / "gate-started").read_text().splitlines()) == 2  # the lost one once, the new one once
    assert len(team.sql("SELECT id FROM procrastinate_jobs WHERE args->>'run_id' = %s", run_id)) == 1



def test_a_worker_found_silent_is_alive_again_once_it_heartbeats_again(team):
    """A worker that went silent past --lost-after (a paused VM, a network partition, the backend away) is shown
    lost; once its heartbeats come back it is alive again: `worker list` and the server's launch (which waits
    for an alive worker of the queue) believe it. Before, it stayed lost for good and left the list after an
    hour while it ran runs."""
    paused = team.start_worker("w1")
    team.start_worker("w2", "--queue", "dmz")

    def state(name: str) -> str | None:
        listed = team.cli("worker", "list", "-o", "json")
        assert listed.returncode == 0, listed.output
        return {w["name"]: w["state"] for w in json.loads(listed.stdout)["workers"]}.get(name)

    wait_for(lambda: state("w1") == "alive" and state("w2") == "alive", "both workers are alive")
    os.killpg(paused.pid, signal.SIGSTOP)  # silent: no heartbeat, nothing else changes
    try:
        wait_for(lambda: state("w1") == "lost", "w2 finds w1 silent")
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    wait_for(lambda: state("w1") == "alive", "w1 is alive again once it heartbeats")
    assert state("w2") == "alive"
    ran = team.cli("workflows", "run", "hello", "--wait")  # and it runs what its queue gets
    assert ran.returncode == 0, ran.output


def test_postgresql_stopped_during_a_run_the_run_stops_itself_and_its_record_is_true_once_it_is_back(team, postgres):
    team.start_worker("w1")
    run_id = _launch(team, "gate")
    wait_for(lambda: (team.marks / "gate-started").exists(), "the step started")
    postgres.stop()
    try:
        wait_for(lambda: f"run {run_id}: lost its connection to the backend" in team.worker_log("w1"),
                 "the run noticed that its fence's connection failed")
        time.sleep(3)  # the database stays away a while (the run has stopped its step and waits to record)
    finally:
        postgres.start()
    wait_for(lambda: _status(team, run_id) == "interrupted", "the run is recorded as interrupted once PostgreSQL is back")
    shown = team.show(run_id)
    assert shown["message"].startswith("lost its connection to the backend"), shown["message"]
    assert [s["status"] for s in shown["steps"]] == ["interrupted", "skipped"]
    assert len((team.marks / "gate-started").read_text().splitlines()) == 1  # it did not run again
    (team.marks / "open").touch()
    again = team.cli("workflows", "run", "gate", "--wait")  # the worker came back and takes the next launch
    assert again.returncode == 0, again.output
    assert team.sql("SELECT state FROM team_runs WHERE id = %s", run_id)[0]["state"] == "done"
    log = team.worker_log("w1")  # what an admin reads in the worker's journal: one line per event, no traceback
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]
    lines = log.splitlines()  # the pool's retries while the backend was away: said once, then with their count
    assert all(lines.count(line) == 1 for line in lines if "error connecting" in line), log[-3000:]



def test_a_run_marked_lost_while_the_backend_was_away_is_recorded_by_its_process_step_and_all(team, postgres):
    """w1 is silent long enough for w2 to mark its run lost (the run's step then reads "lost: ... nobody
    recorded an end"); then the backend goes away and the run stops itself. Once the backend is back the run's
    own process records how it ended: the run and its step say the same, true thing, and name the step."""
    paused = team.start_worker("w1")
    team.start_worker("w2", "--queue", "dmz")
    run_id = _launch(team, "gate")
    wait_for(lambda: (team.marks / "gate-started").exists(), "the step started")
    os.killpg(paused.pid, signal.SIGSTOP)  # w1 and its run's process: silent
    try:
        wait_for(lambda: _status(team, run_id) == "lost", "w2 marks the silent worker's run lost")
        postgres.stop()
        try:
            os.killpg(paused.pid, signal.SIGCONT)
            wait_for(lambda: f"run {run_id}: lost its connection to the backend" in team.worker_log("w1"),
                     "the run noticed that its fence's connection failed")
        finally:
            postgres.start()
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    wait_for(lambda: _status(team, run_id) == "interrupted", "the run's process records its end once the backend is back")
    shown = team.show(run_id)
    assert shown["message"].startswith("lost its connection to the backend"), shown["message"]
    steps = {s["name"]: s for s in shown["steps"]}
    assert (steps["wait"]["status"], steps["wait"]["message"]) == ("interrupted", shown["message"]), steps["wait"]
    assert steps["after"]["status"] == "skipped" and shown["failed_step"] == "wait", shown
    assert len((team.marks / "gate-started").read_text().splitlines()) == 1  # it did not run again



def test_a_launch_onto_a_queue_no_alive_worker_serves_says_so(team):
    """A queue no alive worker serves (a typo in `queue:`, its workers down) is said at launch, with the queues
    that are served: before, the launch said only "queued" and `--wait` waited without a word."""
    team.start_worker("w1")  # --queue default

    def alive() -> bool:
        listed = json.loads(team.cli("worker", "list", "-o", "json").stdout)["workers"]
        return any(w["name"] == "w1" and w["state"] == "alive" for w in listed)

    wait_for(alive, "w1 is alive")
    served = team.cli("workflows", "run", "hello", "--wait")
    assert served.returncode == 0 and "warning" not in served.stderr, served.output
    unserved = team.cli("workflows", "run", "elsewhere")  # queue: dmz
    assert unserved.returncode == 0, unserved.output
    assert ("polycrate: warning: no alive worker serves queue 'dmz' (alive workers serve: default); the run waits"
            " until one does (polycrate worker --queue dmz)") in unserved.stderr, unserved.stderr
    run_id = unserved.stdout.strip().splitlines()[-1]
    assert team.sql("SELECT state FROM team_runs WHERE id = %s", run_id)[0]["state"] == "queued"  # queued all the same


def test_a_workflow_runs_on_its_queue_s_workers_only_and_a_launch_can_name_another_queue(team):
    team.start_worker("w-default")  # --queue default (the default)
    elsewhere = _launch(team, "elsewhere")  # queue: dmz in workspace.poly
    waited = team.cli("workflows", "run", "hello", "--wait")  # queued after it, run by the default worker
    assert waited.returncode == 0, waited.output
    # the worker takes the oldest job it may: had it taken dmz's, that one would have run first
    assert team.sql("SELECT state FROM team_runs WHERE id = %s", elsewhere)[0]["state"] == "queued"
    team.start_worker("w-dmz", "--queue", "dmz")
    wait_for(lambda: _status(team, elsewhere) == "succeeded", "the dmz worker ran it")
    overridden = team.cli("workflows", "run", "hello", "--queue", "dmz", "--wait")
    assert overridden.returncode == 0, overridden.output
    workers = {r["id"]: (r["queue"], r["worker"]) for r in team.sql("SELECT id, queue, worker FROM team_runs")}
    assert workers[elsewhere] == ("dmz", "w-dmz")
    assert workers[overridden.stdout.splitlines()[0]] == ("dmz", "w-dmz")
    assert workers[waited.stdout.splitlines()[0]] == ("default", "w-default")
