"""Launching one action of a block from the API and the launch form of a real `polycrate serve`: operator+ in
that workspace, the rules of a workflow without a `launch:` declaration, audited."""
from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import run_cli
from tests.server_fixtures import make_workspace, start_server, wait_for

ROUTE = "/api/v1/workspaces/{ws}/blocks/sh/actions/{action}/runs"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("actions")
    ops = make_workspace(tmp / "ops", "ops")
    lab = make_workspace(tmp / "lab", "lab")
    for root in (ops, lab):
        block = root / "blocks" / "sh" / "block.poly"
        block.write_text(block.read_text() + "  - name: careful\n    prompt: {message: \"really restart it?\"}\n"
                         "    script:\n      - echo careful done\n"
                         "  - name: hello\n    script:\n      - echo hello from an action\n")
    assert run_cli("-w", str(ops), "workflows", "run", "green").returncode == 0
    server = start_server(tmp, [ops, lab])
    assert server.cli("server", "user", "add", "lab-only", "--role", "none", "--password-stdin",
                      input="lab-only-password\n").returncode == 0
    assert server.cli("server", "grant", "add", "lab-only", "lab", "--role", "operator").returncode == 0
    yield server
    server.stop()


def api(server, role: str | None = "operator") -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.tokens[role]}"} if role else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def finished(server, run_id: str) -> dict:
    client = api(server, "viewer")
    return wait_for(lambda: (lambda r: r if r["status"] != "running" else None)(
        client.get(f"/api/v1/runs/{run_id}").json()), what=f"run {run_id}")


def test_an_operator_launches_one_action_and_it_is_recorded(served):
    r = api(served).post(ROUTE.format(ws="ops", action="hello"), json={})
    assert r.status_code == 202, r.text
    run = finished(served, r.json()["run_id"])
    assert run["kind"] == "action" and run["name"] == "sh hello" and run["status"] == "succeeded", run
    assert run["user"] == "web:token:operator-token"
    log = "\n".join(s["log"] for s in api(served, "viewer").get(f"/api/v1/runs/{run['run_id']}/log").json()["steps"])
    assert "hello from an action" in log
    row = api(served, "admin").get("/api/v1/audit", params={"action": "launch-action"}).json()[0]
    assert row["target"] == "ops/sh/hello" and row["outcome"] == "ok" and row["detail"]["run_id"] == run["run_id"]
    assert row["detail"]["check"] is False and row["detail"]["limit"] is None


def test_check_mode_and_a_host_pattern_reach_the_action(served):
    r = api(served, "admin").post(ROUTE.format(ws="ops", action="disk"), json={"check": True, "limit": "localhost"})
    assert r.status_code == 202, r.text
    run = finished(served, r.json()["run_id"])
    assert run["check_mode"] is True and run["ansible_options"]["limit"] == "localhost"
    assert run["steps"][0]["hosts"]["localhost"]["failed"] == 1  # the playbook ran, on that host


@pytest.mark.parametrize(("body", "field"), [
    ({"limit": "localhost,@/etc/shadow"}, "@"), ({"limit": "localhost:@/etc/shadow"}, "@"),
    ({"vars": {"note": "x"}}, "note"), ({"extra_vars": ["a=1"]}, "extra_vars"), ({"tags": ["x"]}, "tags"),
    ({"step": "x"}, "step"), ({"resume": True}, "resume"), ({"check": "yes"}, "check"), ({"bogus": 1}, "bogus"),
])
def test_what_a_workflow_without_a_declaration_refuses_is_refused(served, body, field):
    r = api(served, "admin").post(ROUTE.format(ws="ops", action="hello"), json=body)
    assert r.status_code in (400, 403) and field in r.json()["error"], r.text


def test_a_prompt_needs_confirm(served):
    r = api(served).post(ROUTE.format(ws="ops", action="careful"), json={})
    assert r.status_code == 422 and r.json()["prompts"][0]["message"] == "really restart it?"
    r = api(served).post(ROUTE.format(ws="ops", action="careful"), json={"confirm": True})
    assert r.status_code == 202, r.text
    assert finished(served, r.json()["run_id"])["status"] == "succeeded"


def test_permissions(served):
    url = ROUTE.format(ws="ops", action="hello")
    assert api(served, None).post(url, json={}).status_code == 401
    r = api(served, "viewer").post(url, json={})
    assert r.status_code == 403 and "operator" in r.json()["error"]
    assert api(served).post(ROUTE.format(ws="ops", action="nope"), json={}).status_code == 404
    assert api(served).post("/api/v1/workspaces/ops/blocks/nope/actions/hello/runs", json={}).status_code == 404
    client = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "lab-only", "password": "lab-only-password",
                                       "csrf": token}).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    assert client.post(url, json={}, headers={"X-CSRF-Token": csrf}).status_code == 404  # no grant in ops
    assert client.get("/workspaces/ops/blocks/sh/actions/hello").status_code == 404
    assert client.post(url, json={}).status_code == 403  # a session POST without the CSRF token
    r = client.post(ROUTE.format(ws="lab", action="hello"), json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text  # an operator in lab by grant
    finished(served, r.json()["run_id"])


@pytest.mark.parametrize("field, value, named", [("tags", ["web"], "tags"), ("extra_vars", {"x": 1}, "extra_vars"),
                                                 ("vars", {"y": 2, "x": 1}, "vars.x")])
def test_what_one_action_does_not_take_is_refused_in_an_actions_words(served, field, value, named):
    """Tags, extra vars or launch values sent for one action were refused in a workflow's words: "tags: workflow
    'sh hello' does not let a launch set it (launch.tags: false)", a declaration an action cannot have. Now the
    refusal says what one action takes."""
    r = api(served, "admin").post(ROUTE.format(ws="ops", action="hello"), json={field: value})
    assert r.status_code == 400 and r.json()["error"] == (
        f"{named}: one action takes check mode and a host pattern only; launch values, tags and extra vars are for "
        "workflows (launch: in workspace.poly)"), r.text


def test_a_second_launch_while_it_runs_is_409(served):
    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    first = api(served).post(ROUTE.format(ws="ops", action="gated"), json={})
    assert first.status_code == 202, first.text
    try:
        again = api(served).post(ROUTE.format(ws="ops", action="gated"), json={})
        assert again.status_code == 409 and "already running" in again.json()["error"]
    finally:
        (ops / "gate").touch()
        (ops / "gate2").touch()
    assert finished(served, first.json()["run_id"])["status"] == "succeeded"


def test_a_single_actions_run_is_relaunched_with_the_same_values(served):
    r = api(served).post(ROUTE.format(ws="ops", action="disk"), json={"check": True, "limit": "localhost"})
    assert r.status_code == 202, r.text
    first = finished(served, r.json()["run_id"])
    page = api(served).get(f"/runs/{first['run_id']}").text
    assert 'id="relaunch-form"' in page and 'id="relaunch-failed"' in page  # the controls of a workflow's run
    again = api(served).post(f"/api/v1/runs/{first['run_id']}/relaunch", json={})
    assert again.status_code == 202, again.text
    second = finished(served, again.json()["run_id"])
    assert second["kind"] == "action" and second["name"] == "sh disk" and second["run_id"] != first["run_id"]
    assert second["check_mode"] is True and second["ansible_options"]["limit"] == "localhost"
    failed = api(served).post(f"/api/v1/runs/{first['run_id']}/relaunch", json={"failed_hosts": True})
    assert failed.status_code == 202, failed.text
    third = finished(served, failed.json()["run_id"])
    assert third["name"] == "sh disk" and third["steps"][0]["hosts"]["localhost"]["failed"] == 1
    row = api(served, "admin").get("/api/v1/audit", params={"action": "relaunch"}).json()[0]
    assert row["target"] == first["run_id"] and row["detail"] == {"run_id": third["run_id"], "failed_hosts": True}
    assert api(served, "viewer").post(f"/api/v1/runs/{first['run_id']}/relaunch", json={}).status_code == 403


def test_relaunching_an_action_with_a_prompt_needs_confirm_and_the_form_works(served):
    r = api(served).post(ROUTE.format(ws="ops", action="careful"), json={"confirm": True})
    first = finished(served, r.json()["run_id"])
    refused = api(served).post(f"/api/v1/runs/{first['run_id']}/relaunch", json={})
    assert refused.status_code == 422 and refused.json()["prompts"][0]["message"] == "really restart it?"
    client = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "operator", "password": served.passwords["operator"],
                                       "csrf": token}).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/runs/{first['run_id']}").text).group(1)
    r = client.post(f"/runs/{first['run_id']}/relaunch", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"].startswith("/runs/"), r.text
    new_id = r.headers["location"].removeprefix("/runs/")
    run = finished(served, new_id)
    assert run["name"] == "sh careful" and run["status"] == "succeeded"
