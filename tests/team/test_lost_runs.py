"""A run that becomes `lost` tells the team as a failed run does: the workspace's webhooks and chat
notifications fire once, sent by the worker that found it lost (team/lost.py, called by worker.reap).

Real parts: PostgreSQL (tests/team/conftest.py), `polycrate worker` processes, a worker killed with SIGKILL,
and an HTTP server on loopback that records what a webhook endpoint and a Slack incoming webhook receive.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import run_cli
from tests.helpers import wait_for as _wait_for

pytestmark = pytest.mark.team

TOKEN = "xoxb-LOST-RUN-TOKEN-42"  # the Slack webhook URL's secret part: never in a notice, log or record


def _workspace(root: Path, marks: Path, hook_url: str) -> Path:
    write(root / "workspace.poly", f"""
        name: lostws
        blocks:
          - name: b
        workflows:
          - name: gate
            steps:
              - {{name: wait, block: b, action: wait}}
          - name: quick
            steps:
              - {{name: hello, block: b, action: hello}}
        webhooks:
          - url: {hook_url}/hook
            on: [failure]
        notifications:
          - {{name: ops-chat, type: slack, url: {{secret: notify.slack_url}}}}
        """)
    write(root / "blocks/b/block.poly", f"""
        name: b
        actions:
          - name: wait
            script:
              - echo started >> {marks}/gate-started
              - while [ ! -e {marks}/open ]; do sleep 0.1; done  # ended by the test, whatever happens
          - name: hello
            script:
              - echo hello
        """)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    write(root / "secrets.poly", f"config:\n  notify:\n    slack_url: {hook_url}/services/T000/B000/{TOKEN}\n")
    write(root / ".gitignore", ".polycrate/\nsecrets.poly\nartifacts/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    return root


def _start_worker(tmp: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    out = open(tmp / f"worker-{name}.log", "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "polycrate", "worker", "--name", name, "--lost-after", "4",
                                 "--heartbeat", "0.5"], cwd=tmp, env=os.environ | env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def test_a_lost_run_fires_the_workspace_s_webhooks_and_notifications_once(team_env, tmp_path, hook_server):
    from polycrate.history.postgres import connect

    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, hook_server.url)
    workers: list[subprocess.Popen[bytes]] = []

    def sql(query: str, *args):
        db = connect(team_env["POLYCRATE_BACKEND"])
        try:
            return list(db.execute(query, args).fetchall())
        finally:
            db.close()

    try:
        workers.append(_start_worker(tmp_path, team_env, "w1"))
        ok = run_cli("workflows", "run", "quick", "--wait", cwd=ws, env=team_env)
        assert ok.returncode == 0, ok.output
        assert hook_server.requests == []  # a success: `on: [failure]` and the channel's default want none

        launched = run_cli("workflows", "run", "gate", cwd=ws, env=team_env)
        assert launched.returncode == 0, launched.output
        run_id = launched.stdout.strip().splitlines()[-1]
        _wait_for(lambda: (marks / "gate-started").exists(), "the step started")
        os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and the run's process: nobody records an end
        workers[0].wait()
        workers.append(_start_worker(tmp_path, team_env, "w2"))  # finds w1 silent, marks the run lost

        def paths() -> list[str]:
            return sorted(r["path"].split("/")[1] for r in hook_server.requests)

        _wait_for(lambda: paths() == ["hook", "services"], "the webhook and the Slack notification were sent")
        _wait_for(lambda: sql("SELECT status FROM procrastinate_jobs WHERE args->>'run_id' = %s", run_id)[0]["status"]
                  == "failed", "the lost run's job is finished")
        time.sleep(3)  # several more rounds of every worker's reaper (every 1 s here): nobody tells it twice
        assert paths() == ["hook", "services"]

        hook = next(r for r in hook_server.requests if r["path"] == "/hook")["body"]
        assert (hook["run_id"], hook["status"], hook["workflow"]) == (run_id, "lost", "gate")
        assert "its worker w1" in hook["message"] and "stopped heartbeating" in hook["message"]
        chat = next(r for r in hook_server.requests if r["path"].startswith("/services/"))
        assert chat["path"] == f"/services/T000/B000/{TOKEN}"  # the secret URL, read by w2 from secrets.poly
        text = json.dumps(chat["body"])
        assert "workflow gate lost" in text and "polycrate workflows run gate --resume" in text

        shown = run_cli("runs", "show", run_id, "-o", "json", cwd=ws, env=team_env)
        assert shown.returncode == 0, shown.output
        record = json.loads(shown.stdout)
        assert record["status"] == "lost"
        everything = shown.stdout + (tmp_path / "worker-w2.log").read_text(errors="replace")
        assert TOKEN not in everything
        # delivered: no notice says a webhook or a channel failed
        assert not [n for n in record["notices"] if "failed" in n["text"] or "not sent" in n["text"]], record
    finally:
        (marks / "open").touch()  # a step process that outlived its killed worker ends
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_lost_run_whose_endpoint_fails_says_so_in_its_record(team_env, tmp_path):
    """No endpoint listening: the lost run's record carries the webhook's failure as a notice, without the
    Slack URL's token; the run stays lost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, f"http://127.0.0.1:{port}")
    workers = [_start_worker(tmp_path, team_env, "w1")]

    def sql(query: str, *args):
        from polycrate.history.postgres import connect

        db = connect(team_env["POLYCRATE_BACKEND"])
        try:
            return list(db.execute(query, args).fetchall())
        finally:
            db.close()

    try:
        launched = run_cli("workflows", "run", "gate", cwd=ws, env=team_env)
        assert launched.returncode == 0, launched.output
        run_id = launched.stdout.strip().splitlines()[-1]
        _wait_for(lambda: (marks / "gate-started").exists(), "the step started")
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        workers.append(_start_worker(tmp_path, team_env, "w2"))

        def notices() -> list[str]:
            # read from the database, not with `runs show`: on this host that would judge the killed process
            # itself (history's reconcile: 'interrupted') before the reaper marks the run lost
            rows = sql("SELECT status, notices FROM runs WHERE workspace = 'lostws' AND id = %s", run_id)
            texts = [n["text"] for n in rows[0]["notices"]] if rows and rows[0]["status"] == "lost" else []
            return texts if any("ops-chat" in t for t in texts) else []

        found = _wait_for(notices, "the lost run's notices name the failed webhook and channel")
        assert any(t.startswith("webhook 1 (http://127.0.0.1:") and "failed" in t for t in found), found
        assert any("notification 'ops-chat' (slack) failed" in t for t in found), found
        assert TOKEN not in json.dumps(found)
    finally:
        (marks / "open").touch()  # a step process that outlived its killed worker ends
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
