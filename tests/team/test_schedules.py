"""Team mode's schedules through the real CLI: `schedules apply` writes them to a real PostgreSQL, real
`polycrate worker` processes fire them, the slots and runs are read back from the backend.

No timed assertions: every wait polls for a state with a generous deadline; times are measured and printed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.team.harness import Team
from tests.helpers import wait_for as shared_wait_for

pytestmark = pytest.mark.team

DEADLINE = 240.0  # seconds a poll waits before the test fails (a busy machine, never a timed assertion)
SLOTS = 200  # slots of the 1-second schedule (four workflows, each every 4 s, one second apart)
TICKS = 4


def _commit(root: Path, message: str) -> None:
    for argv in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m",
                                 message]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)


def _workspace(root: Path, marks: Path, workflows: str) -> Path:
    write(root / "workspace.poly", f"""
        name: schedws
        blocks:
          - name: b
        workflows:
        {workflows}
        """)
    write(root / "blocks/b/block.poly", f"""
        name: b
        actions:
          - name: mark
            script:
              - echo "$POLYCRATE_WORKFLOW $$ $(date +%s.%N)" >> {marks}/fired
        """)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    write(root / ".gitignore", ".polycrate/\n")
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _commit(root, "workspace")
    return root


def _scheduled(name: str, schedule: str) -> str:
    return (f"\n          - name: {name}\n            steps:\n              - {{name: mark, block: b, action: mark}}\n"
            f"            schedule: {schedule}")


@pytest.fixture
def team(team_env, tmp_path) -> Iterator[Team]:
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "ws").mkdir()
    team = Team(tmp_path / "ws", marks, team_env, tmp_path)
    try:
        yield team
    finally:
        team.stop_all()


def wait_for(what: Callable[[], Any], description: str, deadline: float = DEADLINE) -> Any:
    return shared_wait_for(what, description, deadline)  # this file's longer deadline


def test_200_slots_with_three_workers_one_killed_half_way_fire_exactly_once(team):
    flows = "".join(_scheduled(f"tick{k}", f'"*-*-* *:*:{k:02d}/{TICKS}"') for k in range(TICKS))
    _workspace(team.ws, team.marks, flows)
    for name in ("w1", "w2", "w3"):  # alive before the first slot: no slot is missed, each one fires
        team.start_worker(name, "--concurrency", "2")
    wait_for(lambda: len(team.sql("SELECT 1 FROM team_workers")) == 3, "the three workers registered")
    applied = team.cli("schedules", "apply")
    assert applied.returncode == 0, applied.output
    assert "written to the backend" in applied.stdout and "no systemd units or cron lines" in applied.stdout
    listed = team.cli("schedules", "list", "-o", "json")
    assert listed.returncode == 0, listed.output
    rows = json.loads(listed.stdout)["schedules"]
    assert [(r["workflow"], r["kind"], r["missed"]) for r in rows] == [
        (f"tick{k}", "on_calendar", "run-once") for k in range(TICKS)]
    since = min(r["applied"] for r in team.sql("SELECT applied FROM team_schedules"))
    first = int(since) + 1  # slot times are whole seconds: every second after the apply is one workflow's slot
    last = first + SLOTS - 1

    def handled(up_to: float) -> int:
        return int(team.sql("SELECT count(*) AS n FROM team_schedule_slots WHERE slot >= %s AND slot <= %s",
                            first, up_to)[0]["n"])

    wait_for(lambda: handled(last) >= SLOTS // 2, "half of the slots were handled")
    killed_at = time.time()
    team.workers["w2"].send_signal(signal.SIGKILL)  # the worker only: its runs' processes stop themselves
    team.workers["w2"].wait()
    wait_for(lambda: handled(last) == SLOTS, f"all {SLOTS} slots were handled", deadline=SLOTS + DEADLINE)
    # the window's runs end at the commit they were launched at (a later commit of this folder is refused there)
    wait_for(lambda: not team.sql("SELECT t.id FROM team_runs t JOIN team_schedule_slots s ON s.run_id = t.id"
                                  " WHERE s.slot <= %s AND t.state IN ('queued', 'running')", last),
             "the runs of the window's slots ended")

    # no more slots: the workspace without schedules, applied while the workers run (picked up without a restart)
    _workspace(team.ws, team.marks, "".join(
        f"\n          - name: tick{k}\n            steps:\n              - {{name: mark, block: b, action: mark}}"
        for k in range(TICKS)))
    removed = team.cli("schedules", "apply")
    assert removed.returncode == 0 and removed.stdout.count("removed") == TICKS, removed.output
    assert team.sql("SELECT count(*) AS n FROM team_schedules")[0]["n"] == 0
    wait_for(lambda: not team.sql("SELECT id FROM team_runs WHERE state IN ('queued', 'running')"),
             "every launched run ended")

    slots = team.sql("SELECT * FROM team_schedule_slots WHERE slot >= %s AND slot <= %s ORDER BY slot", first, last)
    # every slot once: each second of the window is exactly one slot of the workflow whose turn it is
    assert [(int(s["slot"]), s["workflow"]) for s in slots] == [
        (t, f"tick{int(time.gmtime(t).tm_sec) % TICKS}") for t in range(first, last + 1)]
    launched = [s for s in slots if s["outcome"] == "launched"]
    refused = [s for s in slots if s["outcome"] == "refused"]
    assert len(launched) + len(refused) == SLOTS and launched
    for s in refused:  # never silently: the slot names the run that held its workflow
        assert "already" in s["reason"] and s["workflow"] in s["reason"], s
    # each launched slot is one run in the backend, and no run of these workflows came from anywhere else
    runs = {r["team_id"]: r for r in team.sql("SELECT r.*, t.id AS team_id, t.state AS team_state FROM team_runs t"
                                              " LEFT JOIN runs r ON r.workspace = t.workspace AND r.id = t.id"
                                              " WHERE t.workspace = 'schedws'")}
    mine = [s["run_id"] for s in launched]
    assert len(set(mine)) == len(mine) and set(mine) <= set(runs)
    late = [r for r in runs if r not in mine]
    assert all(team.sql("SELECT slot FROM team_schedule_slots WHERE run_id = %s AND slot > %s", r, last) for r in late)
    for run_id in mine:
        assert runs[run_id]["user"].startswith("schedule (applied by "), runs[run_id]
    # the action's marker: one line per run that ran its step, never two for one run
    lines = [line.split() for line in (team.marks / "fired").read_text().splitlines()]
    succeeded = [r for r in mine if runs[r]["status"] == "succeeded"]
    stamps: dict[str, list[float]] = {}
    for workflow, _pid, stamp in lines:
        stamps.setdefault(workflow, []).append(float(stamp))
    for run_id in succeeded:
        row = runs[run_id]
        inside = [t for t in stamps.get(row["workflow"], []) if row["started"] <= t <= row["ended"]]
        assert len(inside) == 1, (run_id, inside)
    assert len(lines) <= len(runs), "an action ran more often than runs were launched"
    statuses: dict[str, int] = {}
    for run_id in mine:
        statuses[str(runs[run_id]["status"])] = statuses.get(str(runs[run_id]["status"]), 0) + 1
    by_worker: dict[str, int] = {}
    for s in slots:
        by_worker[s["worker"]] = by_worker.get(s["worker"], 0) + 1
    assert set(by_worker) <= {"w1", "w2", "w3"} and len(by_worker) >= 2
    for run_id in mine:  # a run that did not succeed says why (e.g. its worker was the killed one)
        if runs[run_id]["status"] != "succeeded":
            print(f"run {run_id}: {runs[run_id]['status']}: {runs[run_id]['message']}")
    print(f"{SLOTS} slots: {len(launched)} launched, {len(refused)} refused (their workflow still ran); runs {statuses};"
          f" slots handled per worker {by_worker} (w2 killed {killed_at - first:.0f} s in); {len(lines)} marker lines; "
          f"load {os.getloadavg()[0]:.1f}")


def test_missed_slots_follow_their_policy_run_once_or_skip_and_the_late_run_says_why(team):
    flows = (_scheduled("once", '"*-*-* *:*:00/2"') + _scheduled("skipper", "{on_calendar: '*-*-* *:*:01/2', missed: skip}"))
    _workspace(team.ws, team.marks, flows)
    applied = team.cli("schedules", "apply")
    assert applied.returncode == 0, applied.output
    team.start_worker("w1")
    wait_for(lambda: len(team.sql("SELECT DISTINCT workflow FROM team_schedule_slots WHERE outcome = 'launched'")) == 2,
             "both schedules launched a run")
    team.stop("w1")  # SIGTERM: the worker ends (its runs first) and says when
    lives = team.sql("SELECT stopped FROM team_workers WHERE name = 'w1'")
    assert lives and all(life["stopped"] is not None for life in lives), team.worker_log("w1")
    stopped = max(life["stopped"] for life in lives)
    for row in team.sql("SELECT id FROM team_runs WHERE state = 'queued'"):  # launched just before the stop
        assert team.cli("runs", "stop", row["id"]).returncode == 0
    time.sleep(7)  # slots pass while no worker is alive
    team.start_worker("w2")
    back = wait_for(lambda: team.sql("SELECT started FROM team_workers WHERE name = 'w2'"), "w2 registered")[0]["started"]
    wait_for(lambda: len(team.sql("SELECT DISTINCT workflow FROM team_schedule_slots WHERE slot > %s", back)) == 2,
             "both schedules fire again after the worker came back")

    def missed(workflow: str) -> list[dict[str, Any]]:
        return team.sql("SELECT * FROM team_schedule_slots WHERE workflow = %s AND slot > %s AND slot < %s",
                        workflow, stopped, back)

    once = missed("once")
    assert len(once) == 1 and once[0]["outcome"] == "launched", once  # the latest missed slot, once
    assert "passed while no worker was alive" in once[0]["reason"] and "missed: run-once" in once[0]["reason"]
    skipped = missed("skipper")
    assert len(skipped) == 1 and skipped[0]["outcome"] == "skipped" and skipped[0]["run_id"] is None, skipped
    assert "passed while no worker was alive" in skipped[0]["reason"] and "missed: skip" in skipped[0]["reason"]

    run_id = once[0]["run_id"]
    wait_for(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s AND status <> 'running'", run_id), "the late run ended")
    shown = team.cli("runs", "show", run_id, "-o", "json")
    assert shown.returncode == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["late_by"] is not None and data["late_by"] > 0 and data["status"] == "succeeded"
    assert "passed while no worker was alive" in data["late_reason"]
    text = team.cli("runs", "show", run_id)
    assert "late:" in text.stdout and "missed: run-once" in text.stdout, text.output
    on_time = team.sql("SELECT run_id FROM team_schedule_slots WHERE workflow = 'once' AND slot > %s AND outcome ="
                       " 'launched' LIMIT 1", back)
    if on_time and team.sql("SELECT 1 FROM runs WHERE id = %s", on_time[0]["run_id"]):  # fired by a live worker: not late
        assert json.loads(team.cli("runs", "show", on_time[0]["run_id"], "-o", "json").stdout)["late_by"] is None
    print(f"down {back - stopped:.1f} s; run-once launched {once[0]['late_by']:.1f} s late: {once[0]['reason']}; "
          f"skip: {skipped[0]['reason']} (load {os.getloadavg()[0]:.1f})")


def test_a_changed_set_is_picked_up_by_a_running_worker_and_listed_from_the_backend(team):
    _workspace(team.ws, team.marks, "\n          - name: quiet\n            steps:\n"
                                    "              - {name: mark, block: b, action: mark}")
    team.start_worker("w1")
    wait_for(lambda: "polycrate worker: w1: queues default" in team.worker_log("w1"), "the worker started")
    empty = team.cli("schedules", "list")
    assert empty.returncode == 0 and "no schedules in the backend" in empty.stdout, empty.output
    _workspace(team.ws, team.marks, _scheduled("quiet", "{on_calendar: '*-*-* *:*:*', max_delay: 10m}"))
    planned = team.cli("schedules", "plan")
    assert planned.returncode == 0 and "would create" in planned.stdout, planned.output
    assert team.sql("SELECT count(*) AS n FROM team_schedules")[0]["n"] == 0  # plan writes nothing
    applied = team.cli("schedules", "apply", "-o", "json")
    assert applied.returncode == 0, applied.output
    doc = json.loads(applied.stdout)
    assert [(s["workflow"], s["status"], s["max_delay"]) for s in doc["schedules"]] == [("quiet", "created", 600)]
    run = wait_for(lambda: team.sql("SELECT run_id FROM team_schedule_slots WHERE outcome = 'launched'"),
                   "the running worker fired the new schedule")[0]["run_id"]
    wait_for(lambda: team.sql("SELECT 1 FROM runs WHERE id = %s AND status = 'succeeded'", run), "its run succeeded")
    listed = team.cli("schedules", "list")
    assert listed.returncode == 0 and "schedws" in listed.stdout and "quiet" in listed.stdout, listed.output
    again = team.cli("schedules", "apply")
    assert again.returncode == 0 and "unchanged" in again.stdout, again.output
    refused = team.cli("schedules", "apply", "--cron")
    assert refused.returncode == 2 and "--dest and --cron do not apply" in refused.stderr, refused.output
    assert not (team.tmp / "etc").exists()


def test_apply_says_when_no_alive_worker_serves_a_schedule_s_queue(team):
    """The workers fire a team schedule's slots: with none alive on its queue (a typo in `queue:`, the workers
    down) nothing happens at its time, so plan and apply say so (before: only "created")."""
    _workspace(team.ws, team.marks, _scheduled("quiet", '"*-*-* 02:00:00"')
               + _scheduled("dmz", '"*-*-* 03:00:00"') + "\n            queue: dmz")
    alone = team.cli("schedules", "plan")
    assert alone.returncode == 0, alone.output
    assert ("note: quiet: no worker is alive: nothing fires its slots until one is (a slot missed meanwhile follows "
            "'missed: run-once'; start one: polycrate worker --queue default)") in alone.stdout, alone.output
    team.start_worker("w1")

    def alive() -> bool:
        listed = json.loads(team.cli("worker", "list", "-o", "json").stdout)["workers"]
        return any(w["name"] == "w1" and w["state"] == "alive" for w in listed)

    wait_for(alive, "worker list shows w1 alive")
    applied = team.cli("schedules", "apply", "-o", "json")
    assert applied.returncode == 0, applied.output
    assert json.loads(applied.stdout)["notes"] == [
        "dmz: no alive worker serves queue 'dmz' (alive workers serve: default): its runs are launched on time and "
        "wait until one does (polycrate worker --queue dmz)"]


def test_apply_with_a_backend_refuses_a_dirty_workspace_and_changes_nothing(team):
    _workspace(team.ws, team.marks, _scheduled("quiet", '"*-*-* 02:00:00"'))
    (team.ws / "inventory.yml").write_text("all: {}\n")
    refused = team.cli("schedules", "apply")
    assert refused.returncode == 2 and "uncommitted changes" in refused.stderr, refused.output
    assert team.sql("SELECT count(*) AS n FROM team_schedules")[0]["n"] == 0
    one_off = team.cli("workflows", "schedule", "quiet", "--on-calendar", "daily", "--dest", str(team.tmp / "units"))
    assert one_off.returncode == 2 and "declare the schedule in workspace.poly" in one_off.stderr, one_off.output
    assert not (team.tmp / "units").exists()


def test_slot_times_come_in_order_and_a_long_backlog_is_summed_up_by_its_latest_slot():
    from polycrate.team.scheduler import Slots

    base = 1_800_000_000.0  # a whole minute (UTC)
    slots = Slots("on_calendar", "*-*-* *:*:00/4", "UTC")
    due, more = slots.due(base, base + 10)
    assert (due, more) == ([base + 4, base + 8], False)
    due, more = slots.due(base + 8, base + 8.5)
    assert (due, more) == ([], False)
    due, more = slots.due(base, base + 4 * 50, limit=10)  # a backlog longer than the limit
    assert due == [base + 4 * k for k in range(1, 11)] and more
    assert slots.latest(base + 4 * 50 + 3) == base + 200
    daily = Slots("cron", "0 2 * * *", "UTC")
    assert daily.latest(base + 86400 * 3) is not None and daily.latest(base + 86400 * 3) % 86400 == 7200


def _scheduler_row(team_dsn: str, workflow: str, expression: str, applied: float, missed: str,
                   max_delay: float | None) -> None:
    from polycrate.team.scheduler import TeamSchedule, apply_schedules

    apply_schedules(team_dsn, "direct", [TeamSchedule(
        workspace="direct", workflow=workflow, kind="on_calendar", expression=expression, zone="UTC", missed=missed,
        max_delay=max_delay, queue="nowhere", root="/nonexistent", git_commit="0" * 40, remote=None, subdir="", prompts=None,
        applied=applied,
        applied_by="tester")])


def test_a_missed_slot_older_than_max_delay_is_skipped_and_a_newer_one_runs_once(team_dsn):
    from polycrate.history.postgres import connect
    from polycrate.team.scheduler import Scheduler

    now = time.time()
    past = time.gmtime(now - 3600)  # one slot, an hour ago: no worker was alive then (none ever registered)
    expression = time.strftime("%Y-%m-%d %H:%M:%S", past)
    _scheduler_row(team_dsn, "old", expression, now - 7200, "run-once", 600.0)
    scheduler = Scheduler(team_dsn, "direct-test", None, started=now)
    said = scheduler.tick()
    db = connect(team_dsn)
    try:
        rows = db.execute("SELECT * FROM team_schedule_slots WHERE workspace = 'direct'").fetchall()
        assert [(r["workflow"], r["outcome"], r["run_id"]) for r in rows] == [("old", "skipped", None)]
        assert "more than max_delay 600s" in rows[0]["reason"] and any("max_delay" in line for line in said)
        _scheduler_row(team_dsn, "old", expression, now - 7200, "run-once", None)  # however old: it runs once
        db.execute("DELETE FROM team_schedule_slots")
        scheduler.tick()
        scheduler.tick()  # the slot is handled: a second tick (or worker) does nothing
        rows = db.execute("SELECT * FROM team_schedule_slots").fetchall()
        assert [(r["outcome"], r["late_by"] > 3500) for r in rows] == [("launched", True)]
        queued = db.execute("SELECT * FROM team_runs WHERE id = %s", (rows[0]["run_id"],)).fetchall()
        assert [(q["workflow"], q["queue"], q["state"], q["launched_by"]) for q in queued] == [
            ("old", "nowhere", "queued", "schedule (applied by tester)")]
    finally:
        db.close()
        scheduler.close()
