"""`polycrate serve` with a backend: it reads runs from PostgreSQL (the same documents as the CLI), and a
launch from the web goes through the queue to a worker and is recorded there, never in the workspace's SQLite
store."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.helpers import run_cli, validate_document
from tests.server_fixtures import make_workspace, seed_runs, start_server, wait_for
from tests.team.conftest import committed

pytestmark = pytest.mark.team


def test_serve_reads_and_launches_through_the_backend(team_env, tmp_path, monkeypatch, serve_worker):
    for key, value in team_env.items():  # the server, its launches and the CLI below: all this host's setting
        monkeypatch.setenv(key, value)
    ops = make_workspace(tmp_path / "ops", "ops")
    seed_runs(ops)
    committed(ops)
    assert not (ops / ".polycrate" / "runs.db").exists()
    server = start_server(tmp_path, [ops])
    try:
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['operator']}"},
                           timeout=30)
        served = validate_document(api.get("/api/v1/runs", params={"workspace": "ops"}).json(), "runs")
        cli = json.loads(run_cli("-w", str(ops), "runs", "list", "-o", "json").stdout)
        assert [r["name"] for r in served["runs"]] == ["nightly", "green"] and served == cli

        launched = api.post("/api/v1/workspaces/ops/workflows/green/runs", json={})
        assert launched.status_code == 202, launched.text
        run_id = launched.json()["run_id"]
        def finished() -> dict | None:
            doc = api.get(f"/api/v1/runs/{run_id}").json()
            return doc if doc["status"] not in ("queued", "running") else None  # queued: no worker took it yet

        run = wait_for(finished, what="the launched run to finish")
        assert run["status"] == "succeeded" and run["user"] == "web:token:operator-token"
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ops, capture_output=True, text=True,
                              check=True).stdout.strip()
        assert run["git_commit"] == head  # which version the worker ran: in the record, and on the run's page
        page = api.get(f"/runs/{run_id}")
        assert page.status_code == 200 and f'<dd id="run-commit"><code>{head}</code></dd>' in page.text, page.text
        shown = json.loads(run_cli("-w", str(ops), "runs", "show", run_id, "-o", "json").stdout)
        assert shown == run
        log = api.get(f"/api/v1/runs/{run_id}/log").json()
        assert log["steps"][0]["log"] and log == json.loads(
            run_cli("-w", str(ops), "runs", "logs", run_id, "-o", "json").stdout)
        assert not (ops / ".polycrate" / "runs.db").exists()
    finally:
        server.stop()
