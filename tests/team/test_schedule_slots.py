"""Team-mode schedules and what a worker cannot do alone (issue #25): a workflow that prompts or needs a launch
value is refused at `schedules apply` (one line naming the file and line); a slot of one that still comes (its
row applied before that rule) records a failed run saying why, once per slot, across workers; the slot rows are
pruned (the last N per schedule, or those newer than a retention) without a pruned slot ever firing again.

Real PostgreSQL, real `polycrate schedules apply` and `polycrate worker` processes; the prune's race is played by
three schedulers in threads of this process, each pruning after every tick. No timed assertions."""
from __future__ import annotations

import re
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write
from tests.team.harness import Team
from tests.helpers import wait_for

pytestmark = pytest.mark.team



@pytest.fixture
def team(team_env, tmp_path) -> Iterator[Team]:
    (tmp_path / "ws").mkdir()
    (tmp_path / "marks").mkdir()
    team = Team(tmp_path / "ws", tmp_path / "marks", team_env, tmp_path)
    try:
        yield team
    finally:
        team.stop_all()


def _commit(root: Path) -> None:
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for argv in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "ws"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)


def _workspace(root: Path, workflow: str, action_prompt: bool = False) -> None:
    """workflow: more entries under `workflows:`, written at the left margin (indented here)."""
    extra = textwrap.indent(textwrap.dedent(workflow).strip("\n"), "  ") + "\n" if workflow.strip() else ""
    (root / "workspace.poly").write_text(
        "name: slotws\nblocks:\n  - name: b\nworkflows:\n  - name: fine\n    schedule: \"*-*-* 04:00:00\"\n"
        "    steps:\n      - {name: one, block: b, action: plain}\n" + extra)
    prompt = "    prompt: {message: 'really?'}\n" if action_prompt else ""
    (root / "blocks/b").mkdir(parents=True, exist_ok=True)
    (root / "blocks/b/block.poly").write_text('name: b\nactions:\n  - name: plain\n    script: ["true"]\n'
                                              '  - name: asks\n    script: ["true"]\n' + prompt)
    write(root / ".gitignore", ".polycrate/\n")
    _commit(root)


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("case", ["step prompt", "action prompt", "required value"])
def test_apply_refuses_a_workflow_that_needs_someone_at_a_terminal_naming_file_and_line(team, case):
    if case == "step prompt":
        flow = """
          - name: nightly
            schedule: "*-*-* 02:00:00"
            steps:
              - name: careful
                block: b
                action: plain
                prompt: {message: "wipe the disks?"}
        """
    elif case == "action prompt":
        flow = """
          - name: nightly
            schedule: "*-*-* 02:00:00"
            steps:
              - {name: careful, block: b, action: asks}
        """
    else:
        flow = """
          - name: nightly
            schedule: "*-*-* 02:00:00"
            launch:
              variables:
                - {name: ticket, type: string, required: true}
            steps:
              - {name: careful, block: b, action: plain}
        """
    _workspace(team.ws, flow, action_prompt=case == "action prompt")
    refused = team.cli("schedules", "apply")
    assert refused.returncode == 2, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.output, refused.stderr
    poly = team.ws / "workspace.poly"
    if case == "step prompt":
        expected = f"workspace.poly:{_line_of(poly, '- name: careful')}: step 'careful' prompts"
    elif case == "action prompt":
        expected = (f"blocks/b/block.poly:{_line_of(team.ws / 'blocks/b/block.poly', '- name: asks')}: action 'b.asks'"
                    " (step 'careful') prompts")
    else:
        expected = "launch variable 'ticket' of workflow 'nightly' is required and has no default"
    assert expected in lines[0] and "nothing was applied" in lines[0], lines[0]
    if case == "required value":
        assert re.search(r"workspace\.poly:\d+: launch variable", lines[0]), lines[0]
    assert team.sql("SELECT count(*) AS n FROM team_schedules")[0]["n"] == 0  # not even `fine`
    _workspace(team.ws, "")  # without it, the rest applies
    applied = team.cli("schedules", "apply")
    assert applied.returncode == 0, applied.output
    assert [r["workflow"] for r in team.sql("SELECT workflow FROM team_schedules")] == ["fine"]


def _prompted_row(dsn: str, workflow: str, applied: float) -> None:
    """A schedule row of a prompting workflow, as a polycrate before the apply-time refusal wrote it."""
    from polycrate.team.scheduler import TeamSchedule, apply_schedules

    apply_schedules(dsn, "direct", [TeamSchedule(
        workspace="direct", workflow=workflow, kind="on_calendar", expression="*-*-* *:*:*", zone="UTC",
        missed="skip", max_delay=None, queue="nowhere", root="/nonexistent", git_commit="0" * 40, remote=None,
        subdir="", prompts="step 'careful' (b.asks)", applied=applied, applied_by="tester")])


def _failed_runs(team: Team, workflow: str) -> dict[str, dict]:
    return {r["id"]: r for r in team.sql("SELECT id, status, message, \"user\" FROM runs WHERE workspace = 'direct'"
                                         " AND name = %s", workflow)}


def test_a_prompted_slot_records_one_failed_run_per_slot_across_two_workers(team):
    team.start_worker("w1")
    team.start_worker("w2")
    wait_for(lambda: len(team.sql("SELECT 1 FROM team_workers")) == 2, "both workers registered")
    _prompted_row(team.env["POLYCRATE_BACKEND"], "asks", time.time())
    wait_for(lambda: len(team.sql("SELECT 1 FROM team_schedule_slots WHERE workflow = 'asks'")) >= 6,
             "six slots handled")
    team.stop_all()
    slots = team.sql("SELECT * FROM team_schedule_slots WHERE workflow = 'asks' ORDER BY slot")
    runs = _failed_runs(team, "asks")
    assert len(runs) == len(slots) >= 6  # never a slot without its run, never two runs for one slot
    assert {s["run_id"] for s in slots} == set(runs)
    for s in slots:
        run = runs[s["run_id"]]
        assert s["outcome"] == "refused" and "never answers prompts" in s["reason"], s
        assert run["status"] == "failed" and "prompts (step 'careful' (b.asks))" in run["message"], run
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["slot"]))
        assert f"slot {stamp}" in run["message"] and run["user"] == "schedule (applied by tester)", run
    assert [int(s["slot"]) for s in slots] == list(range(int(slots[0]["slot"]), int(slots[-1]["slot"]) + 1))
    assert {s["worker"] for s in slots} <= {"w1", "w2"}
    print(f"{len(slots)} prompted slots, one failed run each; by worker "
          f"{ {w: sum(s['worker'] == w for s in slots) for w in ('w1', 'w2')} }")


def test_pruning_keeps_the_last_n_or_the_recent_and_never_refires_a_pruned_slot(team_dsn):
    from polycrate.history.postgres import connect
    from polycrate.team.scheduler import Scheduler

    db = connect(team_dsn)
    try:
        # the rule: rows beyond the newest 3 of their schedule and older than the retention go
        now = time.time()
        for k in range(10):
            for workflow in ("a", "b"):
                db.execute("INSERT INTO team_schedule_slots (workspace, workflow, slot, fired, worker, outcome)"
                           " VALUES ('old', %s, %s, %s, 'w', 'skipped')", (workflow, now - 1000 + 100 * k, now))
        keeper = Scheduler(team_dsn, "pruner", None, now, keep_slots=6, retention=250)
        assert keeper.prune(now) == 2 * 4  # -1000..-700: neither among the newest 6 nor newer than 250 s

        def left() -> list[tuple[str, int, int]]:
            return [(r["workflow"], r["n"], round(now - r["first"])) for r in db.execute(
                "SELECT workflow, count(*) AS n, min(slot) AS first FROM team_schedule_slots GROUP BY workflow"
                " ORDER BY workflow").fetchall()]

        assert left() == [("a", 6, 600), ("b", 6, 600)]
        recent = Scheduler(team_dsn, "pruner", None, now, keep_slots=2, retention=450)
        assert recent.prune(now) == 2 * 2 and left() == [("a", 4, 400), ("b", 4, 400)]  # the recent ones stay
        recent.close()
        nothing = Scheduler(team_dsn, "pruner", None, now, keep_slots=0, retention=0)  # 0 means 1: the newest stays
        assert nothing.prune(now + 10_000) == 2 * 3 and left() == [("a", 1, 100), ("b", 1, 100)]
        keeper.close()
        nothing.close()
        db.execute("DELETE FROM team_schedule_slots")

        # the race: three schedulers (one slow), each pruning to one row after every tick, over a prompted 1-second
        # schedule (each slot leaves a failed run: the record that outlives its pruned slot row)
        _prompted_row(team_dsn, "race", time.time())
        class SlowScheduler(Scheduler):
            """A real scheduler that dawdles between reading a schedule's newest slot and firing the next one:
            the others fire past it and prune meanwhile (the window a busy host opens)."""

            def _fire(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                time.sleep(1.2)
                return super()._fire(*args, **kwargs)

        schedulers = [SlowScheduler(team_dsn, "slow", None, time.time() - 60, keep_slots=1, retention=0)] + [
            Scheduler(team_dsn, f"s{k}", None, time.time() - 60, keep_slots=1, retention=0) for k in range(2)]
        stop = threading.Event()
        pruned: list[int] = []
        failures: list[BaseException] = []

        def spin(scheduler: Scheduler) -> None:
            try:
                while not stop.is_set():
                    scheduler.tick()
                    pruned.append(scheduler.prune())
            except BaseException as exc:  # the test fails below with it
                failures.append(exc)

        threads = [threading.Thread(target=spin, args=(s,)) for s in schedulers]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(db.execute("SELECT 1 FROM runs WHERE workspace = 'direct' AND name = 'race'")
                                 .fetchall()) >= 8 or failures, "eight slots fired")
        finally:
            stop.set()
            for t in threads:
                t.join()
            for s in schedulers:
                s.close()
        assert not failures, failures
        messages = [r["message"] for r in db.execute("SELECT message FROM runs WHERE workspace = 'direct'"
                                                     " AND name = 'race'").fetchall()]
        fired = sorted(re.search(r"slot (\S+Z)", m).group(1) for m in messages)
        assert len(fired) == len(set(fired)) >= 8, fired  # each slot once, though its row was pruned meanwhile
        seconds = [int(time.mktime(time.strptime(f, "%Y-%m-%dT%H:%M:%SZ"))) for f in fired]
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), fired  # and none skipped
        assert sum(pruned) >= len(fired) - 2  # the rows really went
        assert db.execute("SELECT count(*) AS n FROM team_schedule_slots WHERE workflow = 'race'").fetchone()["n"] <= 2
        print(f"{len(fired)} slots fired once each by 3 schedulers pruning after every tick; {sum(pruned)} rows pruned")
    finally:
        db.close()


def test_a_worker_prunes_old_slot_rows_in_its_own_rhythm_keeping_what_it_was_told(team):
    """A real worker prunes when its scheduler starts and every PRUNE_SECONDS after: here the first prune."""
    now = time.time()
    for k in range(10):  # ten handled slots of a schedule, a day apart, the newest a day ago
        team.sql("INSERT INTO team_schedule_slots (workspace, workflow, slot, fired, worker, outcome) VALUES"
                 " ('old', 'daily', %s, %s, 'gone', 'skipped') RETURNING slot", now - 86400 * (10 - k), now)
    team.start_worker("w1", "--keep-slots", "3", "--slot-retention", str(4 * 86400 + 60))
    wait_for(lambda: "pruned 6 old slot rows" in team.worker_log("w1"), "the worker pruned")
    left = team.sql("SELECT slot FROM team_schedule_slots WHERE workflow = 'daily' ORDER BY slot")
    assert [round((now - r["slot"]) / 86400) for r in left] == [4, 3, 2, 1]  # the newest 3, and the 4-day-old one (recent enough)
    bad = team.cli("worker", "--keep-slots", "many")
    assert bad.returncode == 2 and "--keep-slots" in bad.stderr and "Traceback" not in bad.output, bad.output
