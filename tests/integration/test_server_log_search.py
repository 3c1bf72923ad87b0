"""The log's search over the whole log (`?search=` on the log API and the run page), bounded, on a real
`polycrate serve`; and the page's log as spans that never carry markup from the log."""
from __future__ import annotations

import re

import httpx
import pytest

from polycrate.server.logview import SEARCH_MATCHES
from tests.conftest import run_cli
from tests.server_fixtures import make_workspace, seed_runs, start_server, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logsearch")
    ops = make_workspace(tmp / "ops", "ops")
    lab = make_workspace(tmp / "lab", "lab")
    block = ops / "blocks" / "sh" / "block.poly"
    block.write_text(block.read_text() + "  - name: html\n    script:\n"
                     "      - 'echo \"<script>alert(1)</script><b>bold</b>\"'\n")
    (ops / "workspace.poly").write_text((ops / "workspace.poly").read_text() + (
        "  - name: html\n    steps:\n      - {name: say, block: sh, action: html}\n"))
    seed_runs(ops)
    assert run_cli("-w", str(ops), "workflows", "run", "big").returncode == 0
    assert run_cli("-w", str(lab), "workflows", "run", "green").returncode == 0
    server = start_server(tmp, [ops, lab])
    assert server.cli("server", "user", "add", "lab-only", "--role", "none", "--password-stdin",
                      input="lab-only-password\n").returncode == 0
    assert server.cli("server", "grant", "add", "lab-only", "lab", "--role", "viewer").returncode == 0
    yield server
    server.stop()


def api(server, role: str | None = "viewer") -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.tokens[role]}"} if role else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def big_run(server) -> str:
    return api(server).get("/api/v1/runs", params={"workflow": "big"}).json()["runs"][0]["run_id"]


def test_search_reads_the_whole_log_and_is_bounded(served):
    run_id = big_run(served)
    viewer = api(served)
    r = viewer.get(f"/api/v1/runs/{run_id}/log", params={"search": "THE FIRST line"})
    assert r.status_code == 200, r.text
    body = r.json()
    # the first line is 3 MB before the end: beyond the page's tail, found by the server
    # (a script's log shows each command first: `+ echo "the first line"`, then its output)
    assert body["matches"] == [{"step": "print", "line": 1, "text": '+ echo "the first line"'},
                               {"step": "print", "line": 2, "text": "the first line"}] and body["more"] is False
    assert body["scanned_bytes"] > 3_000_000
    many = viewer.get(f"/api/v1/runs/{run_id}/log", params={"search": "xxx"}).json()
    assert len(many["matches"]) == SEARCH_MATCHES and many["more"] is True
    assert all(len(m["text"]) <= 400 for m in many["matches"])
    none = viewer.get(f"/api/v1/runs/{run_id}/log", params={"search": "not in this log"}).json()
    assert none["matches"] == [] and none["more"] is False
    step = viewer.get(f"/api/v1/runs/{run_id}/log", params={"search": "first", "step": "print"}).json()
    assert step["matches"][0]["line"] == 1


@pytest.mark.parametrize("search", ["", "x" * 201, "a\x00b"])
def test_a_bad_search_text_is_a_400(served, search):
    r = api(served).get(f"/api/v1/runs/{big_run(served)}/log", params={"search": search})
    assert r.status_code == 400 and "search" in r.json()["error"]


def test_search_permissions(served):
    run_id = big_run(served)
    assert api(served, None).get(f"/api/v1/runs/{run_id}/log", params={"search": "first"}).status_code == 401
    for role in ("viewer", "operator", "admin"):
        assert api(served, role).get(f"/api/v1/runs/{run_id}/log", params={"search": "first"}).status_code == 200
    client = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "lab-only", "password": "lab-only-password",
                                       "csrf": token}).status_code == 303
    assert client.get(f"/api/v1/runs/{run_id}/log", params={"search": "first"}).status_code == 404  # no grant
    assert client.get(f"/runs/{run_id}", params={"search": "first"}).status_code == 404


def test_the_run_page_searches_the_whole_log_without_javascript(served):
    client = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "viewer", "password": served.passwords["viewer"],
                                       "csrf": token}).status_code == 303
    page = client.get(f"/runs/{big_run(served)}", params={"search": "the first line"})
    assert page.status_code == 200
    found = re.search(r'<section id="log-found">(.*?)</section>', page.text, re.S).group(1)
    assert "2 lines of the whole log hold" in found and "print:2</span> the first line" in found
    assert client.get(f"/runs/{big_run(served)}", params={"search": "x" * 300}).status_code == 400


def test_markup_printed_by_an_action_stays_text(served):
    r = api(served, "operator").post("/api/v1/workspaces/ops/workflows/html/runs", json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait_for(lambda: api(served).get(f"/api/v1/runs/{run_id}").json()["status"] != "running", what="the run")
    client = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "viewer", "password": served.passwords["viewer"], "csrf": token})
    page = client.get(f"/runs/{run_id}").text
    log = re.search(r'<pre id="log"[^>]*>(.*?)</pre>', page, re.S).group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in log
    assert "<script>" not in log and "<b>" not in log
