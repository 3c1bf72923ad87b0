"""`polycrate serve` with a backend (issue #25): a run launched through the queue and not taken by any worker has
its page, its API document and a Stop that takes it off the queue (it never runs, recorded as interrupted by
whom); the runs list shows it. The schedules page and the overview read what `schedules apply` wrote to
PostgreSQL: applied or not, the next slots, the last slot fired and its run, the missed policy.

Real PostgreSQL, a real `polycrate serve`, a real `polycrate worker` (started only after the stop: it takes every
job of its queue, so the stopped run would run if its job were still there). No timed assertions."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import cli_environment, run_cli, validate_document
from tests.server_fixtures import SECRET, make_workspace, start_server, wait_for
from tests.team.conftest import committed
from tests.team.harness import Team

pytestmark = pytest.mark.team

DEADLINE = 180.0

TICK = """
  - name: tick
    description: every second, on a queue no worker serves
    queue: nowhere
    schedule: {on_calendar: "*-*-* *:*:*", missed: skip}
    steps:
      - {name: hello, block: sh, action: ok}
"""


@contextlib.contextmanager
def team_server(team_env, tmp_path, monkeypatch, workflows: str = "") -> Iterator[tuple[Path, Any, Team, httpx.Client]]:
    """The committed workspace `ops` (with `workflows` added to its workspace.poly), a real `polycrate serve` over
    it and the team harness, all on this host's backend; and the operator's API client."""
    for key, value in team_env.items():  # the server, its launches and the CLI: this host's backend
        monkeypatch.setenv(key, value)
    ops = make_workspace(tmp_path / "ops", "ops")
    if workflows:
        with open(ops / "workspace.poly", "a") as poly:
            poly.write(workflows)
    committed(ops)
    server = start_server(tmp_path, [ops])
    team = Team(ops, tmp_path / "marks", team_env, tmp_path)
    try:
        yield ops, server, team, httpx.Client(base_url=server.url, timeout=120,
                                              headers={"Authorization": f"Bearer {server.tokens['operator']}"})
    finally:
        team.stop_all()
        server.stop()


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": user, "password": password, "csrf": token})


def csrf_of(client: httpx.Client, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_a_queued_run_has_its_page_and_stop_and_the_schedules_page_reads_the_backend(team_env, tmp_path,
                                                                                      monkeypatch):
    with team_server(team_env, tmp_path, monkeypatch, TICK) as (ops, server, team, operator):
        viewer = httpx.Client(base_url=server.url, timeout=60,
                              headers={"Authorization": f"Bearer {server.tokens['viewer']}"})

        # --- the schedules page before `schedules apply`: declared, not applied, nothing in the backend
        before = {r["workflow"]: r for r in operator.get("/api/v1/schedules").json() if r["workflow"]}
        assert before["green"]["applied"] == "not applied" and before["green"]["backend"] is None
        assert before["tick"]["applied"] == "not applied"

        # --- a launch with values while no worker serves the queue: it stays queued
        launched = operator.post("/api/v1/workspaces/ops/workflows/echo/runs",
                                 json={"vars": {"note": "queued-note", "count": 2}})
        assert launched.status_code == 202, launched.text
        run_id = launched.json()["run_id"]
        doc = operator.get(f"/api/v1/runs/{run_id}")
        assert doc.status_code == 200, doc.text
        queued = doc.json()
        assert (queued["status"], queued["queue"], queued["workflow"], queued["workspace"], queued["launched_by"]) == (
            "queued", "default", "echo", "ops", "web:token:operator-token")
        assert queued["launched"].endswith("Z") and queued["launch"]["parameters"]["note"] == "queued-note"
        assert queued["launch"]["parameters"]["count"] == 2 and SECRET not in doc.text
        page = operator.get(f"/runs/{run_id}")
        assert page.status_code == 200 and run_id in page.text and SECRET not in page.text
        for said in ("queued", 'id="run-queue">default<', "web:token:operator-token", "note=queued-note", 'id="stop"'):
            assert said in page.text, said
        # ... and on the command line of any host with the backend: listed first, shown by a prefix of its id
        listed = team.cli("runs", "list")
        assert listed.returncode == 0 and run_id in listed.stdout, listed.output
        assert "queued (default)" in next(line for line in listed.stdout.splitlines() if run_id in line)
        shown = team.cli("runs", "show", run_id[:-2])
        assert shown.returncode == 0 and "queued on queue 'default': no worker has taken it yet" in shown.stdout, \
            shown.output
        assert f"polycrate runs stop {run_id}" in shown.stdout and SECRET not in shown.output
        assert team.show(run_id)["status"] == "queued" and team.show(run_id)["queue"] == "default"
        unknown = team.cli("runs", "show", "20990101-000000-abcdef")
        assert unknown.returncode != 0 and "no run" in unknown.stderr, unknown.output
        assert 'id="stop"' not in viewer.get(f"/runs/{run_id}").text  # a viewer sees it, without a Stop
        listed = operator.get("/runs")
        assert f'data-run="{run_id}" data-queued="default"' in listed.text
        assert f'data-run="{run_id}"' in operator.get("/runs", params={"status": "queued"}).text
        assert f'data-run="{run_id}"' not in operator.get("/runs", params={"status": "failed"}).text
        # the JSON lists say it too: the API's and `runs list -o json`, under `queued` (no record: no run document)
        as_json = team.cli("runs", "list", "-o", "json")
        assert as_json.returncode == 0, as_json.output
        for answer in (operator.get("/api/v1/runs").json(), operator.get("/api/v1/runs", params={"status": "queued"}).json(),
                       json.loads(as_json.stdout)):
            validate_document(answer, "runs")
            assert [(q["id"], q["status"], q["queue"]) for q in answer["queued"]] == [(run_id, "queued", "default")]
            assert answer["queued"][0]["launched"].endswith("Z") and SECRET not in json.dumps(answer)
        assert "queued" not in operator.get("/api/v1/runs", params={"status": "failed"}).json()
        assert "queued" not in json.loads(team.cli("runs", "list", "-o", "json", "--kind", "action").stdout)

        # a follower started while it waits: it waits for the run (no record yet) and ends with it
        follower = subprocess.Popen([sys.executable, "-m", "polycrate", "runs", "logs", run_id, "--follow"], cwd=ops,
                                    env=cli_environment(team_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        assert follower.stderr is not None
        waiting = follower.stderr.readline()  # its first words, before anything stops the run
        assert f"run {run_id} is queued on queue 'default'; waiting for a worker" in waiting, waiting
        # --- stop: a viewer may not; the form asks first; the operator's stop takes it off the queue
        refused = viewer.post(f"/api/v1/runs/{run_id}/stop")
        assert refused.status_code == 403, refused.text
        session = httpx.Client(base_url=server.url, timeout=60)
        assert login(session, "operator", server.passwords["operator"]).status_code == 303
        asked = session.post(f"/runs/{run_id}/stop", data={"csrf": csrf_of(session, f"/runs/{run_id}")})
        assert asked.status_code == 200 and "queued on 'default'" in asked.text and 'id="confirm-stop"' in asked.text
        assert operator.get(f"/api/v1/runs/{run_id}").json()["status"] == "queued"  # asking stopped nothing
        stopped = session.post(f"/runs/{run_id}/stop", data={"csrf": csrf_of(session, f"/runs/{run_id}"),
                                                              "confirm": "yes"})
        assert stopped.status_code == 303 and stopped.headers["location"] == f"/runs/{run_id}"
        record = operator.get(f"/api/v1/runs/{run_id}").json()
        assert record["status"] == "interrupted" and record["steps"] == [] and record["exit_code"] == 130, record
        assert "stopped by web:operator before it started (the server's Stop)" in record["message"]
        shown_page = operator.get(f"/runs/{run_id}").text  # the record's page says why it never ran
        assert 'id="never-started-why">stopped by web:operator before it started' in shown_page
        assert 'id="run-started">never (launched by ' in shown_page and record["started"] is None  # not the stop's time
        out, err = follower.communicate(timeout=DEADLINE)
        assert follower.returncode == 130 and f"run {run_id} interrupted" in out, out + err  # the run's exit status
        row = team.sql("SELECT state, stop_requested_by, job_id FROM team_runs WHERE id = %s", run_id)[0]
        assert (row["state"], row["stop_requested_by"]) == ("done", "web:operator")
        assert not team.sql("SELECT 1 FROM procrastinate_jobs WHERE id = %s AND status = 'todo'", row["job_id"])
        again = operator.post(f"/api/v1/runs/{run_id}/stop")
        assert again.status_code == 409 and "not running" in again.json()["error"], again.text
        admin = httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {server.tokens['admin']}"})
        audit = [a for a in admin.get("/api/v1/audit", params={"action": "stop"}).json() if a["target"] == run_id]
        assert [(a["actor"], a["outcome"][:8]) for a in audit] == [("token:operator-token", "refused:"), ("operator", "ok")]
        assert f'data-run="{run_id}" data-queued' not in operator.get("/runs").text

        # --- schedules apply writes to PostgreSQL; a worker's scheduler fires `tick` (its queue has no worker)
        applied = run_cli("-w", str(ops), "schedules", "apply")
        assert applied.returncode == 0 and "written to the backend" in applied.stdout, applied.output
        team.start_worker("w1", "--queue", "default")
        slot = wait_for(lambda: team.sql("SELECT * FROM team_schedule_slots WHERE workflow = 'tick' AND outcome ="
                                         " 'launched' ORDER BY slot LIMIT 1"), DEADLINE, "the worker fired tick")[0]
        rows = {r["workflow"]: r for r in operator.get("/api/v1/schedules").json() if r["workflow"]}
        green, tick = rows["green"], rows["tick"]
        assert green["applied"] == "applied" and tick["applied"] == "applied", rows
        assert green["backend"]["expression"] == "*-*-* 02:00:00" and green["backend"]["missed"] == "run-once"
        assert tick["backend"]["missed"] == "skip" and tick["backend"]["queue"] == "nowhere"
        assert green["backend"]["last_slot"] is None and len(green["next_runs"]) == 3
        assert green["next_runs"] == sorted(green["next_runs"]) and green["next_runs"][0] > time.time() - 5
        last = tick["backend"]["last_slot"]
        assert last is not None and last["outcome"] in ("launched", "refused") and last["slot"] >= slot["slot"]
        tick_run = slot["run_id"]
        page = operator.get("/schedules").text
        assert "not applied" not in page and f'href="/runs/{tick_run}"' in page or 'last slot' in page and "missed: skip" in page, page
        overview = {r["workflow"]: r for r in operator.get("/api/v1/overview").json()}
        assert overview["green"]["applied"] == "applied" and overview["green"]["next_run"] == green["next_runs"][0]
        assert overview["echo"]["next_run"] is None

        # the scheduled run waits on its queue: its page says so, launched by the schedule
        tick_doc = operator.get(f"/api/v1/runs/{tick_run}").json()
        assert (tick_doc["status"], tick_doc["queue"]) == ("queued", "nowhere")
        assert tick_doc["launched_by"].startswith("schedule (applied by ") and tick_doc["scheduled_slot"]
        assert "the slot" in operator.get(f"/runs/{tick_run}").text
        by_api = operator.post(f"/api/v1/runs/{tick_run}/stop")  # the API's stop of a queued run
        assert by_api.status_code == 200 and by_api.json() == {"run_id": tick_run, "status": "interrupted"}, by_api.text
        tick_record = operator.get(f"/api/v1/runs/{tick_run}").json()
        assert tick_record["status"] == "interrupted" and "stopped by web:token:operator-token" in tick_record["message"]

        # --- the worker serves `default`: a new launch runs there, the stopped run never does
        green_run = operator.post("/api/v1/workspaces/ops/workflows/green/runs", json={}).json()["run_id"]
        done = wait_for(lambda: (lambda d: d if d.get("status") not in (None, "queued", "running") else None)(
            operator.get(f"/api/v1/runs/{green_run}").json()), DEADLINE, "the worker ran green")
        assert done["status"] == "succeeded", done
        record = operator.get(f"/api/v1/runs/{run_id}").json()
        assert record["status"] == "interrupted" and record["steps"] == []
        assert team.sql("SELECT state FROM team_runs WHERE id = %s", run_id) == [{"state": "done"}]
        assert "queued-note" not in team.worker_log("w1")


def test_a_queued_runs_page_becomes_its_run_page_once_a_worker_takes_it(team_env, tmp_path, monkeypatch, browser):
    """In a real Chromium: the page of a run no worker has taken yet waits (asking the API every 2 s), and when a
    worker takes the run it gives way to the run's own page, live or ended, without anyone reloading it."""
    from tests.browser.test_web import css, css_all, log_in, settle

    with team_server(team_env, tmp_path, monkeypatch) as (_, server, team, operator):
        launched = operator.post("/api/v1/workspaces/ops/workflows/green/runs", json={})
        assert launched.status_code == 202, launched.text
        run_id = launched.json()["run_id"]
        log_in(browser, server, "viewer")
        browser.get(f"{server.url}/runs/{run_id}")
        assert css_all(browser, "#queued-wait") and "queued" in css(browser, "#run-status").text
        assert operator.get(f"/api/v1/runs/{run_id}").json()["status"] == "queued"  # no worker yet: it waits
        team.start_worker("w1", "--queue", "default")
        # (between the worker taking it and opening its record, the run reads as missing: no status)
        wait_for(lambda: operator.get(f"/api/v1/runs/{run_id}").json().get("status") not in (None, "queued", "running"),
                 DEADLINE, "the worker to run it")
        # the page asks every 2 s: it has left the queued page by itself, for the run's page
        settle(lambda: not css_all(browser, "#queued-wait") and "succeeded" in css(browser, "#run-status").text,
               what="the queued page to become the run's page, ended")
        assert browser.current_url == f"{server.url}/runs/{run_id}"
        assert css(browser, "#run-user").text == "web:token:operator-token"


def test_a_launch_no_worker_can_take_answers_queued_without_waiting_for_one(team_env, tmp_path, monkeypatch):
    """No worker serves the workflow's queue: the launch answers 202 with "status": "queued" (it said "running"),
    and does not wait for a worker that is not there (it waited 20 s for a record no one opens). The direct call
    waits at most an hour for a worker: only not waiting ends it within the deadline."""
    import threading

    from polycrate.server.launch import LaunchOptions, enqueue_launch

    with team_server(team_env, tmp_path, monkeypatch, TICK) as (ops, _, team, operator):
        launched = operator.post("/api/v1/workspaces/ops/workflows/green/runs", json={})
        assert launched.status_code == 202 and launched.json()["status"] == "queued", launched.text
        assert operator.get(launched.headers["location"]).json()["status"] == "queued"
        team.start_worker("w1", "--queue", "default")  # a worker of another queue than tick's
        wait_for(lambda: operator.get(launched.headers["location"]).json().get("status") == "succeeded", DEADLINE,
                 "the worker to run green")
        answer: list = []
        call = threading.Thread(target=lambda: answer.append(enqueue_launch(
            team_env["POLYCRATE_BACKEND"], ops, "ops", "tick", "nowhere", LaunchOptions(), launched_by="test",
            wait_seconds=3600)), daemon=True)
        call.start()
        call.join(DEADLINE)
        assert answer and answer[0].queued, "the launch waited for a worker no queue of which is 'nowhere'"
