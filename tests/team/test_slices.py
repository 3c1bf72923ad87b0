"""Sliced steps (`slices: N`, AWX's job slicing) through the real CLI and real ansible-playbook: without a
backend the parts run one after the other here; with one, real `polycrate worker` processes run them at once.

Six inventory hosts on the local connection, each with its own name; the playbook appends one line per host
to a marker file (host, the hosts of its play, time), so every host's single run is visible.
No timed assertions: every wait polls for a state with a generous deadline.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.helpers import run_cli
from tests.team.conftest import no_backend

HOSTS = [f"node{i}" for i in range(1, 7)]
DEADLINE = 240.0


SECRET = "slice-SECRET-never-logged"


def _workspace(root: Path, marks: Path, fail_host: str = "", slices: int = 3, sleep: float = 2.0,
               gate: bool = False, live: bool = False) -> Path:
    write(root / "workspace.poly", f"""
        name: slicews
        blocks:
          - name: b
        workflows:
          - name: wide
            steps:
              - {{name: touch, block: b, action: touch, slices: {slices}}}
              - {{name: after, block: b, action: after}}
          - name: scripted
            steps:
              - {{name: s, block: b, action: after, slices: 2}}
        """)
    write(root / "blocks/b/block.poly", """
        name: b
        actions:
          - name: touch
            playbook: touch.yml
          - name: after
            script:
              - echo after the sliced step
        """)
    write(root / "blocks/b/touch.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: mark the host
              ansible.builtin.shell: echo "{{{{ inventory_hostname }}}} {{{{ ansible_play_hosts_all | join(',') }}}} $(date +%s.%N)" >> {marks}/hosts.log
            - name: stay a while
              ansible.builtin.shell: sleep {sleep}{f"; while [ ! -e {marks}/release ]; do sleep 0.1; done" if gate else ""}
            - name: the failing host
              ansible.builtin.fail:
                msg: "{{{{ inventory_hostname }}}} fails on purpose"
              when: inventory_hostname == "{fail_host}"
            - name: changed on every host
              ansible.builtin.command: "true"
        """)
    if live:  # a line per host, a wait for the test's marker, another line; the first one says a secret
        write(root / "blocks/b/touch.yml", f"""
            - hosts: all
              gather_facts: false
              tasks:
                - name: the first line
                  ansible.builtin.debug:
                    msg: "first-{{{{ inventory_hostname }}}} {{{{ lookup('file', '{root}/artifacts/secrets/secrets.poly') }}}}"
                - name: wait for the marker
                  ansible.builtin.shell: "echo {{{{ inventory_hostname }}}} >> {marks}/hosts.log; while [ ! -e {marks}/release ]; do sleep 0.1; done"
                - name: the second line
                  ansible.builtin.debug:
                    msg: "second-{{{{ inventory_hostname }}}}"
            """)
        write(root / "artifacts/secrets/secrets.poly", f"config:\n  password: {SECRET}\n")
    write(root / "inventory.yml", "all:\n  hosts:\n" + "".join(
        f"    {h}:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        for h in HOSTS))
    write(root / ".gitignore", ".polycrate/\nartifacts/secrets/secrets.poly\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    return root


def _marks(marks: Path) -> list[list[str]]:
    path = marks / "hosts.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _step(shown: dict[str, Any], name: str) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in shown["steps"] if s["name"] == name)
    return step


# --- without a backend ------------------------------------------------------------------------------------------


def test_without_a_backend_the_slices_run_one_after_the_other_here_and_combine(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, sleep=0)
    env = no_backend(tmp_path)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=env)
    assert ran.returncode == 0, ran.output
    lines = _marks(marks)
    assert sorted(line[0] for line in lines) == HOSTS  # every host exactly once
    # three plays (one ansible-playbook each), two hosts each in inventory order, one after the other
    assert [line[1] for line in lines] == ["node1,node2"] * 2 + ["node3,node4"] * 2 + ["node5,node6"] * 2
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws, env=env).stdout)
    touch = _step(shown, "touch")
    assert touch["status"] == "succeeded"
    assert sorted(touch["hosts"]) == HOSTS
    assert all(c["ok"] == 3 and c["changed"] == 3 and c["failed"] == 0 for c in touch["hosts"].values())
    log = run_cli("runs", "logs", "latest", "--step", "touch", cwd=ws, env=env).stdout
    for index, hosts in enumerate((("node1", "node2"), ("node3", "node4"), ("node5", "node6")), 1):
        assert f"slice {index} of 3: hosts {', '.join(hosts)}" in log
    assert log.index("slice 1 of 3") < log.index("slice 2 of 3") < log.index("slice 3 of 3")
    assert log.index("=== polycrate: slice 1 of 3 (hosts node1, node2) succeeded ===") < log.index("slice 2 of 3")
    assert "6 hosts in 3 slices" in ran.output


def test_without_a_backend_one_failing_host_fails_the_step_with_every_host_counted(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, fail_host="node4", sleep=0)
    env = no_backend(tmp_path)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=env)
    assert ran.returncode == 1, ran.output
    assert sorted(line[0] for line in _marks(marks)) == HOSTS  # the other slices ran all the same
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws, env=env).stdout)
    touch = _step(shown, "touch")
    assert touch["status"] == "failed"
    assert touch["failed_host"] == "node4"
    assert "slice 2 of 3 (hosts node3, node4) failed" in touch["message"]
    log = run_cli("runs", "logs", "latest", "--step", "touch", cwd=ws, env=env).stdout
    assert "=== polycrate: slice 2 of 3 (hosts node3, node4) failed: " in log, log
    assert touch["hosts"]["node4"]["failed"] == 1 and touch["hosts"]["node4"]["ok"] == 2
    assert all(touch["hosts"][h]["failed"] == 0 and touch["hosts"][h]["ok"] == 3 for h in HOSTS if h != "node4")
    assert _step(shown, "after")["status"] == "skipped"


def test_the_slices_divide_the_hosts_that_remain_after_limit(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, sleep=0)
    ran = run_cli("workflows", "run", "wide", "--limit", "node2,node3,node4,node6", cwd=ws, env=no_backend(tmp_path))
    assert ran.returncode == 0, ran.output
    assert {line[0]: line[1] for line in _marks(marks)} == {
        "node2": "node2,node3", "node3": "node2,node3", "node4": "node4", "node6": "node6"}
    assert "4 hosts in 3 slices" in ran.output


def test_slices_on_a_script_step_is_refused_before_anything_runs(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks)
    ran = run_cli("workflows", "run", "scripted", cwd=ws, env=no_backend(tmp_path))
    assert ran.returncode != 0
    assert "step 's': slices applies to ansible actions" in ran.stderr
    assert "workspace.poly" in ran.stderr and "Traceback" not in ran.output


def test_slices_must_be_a_whole_number_from_1(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, slices=0)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=no_backend(tmp_path))
    assert ran.returncode == 2, ran.output
    assert "workspace.poly" in ran.stderr and "slices" in ran.stderr and "Traceback" not in ran.output
    assert not _marks(marks)


# --- with a backend: real workers ---------------------------------------------------------------------------------


@pytest.fixture
def slicing(team_env, tmp_path) -> Iterator[Callable[..., Any]]:
    from tests.team.harness import Team

    made: list[Team] = []

    def make(**workspace: Any) -> Team:
        marks = tmp_path / "marks"
        marks.mkdir()
        team = Team(_workspace(tmp_path / "ws", marks, **workspace), marks, team_env, tmp_path)
        made.append(team)
        return team

    try:
        yield make
    finally:
        for team in made:
            team.stop_all()


def _wait(what: Callable[[], Any], description: str) -> Any:
    from tests.team.test_workers import wait_for

    return wait_for(what, description, DEADLINE)


def _slices(team: Any, run_id: str) -> list[dict[str, Any]]:
    return team.sql("SELECT * FROM team_slices WHERE run_id = %s ORDER BY idx", run_id)


@pytest.mark.team
def test_three_slices_run_at_once_on_three_workers_every_host_once_and_the_step_combines(slicing):
    team = slicing(sleep=4)
    for name in ("w1", "w2", "w3"):
        team.start_worker(name)
    _wait(lambda: team.sql("SELECT count(*) AS n FROM procrastinate_workers")[0]["n"] >= 6, "three workers up")
    launched = team.cli("workflows", "run", "wide")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    _wait(lambda: any(s["state"] == "running" for s in _slices(team, run_id)), "a slice runs")
    # the workflow's lock stays with the run while its slices run: a second launch is refused
    second = team.cli("workflows", "run", "wide")
    assert second.returncode == 3 and "already running" in second.stderr, second.output
    _wait(lambda: team.sql("SELECT status FROM runs WHERE id = %s AND status <> 'running'", run_id), "the run ends")
    shown = team.show(run_id)
    assert shown["status"] == "succeeded", shown
    parts = _slices(team, run_id)
    assert [(p["idx"], p["hosts"], p["state"], p["outcome"]["status"]) for p in parts] == [
        (1, ["node1", "node2"], "done", "succeeded"), (2, ["node3", "node4"], "done", "succeeded"),
        (3, ["node5", "node6"], "done", "succeeded")]
    # on more than one worker, at once (the recorded start and end times overlap)
    workers = {p["worker"] for p in parts}
    assert len(workers) >= 2 and workers <= {"w1", "w2", "w3"}, workers
    overlapping = [(a["idx"], b["idx"]) for a in parts for b in parts
                   if a["idx"] < b["idx"] and a["worker"] != b["worker"] and a["started"] < b["ended"]
                   and b["started"] < a["ended"]]
    assert overlapping, [(p["worker"], p["started"], p["ended"]) for p in parts]
    print(f"slices: {[(p['idx'], p['worker'], round(p['started'] - parts[0]['started'], 2), round(p['ended'] - parts[0]['started'], 2)) for p in parts]}"
          f" (load {os.getloadavg()[0]:.1f})")
    # every host ran exactly once, each in its own slice's play
    lines = _marks(team.marks)
    assert sorted(line[0] for line in lines) == HOSTS
    assert {line[0]: line[1] for line in lines} == {
        "node1": "node1,node2", "node2": "node1,node2", "node3": "node3,node4", "node4": "node3,node4",
        "node5": "node5,node6", "node6": "node5,node6"}
    touch = _step(shown, "touch")
    assert touch["status"] == "succeeded" and sorted(touch["hosts"]) == HOSTS
    assert all(c["ok"] == 3 and c["changed"] == 3 and c["failed"] == 0 for c in touch["hosts"].values())
    assert _step(shown, "after")["status"] == "succeeded"
    log = team.cli("runs", "logs", run_id, "--step", "touch").stdout
    for part in parts:
        assert f"slice {part['idx']} of 3: hosts {', '.join(part['hosts'])} (worker {part['worker']} on " in log
    assert log.count("PLAY RECAP") == 3


@pytest.mark.team
def test_one_failing_host_fails_the_sliced_step_with_the_right_counts(slicing):
    team = slicing(fail_host="node5", sleep=0)
    for name in ("w1", "w2"):
        team.start_worker(name)
    waited = team.cli("workflows", "run", "wide", "--wait")
    assert waited.returncode == 1, waited.output
    run_id = waited.stdout.splitlines()[0]
    shown = team.show(run_id)
    assert shown["status"] == "failed"
    touch = _step(shown, "touch")
    assert touch["status"] == "failed" and touch["failed_host"] == "node5"
    assert touch["message"].startswith("slice 3 of 3 (hosts node5, node6) failed"), touch["message"]
    assert touch["hosts"]["node5"] == {**touch["hosts"]["node5"], "ok": 2, "failed": 1}
    assert all(touch["hosts"][h]["ok"] == 3 and touch["hosts"][h]["failed"] == 0 for h in HOSTS if h != "node5")
    assert sorted(line[0] for line in _marks(team.marks)) == HOSTS
    assert _step(shown, "after")["status"] == "skipped"
    assert [p["outcome"]["status"] for p in _slices(team, run_id)] == ["succeeded", "succeeded", "failed"]


@pytest.mark.team
def test_stopping_a_sliced_run_stops_its_slices(slicing):
    team = slicing(gate=True)
    for name in ("w1", "w2"):
        team.start_worker(name)
    launched = team.cli("workflows", "run", "wide")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    _wait(lambda: len(_marks(team.marks)) >= 2, "a slice's hosts started")
    stopped = team.cli("runs", "stop", run_id)
    assert stopped.returncode == 0, stopped.output
    _wait(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s AND status = 'interrupted'", run_id), "interrupted")
    touch = _step(team.show(run_id), "touch")
    assert touch["status"] == "interrupted"
    parts = _slices(team, run_id)
    assert all(p["state"] == "done" and p["outcome"]["status"] == "interrupted" for p in parts), parts
    assert any(p["outcome"]["message"] == "interrupted: its run was stopped" for p in parts), parts
    # no slice's own process is left (a local-connection host's module process runs in a session of its own,
    # which the engine's stop of a step does not reach: the gate lets it end)
    batch = parts[0]["batch"]
    (team.marks / "release").write_text("")
    _wait(lambda: not subprocess.run(["pgrep", "-f", f"worker slice {batch}"], capture_output=True).stdout,
          "no slice's process is left")


@pytest.mark.team
def test_a_slice_whose_worker_is_killed_is_lost_and_fails_the_step(slicing):
    team = slicing(gate=True, slices=2)
    team.start_worker("w1")
    launched = team.cli("workflows", "run", "wide")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    # w1 runs the run and one slice (its one slice slot); the other slice waits for a worker
    _wait(lambda: [p for p in _slices(team, run_id) if p["state"] == "running"], "a slice runs on w1")
    doomed = team.start_worker("doomed")
    _wait(lambda: len(_marks(team.marks)) == 6, "both slices' hosts started")
    parts = _slices(team, run_id)
    assert sorted(p["worker"] for p in parts) == ["doomed", "w1"], parts
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    lost = next(p for p in parts if p["worker"] == "doomed")
    _wait(lambda: _slices(team, run_id)[lost["idx"] - 1]["state"] == "lost", "the doomed worker's slice is lost")
    (team.marks / "release").write_text("")  # the other slice (and the orphaned play of the lost one) may end
    _wait(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s AND status <> 'running'", run_id), "the run ends")
    shown = team.show(run_id)
    assert shown["status"] == "failed"
    touch = _step(shown, "touch")
    hosts = ", ".join(lost["hosts"])
    assert touch["status"] == "failed"
    assert f"slice {lost['idx']} of 2 (hosts {hosts}) failed: lost: worker doomed on " in touch["message"]
    kept = next(p for p in parts if p["worker"] == "w1")
    assert sorted(touch["hosts"]) == sorted(kept["hosts"])  # the lost slice's hosts have no counts: not known
    log = team.cli("runs", "logs", run_id, "--step", "touch").stdout
    assert f"slice {lost['idx']} of 2: hosts {hosts} (worker doomed on " in log and "stopped heartbeating" in log


def _parts_of_log(log: str) -> dict[int, list[str]]:
    """The step's log's lines by the part whose heading they are under (a line before any heading: part 0)."""
    import re

    by: dict[int, list[str]] = {}
    current = 0
    for line in log.splitlines():
        found = re.match(r"=== polycrate: slice (\d+) of \d+", line)
        if found:
            current = int(found.group(1))
            continue
        by.setdefault(current, []).append(line)
    return by


@pytest.mark.team
def test_a_sliced_step_s_log_is_live_per_part_and_worker_list_shows_each_worker_once_with_its_parts(slicing):
    from polycrate import ansi

    team = slicing(live=True)
    for name in ("w1", "w2", "w3"):
        team.start_worker(name)
    launched = team.cli("workflows", "run", "wide")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    _wait(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s", run_id), "the run's record opened")
    followed = team.tmp / "follow.out"
    with open(followed, "wb") as out:  # another process, reading the backend only, as from another host
        follow = subprocess.Popen([sys.executable, "-m", "polycrate", "runs", "logs", run_id, "--follow"],
                                  cwd=team.ws, env=os.environ | team.env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        # every part's first lines reach the follower while every part still waits for the marker
        _wait(lambda: all(f"first-{h}" in followed.read_text(errors="replace") for h in HOSTS),
              "the first line of every host in `runs logs --follow`")
        assert not (team.marks / "release").exists()
        live = followed.read_text(errors="replace")
        parts = _slices(team, run_id)
        assert [p["state"] for p in parts] == ["running"] * 3, parts  # none ended: the lines came live
        assert SECRET not in live and "password: ********" in live
        for part in parts:
            assert f"=== polycrate: slice {part['idx']} of 3: hosts {', '.join(part['hosts'])} (worker " \
                   f"{part['worker']} on " in live
        assert sorted(p["worker"] for p in parts) == ["w1", "w2", "w3"], parts

        # worker list: each real worker once (no row of its slice slots), its queues, heartbeat, runs and parts
        listed = team.cli("worker", "list", "-o", "json")
        assert listed.returncode == 0, listed.output
        workers = json.loads(listed.stdout)["workers"]
        assert sorted(w["name"] for w in workers) == ["w1", "w2", "w3"], workers
        runner = team.sql("SELECT worker FROM team_runs WHERE id = %s", run_id)[0]["worker"]
        for w in workers:
            assert w["queues"] == ["default"] and w["slice_queues"] == ["default.slices"], w
            assert w["state"] == "alive" and w["last_heartbeat"] is not None, w
            assert w["runs"] == ([{"workspace": "slicews", "run_id": run_id, "workflow": "wide"}]
                                 if w["name"] == runner else []), w
            mine = [p for p in parts if p["worker"] == w["name"]]
            assert w["parts"] == [{"workspace": "slicews", "run_id": run_id, "workflow": "wide", "step": "touch",
                                   "slice": p["idx"], "slices": 3, "hosts": p["hosts"]} for p in mine], w
        table = team.cli("worker", "list")
        assert table.returncode == 0 and "SLICES" in table.stdout, table.output
        rows = [line.split() for line in table.stdout.splitlines()[1:] if line.strip()]
        assert sorted(row[0] for row in rows) == ["w1", "w2", "w3"] and "/slices" not in table.stdout, table.stdout
        for part in parts:
            assert f"{run_id} touch {part['idx']}/3" in table.stdout
    finally:
        (team.marks / "release").write_text("")
    try:
        assert follow.wait(timeout=DEADLINE) == 0, followed.read_text(errors="replace")
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    shown = team.show(run_id)
    assert shown["status"] == "succeeded", shown
    final = team.cli("runs", "logs", run_id, "--step", "touch").stdout
    everything = followed.read_text(errors="replace")
    for host in HOSTS:  # each line once, in the live view and in the record
        for text in (final, everything):
            assert sum(f'"msg": "first-{host} ' in line for line in text.splitlines()) == 1, text
            assert sum(f'"msg": "second-{host}"' in line for line in text.splitlines()) == 1, text
    assert SECRET not in final + everything
    # each part's lines under its own headings, all of them, in its order: what the part wrote, no more
    by_part = _parts_of_log(final)
    for part in _slices(team, run_id):
        said = by_part[part["idx"]]
        assert said == ansi.strip(part["log"]).splitlines(), (part["idx"], said, part["log"])
        assert f"=== polycrate: slice {part['idx']} of 3 (hosts {', '.join(part['hosts'])}) succeeded ===" in final
        assert all(f"-{h}" not in line for line in by_part[part["idx"]] for h in HOSTS if h not in part["hosts"])
    assert final.count("PLAY RECAP") == 3


@pytest.mark.team
def test_a_slice_whose_worker_alone_is_sigkilled_is_lost_its_job_finished_and_never_run_again(slicing):
    team = slicing(gate=True, slices=2)
    team.start_worker("w1")
    launched = team.cli("workflows", "run", "wide")
    assert launched.returncode == 0, launched.output
    run_id = launched.stdout.strip().splitlines()[-1]
    _wait(lambda: [p for p in _slices(team, run_id) if p["state"] == "running"], "a slice runs on w1")
    doomed = team.start_worker("doomed")
    _wait(lambda: len(_marks(team.marks)) == 6, "both slices' hosts started")
    lost = next(p for p in _slices(team, run_id) if p["worker"] == "doomed")
    # the worker process alone: its part's process is left behind, an orphan that must stop and say so
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    team.start_worker("w3")  # a fresh worker with free slice slots: it must never take the lost part again
    _wait(lambda: _slices(team, run_id)[lost["idx"] - 1]["state"] == "lost", "the doomed worker's slice is lost")
    _wait(lambda: team.sql("SELECT status FROM procrastinate_jobs WHERE id = %s", lost["job_id"])[0]["status"]
          == "failed", "the lost part's job is finished as failed (not 'doing', not retried)")
    # the gate lets the orphaned play's module process (a session of its own on the local connection) end too
    (team.marks / "release").write_text("")
    _wait(lambda: not subprocess.run(["pgrep", "-f", f"worker slice {lost['batch']} {lost['idx']} "],
                                     capture_output=True).stdout, "the orphaned part's process ended")
    _wait(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s AND status <> 'running'", run_id), "the run ends")
    shown = team.show(run_id)
    assert shown["status"] == "failed"
    touch = _step(shown, "touch")
    hosts = ", ".join(lost["hosts"])
    assert touch["status"] == "failed"
    assert f"slice {lost['idx']} of 2 (hosts {hosts}) failed: lost: worker doomed on " in touch["message"], touch
    part = _slices(team, run_id)[lost["idx"] - 1]
    assert part["state"] == "lost" and part["outcome"]["status"] == "failed" and part["worker"] == "doomed", part
    # no second copy: one job for the part, finished; each of its hosts started once; taken by nobody else
    jobs = team.sql("SELECT id, status FROM procrastinate_jobs WHERE args->>'batch' = %s AND (args->>'index')::int = %s",
                    lost["batch"], lost["idx"])
    assert jobs == [{"id": lost["job_id"], "status": "failed"}], jobs
    assert sorted(line[0] for line in _marks(team.marks)) == HOSTS
    started = f"slice {lost['idx']} of {lost['batch'][:8]} started"
    assert started not in team.worker_log("w1") + team.worker_log("w3")
    log = team.cli("runs", "logs", run_id, "--step", "touch").stdout
    assert f"slice {lost['idx']} of 2: hosts {hosts} (worker doomed on " in log
    assert f"=== polycrate: slice {lost['idx']} of 2 (hosts {hosts}) failed: lost: worker doomed on " in log, log
    assert team.sql("SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'doing'")[0]["n"] == 0


@pytest.mark.team
def test_reap_finishes_a_stalled_slice_job_once_and_loses_its_part(team_dsn):
    """worker.reap on its own (the run's process gone too): a part taken by a worker that stopped heartbeating
    is lost and its job finished as failed, once; a part of a live worker and an ended part's outcome stay."""
    from polycrate.history.postgres import connect
    from polycrate.team.slices import SLICE_TASK, slice_queue
    from polycrate.team.worker import reap

    db = connect(team_dsn)
    try:
        dead = db.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (NOW() - INTERVAL '1 hour')"
                          " RETURNING id").fetchone()["id"]
        alive = db.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()["id"]
        jobs = {}
        for index, (worker, state) in enumerate([(dead, "running"), (alive, "running"), (dead, "done")], 1):
            jobs[index] = db.execute(
                "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, NULL, %s::jsonb, NULL)"
                "::procrastinate_job_to_defer_v1])) AS id",
                (slice_queue("default"), SLICE_TASK, json.dumps({"batch": "b1", "index": index}))).fetchone()["id"]
            db.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
                       (worker, jobs[index]))
            db.execute("INSERT INTO team_slices (batch, idx, total, workspace, run_id, step, phase, hosts, state, job_id,"
                       " worker, worker_host, worker_id, outcome) VALUES ('b1', %s, 3, 'ws', 'r1', 'touch', 'main',"
                       " %s, %s, %s, %s, 'h1', %s, %s::jsonb)",
                       (index, [f"node{index}"], state, jobs[index], f"w{index}", worker,
                        json.dumps({"status": "succeeded", "counts": {}}) if state == "done" else None))
    finally:
        db.close()
    said = reap(team_dsn, 4.0)
    assert len(said) == 2 and "slice 1 of 3 (hosts node1) of run r1: lost; its job" in said[0], said
    again = reap(team_dsn, 4.0)
    assert again == [], again  # once: the jobs are finished
    db = connect(team_dsn)
    try:
        status = {r["id"]: r["status"] for r in db.execute("SELECT id, status FROM procrastinate_jobs").fetchall()}
        parts = {r["idx"]: r for r in db.execute("SELECT * FROM team_slices").fetchall()}
    finally:
        db.close()
    assert status == {jobs[1]: "failed", jobs[2]: "doing", jobs[3]: "failed"}, status
    assert parts[1]["state"] == "lost" and parts[1]["outcome"]["status"] == "failed"
    assert parts[1]["outcome"]["message"].startswith("lost: worker w1 on h1 stopped heartbeating (none for 4s)")
    assert parts[2]["state"] == "running" and parts[2]["outcome"] is None
    assert parts[3]["state"] == "done" and parts[3]["outcome"]["status"] == "succeeded"


@pytest.mark.team
def test_worker_list_shows_a_worker_that_started_over_once_with_its_parts_from_its_slice_slots(team_dsn):
    """A worker that started over after an outage registered again (new procrastinate ids): one row, its
    newest; a part is listed on the worker whose slice slots (its second procrastinate worker) run it."""
    import time

    from polycrate.history.postgres import connect
    from polycrate.team.worker import workers

    db = connect(team_dsn)
    try:
        ids = [db.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()["id"]
               for _ in range(4)]
        now = time.time()
        for (main, slicer), started in (((ids[0], ids[1]), now - 60), ((ids[2], ids[3]), now - 5)):
            db.execute("INSERT INTO team_workers (worker_id, name, host, pid, queues, concurrency, started,"
                       " last_heartbeat, slice_worker_id) VALUES (%s, 'w1', 'h1', 4242, %s, 1, %s, %s, %s)",
                       (main, ["default"], started, started, slicer))
        db.execute("INSERT INTO team_slices (batch, idx, total, workspace, run_id, step, phase, hosts, state, worker,"
                   " worker_id) VALUES ('b1', 2, 3, 'ws', 'r1', 'touch', 'main', %s, 'running', 'w1', %s)",
                   (["node3", "node4"], ids[3]))
    finally:
        db.close()
    listed = workers(team_dsn)
    assert [(w["name"], w["started"]) for w in listed] == [("w1", now - 5)], listed
    assert listed[0]["slice_queues"] == ["default.slices"] and listed[0]["runs"] == []
    assert listed[0]["parts"] == [{"workspace": "ws", "run_id": "r1", "workflow": None, "step": "touch", "slice": 2,
                                   "slices": 3, "hosts": ["node3", "node4"]}], listed


@pytest.mark.team
def test_reap_records_a_run_whose_worker_died_before_starting_it(team_dsn):
    """A run taken by a worker that died before it claimed it (seen once in the 200-slot schedule test, a worker
    killed half-way): team_runs said lost, but the history had no record of it at all, so `runs list`, the web
    view and the schedule's slot named a run that did not exist. Now it is recorded as a lost run that never
    started, with the reason, launched by whoever launched it."""
    from polycrate.history.postgres import PostgresRunStore, connect
    from polycrate.team.launch import TASK
    from polycrate.team.worker import reap

    db = connect(team_dsn)
    try:
        dead = db.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (NOW() - INTERVAL '1 hour')"
                          " RETURNING id").fetchone()["id"]
        job = db.execute("SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW('default', %s, 0, NULL, NULL, %s::jsonb,"
                         " NULL)::procrastinate_job_to_defer_v1])) AS id",
                         (TASK, json.dumps({"run_id": "r9", "workspace": "ws"}))).fetchone()["id"]
        db.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s", (dead, job))
        db.execute("INSERT INTO team_runs (workspace, id, workflow, queue, root, git_commit, launched_by, launched,"
                   " job_id, state) VALUES ('ws', 'r9', 'nightly', 'default', '/nowhere', 'abc', "
                   "'schedule (applied by ann)', %s, %s, 'queued')", (time.time() - 60, job))
    finally:
        db.close()
    said = reap(team_dsn, 4.0)
    assert said[0] == ("run r9 of workflow 'nightly' lost: its worker took it and stopped heartbeating before starting "
                       "it; it is not run again by itself"), said
    assert reap(team_dsn, 4.0) == []  # once
    store = PostgresRunStore(team_dsn, workspace="ws")
    try:
        run = store.get_run("r9")
    finally:
        store.close()
    assert (run.status, run.user, run.steps) == ("lost", "schedule (applied by ann)", ())
    assert run.never_started and run.message.startswith("lost: its worker took it")
