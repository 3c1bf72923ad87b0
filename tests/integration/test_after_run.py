"""The after-run phases on a real run (run/finish.py): a real git repository, real HTTP on loopback,
a metrics textfile that cannot be written. The phase that fails is a notice; the phases after it run,
in their declared order; the run's recorded outcome is what its steps decided."""
from __future__ import annotations

import json
import subprocess

from tests.conftest import run_cli, write


def _workspace(tmp_path, hook_url: str):
    root = tmp_path / "ws"
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the metrics folder would go\n")
    write(root / "workspace.poly", f"""
        name: after-ws
        blocks:
          - name: app
        workflows:
          - name: deploy
            steps:
              - {{name: show, block: app, action: show}}
        history:
          keep_runs: 1
        metrics:
          path: {blocked}/polycrate.prom
        webhooks:
          - url: {hook_url}/hook
            on: [success, failure]
    """)
    write(root / "blocks" / "app" / "block.poly", """
        name: app
        actions:
          - name: show
            script:
              - echo ran >> "$POLYCRATE_WORKSPACE/ran.txt"
    """)
    git = ["git", "-C", str(root)]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "config", "user.email", "ops@example.org"], check=True)
    subprocess.run([*git, "config", "user.name", "Ops"], check=True)
    return root, git


def test_a_failing_phase_stops_neither_the_next_phases_nor_changes_the_outcome(tmp_path, hook_server):
    root, git = _workspace(tmp_path, hook_server.url)
    flags = ("--auto-commit", "--event-handler", "webhook", "--event-endpoint", f"{hook_server.url}/event")
    first = run_cli("workflows", "run", "deploy", *flags, cwd=root)
    assert first.returncode == 0, first.output
    first_id = hook_server.requests[1]["body"]["run_id"]
    result = run_cli("workflows", "run", "deploy", *flags, "-o", "json", cwd=root)
    assert result.returncode == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded" and run["exit_code"] == 0  # metrics failed: the outcome stands

    # 1 retention: keep_runs 1 left only this run
    listed = json.loads(run_cli("runs", "list", "-o", "json", cwd=root).stdout)
    assert [r["run_id"] for r in listed["runs"]] == [run["run_id"]]
    # 2 metrics: failed, and said so in the run's record
    texts = [n["text"] for n in run["notices"]]
    assert any(t.startswith("metrics: could not write the textfile: ") for t in texts), texts
    # 3 event, then 6 webhooks: both sent after the failure, the event first
    paths = [r["path"] for r in hook_server.requests]
    assert paths == ["/event", "/hook", "/event", "/hook"]
    event, hook = hook_server.requests[2]["body"], hook_server.requests[3]["body"]
    # 3 before 4: the event names the workspace's commit before this run's auto-commit (the first run's)
    log = subprocess.run([*git, "log", "--format=%H %s"], capture_output=True, text=True, check=True).stdout
    commits = [line.split(" ", 1) for line in log.splitlines()]
    assert commits[0][1] == f"[polycrate] Auto-Commit after run {run['run_id']} (workflow deploy: succeeded)"
    assert commits[1][1] == f"[polycrate] Auto-Commit after run {first_id} (workflow deploy: succeeded)"
    assert event["transaction"] == run["run_id"] and event["commit_sha"] == commits[1][0]
    # 5 the record was read back after the metrics' failure: the webhook carries its notice
    assert hook["run_id"] == run["run_id"] and hook["status"] == "succeeded"
    assert any(n["text"].startswith("metrics: could not write") for n in hook["notices"])
    stored = json.loads(run_cli("runs", "show", run["run_id"], "-o", "json", cwd=root).stdout)
    assert stored["status"] == "succeeded" and stored["exit_code"] == 0
