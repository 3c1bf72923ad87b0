"""`polycrate serve`'s JSON API against a real server on loopback, over workspaces whose runs were made by
real `polycrate workflows run` processes."""
from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.helpers import validate_document
from tests.server_fixtures import SECRET, apply_schedules, make_workspace, seed_runs, start_server, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    ops = make_workspace(tmp / "ops", "ops")
    lab = make_workspace(tmp / "lab", "lab")
    seed_runs(ops)
    r = run_cli("-w", str(lab), "workflows", "run", "green")
    assert r.returncode == 0, r.output
    units = apply_schedules(ops, tmp / "units")  # ops's schedules are applied, lab's are not
    server = start_server(tmp, [ops, lab], extra_args=("--schedule-dest", str(units)))
    server.units = units  # type: ignore[attr-defined]
    yield server
    server.stop()


def api(server, role: str | None = "viewer", token: str | None = None) -> httpx.Client:
    headers = {}
    if token or role:
        headers["Authorization"] = f"Bearer {token or server.tokens[role]}"
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def cli_json(root: Path, *args: str):
    r = run_cli("-w", str(root), *args, "-o", "json")
    assert r.returncode == 0, r.output
    return json.loads(r.stdout)


def wait_finished(client, run_id: str) -> dict:
    return wait_for(lambda: (lambda r: r if r["status"] != "running" else None)(client.get(f"/api/v1/runs/{run_id}").json()),
                    what=f"run {run_id} to finish")


def test_runs_list_has_the_cli_json_schema(served):
    ops = served.workspaces[0]
    served_doc = validate_document(api(served).get("/api/v1/runs", params={"workspace": "ops"}).json(), "runs")
    cli = cli_json(ops, "runs", "list")
    assert served_doc["schema"] == cli["schema"]
    runs, cli = served_doc["runs"], cli["runs"]
    assert [r["run_id"] for r in runs[: len(cli)]] == [r["run_id"] for r in cli]
    for mine, theirs in zip(runs, cli, strict=False):
        assert mine["workspace"] == "ops"
        assert mine == theirs  # the same run object, key for key


def test_run_and_log_have_the_cli_json_schema(served):
    ops = served.workspaces[0]
    failed = api(served).get("/api/v1/runs", params={"workspace": "ops", "status": "failed"}).json()["runs"][0]
    run = validate_document(api(served).get(f"/api/v1/runs/{failed['run_id']}").json(), "run")
    assert run["workspace"] == "ops"
    assert run == cli_json(ops, "runs", "show", failed["run_id"])
    assert run["failed_task"] == "check free disk space" and run["failed_host"] == "localhost"
    assert "disk /var is full on purpose" in run["message"]
    assert run["steps"][1]["hosts"]["localhost"]["failed"] == 1
    log = validate_document(api(served).get(f"/api/v1/runs/{failed['run_id']}/log").json(), "run-logs")
    assert log == cli_json(ops, "runs", "logs", failed["run_id"])
    assert "hello from backup" in log["steps"][0]["log"]


def test_filters_and_all_workspaces(served):
    client = api(served)
    every = client.get("/api/v1/runs").json()["runs"]
    assert {r["workspace"] for r in every} == {"ops", "lab"}
    assert [r["started"] for r in every] == sorted((r["started"] for r in every), reverse=True)
    failed = client.get("/api/v1/runs", params={"status": "failed"}).json()["runs"]
    assert failed and all(r["status"] == "failed" for r in failed)
    green = client.get("/api/v1/runs", params={"workflow": "green"}).json()["runs"]
    assert {r["workspace"] for r in green} == {"ops", "lab"} and all(r["name"] == "green" for r in green)
    assert client.get("/api/v1/runs", params={"since": str(time.time() + 60)}).json()["runs"] == []
    assert len(client.get("/api/v1/runs", params={"limit": "1"}).json()["runs"]) == 1
    assert client.get("/api/v1/runs", params={"until": "2000-01-01"}).json()["runs"] == []
    assert len(client.get("/api/v1/runs", params={"since": "1d"}).json()["runs"]) == len(every)
    # the next page: `until` is the last run's `started`, as the JSON gives it (ISO 8601 UTC)
    older = client.get("/api/v1/runs", params={"until": every[0]["started"]}).json()["runs"]
    assert [r["run_id"] for r in older] == [r["run_id"] for r in every[1:]]
    assert client.get("/api/v1/runs", params={"since": "yesterday"}).status_code == 400
    bad = client.get("/api/v1/runs", params={"status": "bogus"})
    assert bad.status_code == 400 and "unknown status" in bad.json()["error"]
    assert client.get("/api/v1/runs", params={"workspace": "nope"}).status_code == 404
    assert client.get("/api/v1/runs/zzzz-no-such-run").status_code == 404


def test_anonymous_401_wrong_token_401_viewer_403(served):
    anonymous = httpx.get(served.url + "/api/v1/runs")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = api(served, token="pcs_" + "x" * 43).get("/api/v1/runs")
    assert wrong.status_code == 401 and "invalid" in wrong.json()["error"]
    assert api(served, token=served.tokens["viewer"][:-2] + "zz").get("/api/v1/runs").status_code == 401
    viewer = api(served).post("/api/v1/workspaces/ops/workflows/green/runs", json={})
    assert viewer.status_code == 403 and "viewer" in viewer.json()["error"]
    assert api(served).get("/api/v1/audit").status_code == 403
    assert api(served, "admin").get("/api/v1/audit").status_code == 200
    assert api(served).get("/api/v1/whoami").json() == {"name": "viewer-token", "role": "viewer", "via": "token"}


def test_launch_records_the_server_user_and_finishes(served):
    client = api(served, "operator")
    r = client.post("/api/v1/workspaces/ops/workflows/green/runs", json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert r.headers["location"] == f"/api/v1/runs/{run_id}"
    run = wait_finished(client, run_id)
    assert run["status"] == "succeeded" and run["exit_code"] == 0
    assert run["user"] == "web:token:operator-token"
    # the CLI sees the same run, launched by the server user
    shown = cli_json(served.workspaces[0], "runs", "show", run_id)
    assert shown["user"] == "web:token:operator-token"
    audit = api(served, "admin").get("/api/v1/audit").json()
    assert any(a["action"] == "launch" and a["detail"].get("run_id") == run_id and a["actor"] == "token:operator-token"
               for a in audit)


def test_launch_options_reach_the_run(served):
    client = api(served, "operator")
    r = client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"step": "backup"})
    assert r.status_code == 202, r.text
    run = wait_finished(client, r.json()["run_id"])
    assert run["only_step"] == "backup" and run["status"] == "succeeded" and len(run["steps"]) == 1
    r = client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"check": True})
    run = wait_finished(client, r.json()["run_id"])
    assert run["check_mode"] is True
    r = api(served, "admin").post("/api/v1/workspaces/ops/workflows/nightly/runs",
                                  json={"extra_vars": ["who=web"], "limit": "localhost"})  # free-form: admins only
    run = wait_finished(client, r.json()["run_id"])
    assert run["ansible_options"]["limit"] == "localhost"
    assert client.post("/api/v1/workspaces/ops/workflows/nightly/runs",
                       json={"extra_vars": ["who=web"]}).status_code == 403
    assert client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"step": "nope"}).status_code == 400
    for body in ({"extra_vars": ["@/etc/shadow"]}, {"limit": "@/etc/hosts"}):
        refused = client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json=body)
        assert refused.status_code == 400 and "@" in refused.json()["error"]
    bad = api(served, "admin").post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"extra_vars": ["not a pair"]})
    assert bad.status_code == 400 and "extra_vars" in bad.json()["error"]
    assert client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"bogus": 1}).status_code == 400
    assert client.post("/api/v1/workspaces/ops/workflows/missing/runs", json={}).status_code == 404


def test_a_launch_the_run_refuses_says_what_to_do_in_the_web_views_words(served):
    """A launch whose run refused to start (its child `workflows run`) showed the CLI's line, advice and all:
    "--resume reuses the Ansible options of run X (none); give none, or start a new run without --resume", flags
    the web user has no way to give. Now the refusal is the same (one rule, run/opening.py) and its advice is the
    web view's: the child, launched by web:NAME, says its error with the web's hint (PolycrateError.said_to)."""
    client = api(served, "operator")
    failed = wait_finished(client, client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={}).json()["run_id"])
    assert failed["status"] == "failed"
    refused = client.post("/api/v1/workspaces/ops/workflows/nightly/runs", json={"resume": True, "limit": "localhost"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == (
        f"the run did not start: a resumed run reuses the Ansible options of run {failed['run_id']} (none); leave the "
        "host pattern, tags and values empty, or launch without resume")
    at_terminal = run_cli("-w", str(served.workspaces[0]), "workflows", "run", "nightly", "--resume", "--limit",
                          "localhost")  # the same refusal at a terminal, in its words
    assert at_terminal.returncode == 2 and at_terminal.stderr.strip() == (
        f"polycrate: error: a resumed run reuses the Ansible options of run {failed['run_id']} (none); give none "
        "with --resume, or start a new run without it")


def test_an_extramounts_folder_that_is_missing_is_said_in_each_front_ends_words(tmp_path):
    """A run refused because a folder of workspace.poly's `extramounts:` is missing said "-m/--mount: no such
    file or folder", in the web view (the launch's refusal) and in a timer's journal alike, where nobody gave
    -m/--mount. Now the refusal names the workspace file's extramounts, and what to do in each front end's
    words (PolycrateError.hints); a -m/--mount typed at the terminal is still named as such."""
    ws = make_workspace(tmp_path / "mounts", "mounts")
    missing = tmp_path / "gone" / "data"
    with open(ws / "workspace.poly", "a") as poly:
        poly.write(f"extramounts:\n  - {missing}:/data\n")
    statement = f"extramounts: no such file or folder on this machine: {missing}"
    server = start_server(tmp_path / "server", [ws])
    try:
        refused = api(server, "operator").post("/api/v1/workspaces/mounts/workflows/green/runs", json={})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == (f"the run did not start: workspace.poly: {statement}; create it on the "
                                           "server's machine, where the web view's runs run, or remove the entry")
    finally:
        server.stop()
    for launched_by in ([], ["--launched-by", "systemd:polycrate-mounts-green.service"]):
        typed = run_cli("workflows", "run", "green", *launched_by, cwd=ws)
        assert_one_line_error(typed, f"polycrate: error: workspace.poly: {statement}; create it, or remove the entry")
        assert "--mount" not in typed.stderr
    (ws / "workspace.poly").write_text((ws / "workspace.poly").read_text().split("extramounts:")[0])
    flag = run_cli("workflows", "run", "green", "-m", f"{missing}:/data", cwd=ws)
    assert_one_line_error(flag, f"polycrate: error: -m/--mount: no such file or folder on this machine: {missing}")


def test_prompts_need_confirmation(served):
    client = api(served, "operator")
    refused = client.post("/api/v1/workspaces/ops/workflows/guarded/runs", json={})
    assert refused.status_code == 422
    assert refused.json()["prompts"] == [{"who": "workflow guarded", "message": "really touch production?"}]
    ok = client.post("/api/v1/workspaces/ops/workflows/guarded/runs", json={"confirm": True})
    assert ok.status_code == 202
    assert wait_finished(client, ok.json()["run_id"])["status"] == "succeeded"


def test_lock_applies_stop_interrupts_and_a_server_restart_keeps_the_run(served):
    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    client = api(served, "operator")
    first = client.post("/api/v1/workspaces/ops/workflows/slow/runs", json={})
    assert first.status_code == 202
    run_id = first.json()["run_id"]
    second = client.post("/api/v1/workspaces/ops/workflows/slow/runs", json={})
    assert second.status_code == 409 and "already running" in second.json()["error"]
    # the CLI meets the same lock
    assert run_cli("-w", str(ops), "workflows", "run", "slow").returncode == 3

    # a restart of the server does not stop the run
    pid = client.get(f"/api/v1/runs/{run_id}").json()["pid"]
    served.restart()
    os.kill(pid, 0)  # the run's process is still alive
    client = api(served, "operator")
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
    assert api(served).post(f"/api/v1/runs/{run_id}/stop").status_code == 403
    stopped = client.post(f"/api/v1/runs/{run_id}/stop")
    assert stopped.status_code == 202, stopped.text
    run = wait_finished(client, run_id)
    assert run["status"] == "interrupted" and run["exit_code"] == 130
    # who stopped it, from the engine's first write (the step's row is the engine's alone)
    who = "interrupted by web:token:operator-token (the server's stop)"
    assert run["message"] == who and run["steps"][0]["message"] == who, run
    session, _ = _session(served, "viewer")  # its page says the step was stopped, not that it failed
    page = session.get(f"/runs/{run_id}").text
    assert "<h2>Stopped at step " in page and "Failed at step" not in page, page
    again = client.post(f"/api/v1/runs/{run_id}/stop")
    assert again.status_code == 409 and "not running" in again.json()["error"]
    audit = api(served, "admin").get("/api/v1/audit").json()
    assert any(a["action"] == "stop" and a["target"] == run_id and a["outcome"] == "ok" for a in audit)


def test_log_events_stream_a_running_run(served):
    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    client = api(served, "operator")
    run_id = client.post("/api/v1/workspaces/ops/workflows/slow/runs", json={}).json()["run_id"]
    events: list[tuple[str, dict]] = []
    with client.stream("GET", f"/api/v1/runs/{run_id}/log/events", timeout=60) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                texts = [d.get("text") for k, d in events if k == "line"]
                if "first line of the slow step" in texts and not (ops / "gate").exists():
                    (ops / "gate").touch()  # only now may the run print its second line
                if "second line after the gate" in texts and not (ops / "gate2").exists():
                    (ops / "gate2").touch()
                if kind == "end":
                    break
    texts = [d["text"] for k, d in events if k == "line"]
    assert texts.index("first line of the slow step") < texts.index("second line after the gate") < texts.index("done")
    assert events[0] == ("step", {"name": "wait", "position": 1, "status": "running"})
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"


def test_no_secret_in_any_answer(served):
    client = api(served, "admin")
    for path in ("/api/v1/runs", "/api/v1/overview", "/api/v1/blocks", "/api/v1/schedules", "/api/v1/audit"):
        body = client.get(path).text
        assert SECRET not in body, path
    for run in client.get("/api/v1/runs").json()["runs"]:
        assert SECRET not in client.get(f"/api/v1/runs/{run['run_id']}/log").text
    log = client.get("/api/v1/runs", params={"workflow": "green", "workspace": "ops"}).json()["runs"][0]
    assert "the token is ********" in client.get(f"/api/v1/runs/{log['run_id']}/log").text


def test_overview_schedules_blocks(served):
    client = api(served)
    rows = {(r["workspace"], r["workflow"]): r for r in client.get("/api/v1/overview").json()}
    green = rows[("ops", "green")]
    assert green["last_status"] == "succeeded" and green["schedule"] == "*-*-* 02:00:00"
    assert green["next_run"] > time.time() and green["overdue"] is False
    assert rows[("ops", "stale")]["overdue"] is True and rows[("ops", "stale")]["overdue_reason"] == "never succeeded"
    assert rows[("ops", "slow")]["schedule"] is None and rows[("ops", "slow")]["overdue"] is False
    schedules = client.get("/api/v1/schedules").json()
    green_s = next(s for s in schedules if s["workspace"] == "ops" and s["workflow"] == "green")
    assert len(green_s["next_runs"]) == 3
    assert all(time.localtime(t).tm_hour == 2 for t in green_s["next_runs"])
    assert green_s["applied"] == "applied" and green_s["installed_file"].endswith(".timer")
    blocks = client.get("/api/v1/blocks").json()
    ops_blocks = [{k: v for k, v in b.items() if k != "workspace"} for b in blocks if b["workspace"] == "ops"]
    assert ops_blocks == cli_json(served.workspaces[0], "blocks", "list")["blocks"]


def test_only_applied_schedules_have_a_next_run(served):
    client = api(served)
    rows = {(r["workspace"], r["workflow"]): r for r in client.get("/api/v1/overview").json()}
    lab_green = rows[("lab", "green")]  # declared in lab, never applied: no next run, not overdue
    assert lab_green["schedule"] == "*-*-* 02:00:00" and lab_green["applied"] == "not applied"
    assert lab_green["next_run"] is None and lab_green["overdue"] is False
    assert rows[("ops", "green")]["applied"] == "applied" and rows[("ops", "green")]["next_run"]
    schedules = {(s["workspace"], s["workflow"]): s for s in client.get("/api/v1/schedules").json()}
    assert schedules[("lab", "green")]["applied"] == "not applied"
    assert schedules[("lab", "green")]["installed_file"] is None
    # an installed timer with another expression than the declared one: "differs", and no next run
    timer = Path(schedules[("ops", "stale")]["installed_file"])
    original = timer.read_text()
    try:
        timer.write_text(original.replace("OnCalendar=*-*-* 03:00:00", "OnCalendar=*-*-* 04:00:00"))
        assert timer.read_text() != original
        stale = next(s for s in client.get("/api/v1/schedules").json() if s["workflow"] == "stale"
                     and s["workspace"] == "ops")
        assert stale["applied"] == "differs"
        row = next(r for r in client.get("/api/v1/overview").json() if r["workflow"] == "stale"
                   and r["workspace"] == "ops")
        assert row["applied"] == "differs" and row["next_run"] is None
    finally:
        timer.write_text(original)
    session, _ = _session(served, "viewer")
    page = session.get("/schedules").text
    assert re.search(r'data-schedule="lab/green" data-applied="not applied"', page)
    assert re.search(r'data-schedule="ops/green" data-applied="applied"', page)


def test_openapi_document(served):
    doc = httpx.get(served.url + "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/log", "/api/v1/runs/{run_id}/stop",
                 "/api/v1/workspaces/{workspace}/workflows/{workflow}/runs"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    for path, component in (("/api/v1/runs", "RunsDocument"), ("/api/v1/runs/{run_id}", "RunDocument"),
                            ("/api/v1/runs/{run_id}/log", "RunLogsDocument")):
        answer = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{component}"}, path
    # the run objects are described by the contract's own schema files, not a copy kept by hand
    from polycrate.contract import load_schema

    assert schemas["run_fields"] == json.loads(json.dumps(load_schema("common")["$defs"]["run_fields"]).replace(
        "urn:polycrate:common:v1#/$defs/", "#/components/schemas/"))
    listed = api(served).get("/api/v1/runs").json()["runs"][0]
    assert set(listed) == set(schemas["run_fields"]["required"])


def _session(server, role: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=30)
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": role, "password": server.passwords[role], "csrf": token})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain HTTP on loopback
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    return client, csrf


def test_session_post_needs_the_csrf_token(served):
    client, csrf = _session(served, "operator")
    before = len(api(served).get("/api/v1/runs", params={"workflow": "green", "workspace": "ops"}).json())
    refused = client.post("/api/v1/workspaces/ops/workflows/green/runs", json={})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    refused = client.post("/workspaces/ops/workflows/green/launch", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert len(api(served).get("/api/v1/runs", params={"workflow": "green", "workspace": "ops"}).json()) == before
    ok = client.post("/api/v1/workspaces/ops/workflows/green/runs", json={}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 202
    run = wait_finished(api(served), ok.json()["run_id"])
    assert run["user"] == "web:operator"


def test_login_is_rate_limited_and_audited(served):
    client = httpx.Client(base_url=served.url, timeout=30)

    def attempt(password: str) -> httpx.Response:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        return client.post("/login", data={"username": "admin", "password": password, "csrf": token})

    assert client.post("/login", data={"username": "admin", "password": served.passwords["admin"]}).status_code == 403
    for _ in range(5):
        assert attempt("wrong-password").status_code == 401
    blocked = attempt(served.passwords["admin"])  # the right password, too late
    assert blocked.status_code == 429 and "too many failed logins" in blocked.text
    _session(served, "viewer")  # another user from the same address still logs in
    audit = served.cli("server", "audit", "-o", "json")
    entries = json.loads(audit.stdout)["entries"]
    outcomes = [e["outcome"] for e in entries if e["action"] == "login" and e["actor"] == "admin"]
    assert outcomes.count("failed") == 5 and "refused: rate limit" in outcomes


def test_pages_answer_401_then_work_with_a_session(served):
    anonymous = httpx.get(served.url + "/runs")
    assert anonymous.status_code == 401 and 'action="/login"' in anonymous.text
    assert "script-src 'self'" in anonymous.headers["content-security-policy"]
    assert "unsafe-inline" not in anonymous.headers["content-security-policy"]
    client, _ = _session(served, "viewer")
    for path in ("/", "/runs", "/schedules", "/blocks", "/workspaces/ops/workflows/nightly", "/runs?status=failed"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "<script>" not in r.text and " on" + "click=" not in r.text
    assert client.get("/audit").status_code == 403


def test_tokens_and_users_from_the_cli(served, tmp_path):
    state = ["--state", str(tmp_path / "state")]
    r = run_cli("server", "token", "add", "ci", "--role", "operator", *state)
    assert r.returncode == 0
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("pcs_") and len(token) > 40
    stored = lambda: b"".join(p.read_bytes() for p in (tmp_path / "state").glob("server.db*"))  # noqa: E731
    assert token.encode() not in stored()
    listed = run_cli("server", "token", "list", "-o", "json", *state)
    assert json.loads(listed.stdout)["tokens"][0]["name"] == "ci" and token not in listed.output
    assert_one_line_error(run_cli("server", "token", "add", "ci", "--role", "viewer", *state), "exists")
    assert_one_line_error(run_cli("server", "user", "add", "bob", "--role", "viewer", "--password-stdin", *state,
                                  input="short\n"), "at least 8")
    r = run_cli("server", "user", "add", "bob", "--role", "viewer", "--password-stdin", *state,
                input="a-long-password\n")
    assert r.returncode == 0 and b"a-long-password" not in stored()
    assert_one_line_error(run_cli("server", "token", "remove", "nope", *state), "no token")
    assert run_cli("server", "token", "remove", "ci", *state).returncode == 0


def test_serve_refuses_open_addresses_without_tls(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    r = run_cli("serve", "--listen", "0.0.0.0:8470", "-w", str(ws), "--state", str(tmp_path / "s"))
    assert_one_line_error(r, "not a loopback address", "--behind-proxy")
    assert_one_line_error(run_cli("serve", "--listen", "nonsense", "-w", str(ws)), "HOST:PORT")
    assert_one_line_error(run_cli("serve", "-w", str(tmp_path / "missing")), "no such folder")
    assert_one_line_error(run_cli("serve", "-w", str(tmp_path), "--certfile", "x.pem"), "go together")


def test_serve_over_tls_sets_secure_cookies(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    from tests.server_fixtures import free_port, wait_port

    port = free_port()
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "polycrate", "serve", "--listen", f"127.0.0.1:{port}",
         "-w", str(ws), "--state", str(state), "--certfile", str(cert), "--keyfile", str(key)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        assert run_cli("server", "user", "add", "ann", "--role", "viewer", "--password-stdin", "--state", str(state),
                       input="ann-password-1\n").returncode == 0
        client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)), timeout=30)
        page = client.get("/login")
        assert page.headers["strict-transport-security"].startswith("max-age=")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = client.post("/login", data={"username": "ann", "password": "ann-password-1", "csrf": token})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_serve_shows_the_example_workspaces_runs(article_workspace, tmp_path):
    """The example workspace (the article's files, plays over real SSH to loopback test hosts), served."""
    result = run_cli("workflows", "run", "nightly-maintenance", cwd=article_workspace)
    assert result.returncode == 0, result.output
    server = start_server(tmp_path, [article_workspace])
    try:
        client = api(server)
        runs = client.get("/api/v1/runs").json()["runs"]
        assert [(r["workspace"], r["name"], r["status"]) for r in runs] == [
            ("acme-corp-automation", "nightly-maintenance", "succeeded")]
        run = client.get(f"/api/v1/runs/{runs[0]['run_id']}").json()
        assert [s["name"] for s in run["steps"]] == ["backup", "update", "verify"]
        assert run["steps"][0]["hosts"]["db01.acme-corp.com"]["changed"] == 1
        overview = client.get("/api/v1/overview").json()
        assert overview[0]["workflow"] == "nightly-maintenance" and overview[0]["last_status"] == "succeeded"
        assert [b["name"] for b in client.get("/api/v1/blocks").json()] == ["linux-maintenance"]
    finally:
        server.stop()


def test_login_goes_back_only_to_a_local_page(served):
    for target, expected in (("/runs?status=failed", "/runs?status=failed"), ("//evil.example", "/"),
                             ("/\\evil.example", "/"), ("https://evil.example/", "/")):
        client = httpx.Client(base_url=served.url, timeout=30)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        r = client.post("/login", data={"username": "viewer", "password": served.passwords["viewer"], "csrf": token,
                                        "next": target})
        assert r.status_code == 303 and r.headers["location"] == expected, target


def test_a_page_asked_for_without_a_session_comes_back_with_its_query_after_logging_in(served):
    client = httpx.Client(base_url=served.url, timeout=30)
    page = client.get("/runs", params={"workspace": "ops", "status": "failed"})
    assert page.status_code == 401
    assert '<input type="hidden" name="next" value="/runs?workspace=ops&amp;status=failed">' in page.text


def test_behind_a_proxy_cookies_are_secure_when_it_says_https(tmp_path):
    from tests.server_fixtures import free_port, wait_port

    ws = make_workspace(tmp_path / "ws")
    port, state = free_port(), tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "serve", "--behind-proxy", "--listen",
                             f"127.0.0.1:{port}", "-w", str(ws), "--state", str(state)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        assert run_cli("server", "user", "add", "ann", "--role", "viewer", "--password-stdin", "--state", str(state),
                       input="ann-password-1\n").returncode == 0
        # what nginx sends after terminating TLS (the proxy is on 127.0.0.1, whose headers are trusted)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert "Secure" in page.headers["set-cookie"]  # so httpx, on plain http here, would not send it back
        r = client.post("/login", data={"username": "ann", "password": "ann-password-1", "csrf": token},
                        headers={"Cookie": f"pc_login={page.cookies['pc_login']}"})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
        assert page.headers["strict-transport-security"].startswith("max-age=")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_the_error_page_links_back_to_this_sites_page_only(served):
    """The error page had a bare status-code heading and no way back. Now it has a heading in plain words and a
    link back: to the page the user came from when the Referer is this site's, else to the overview (never to
    another site, nor to the failing page itself). The API's error answers stay JSON documents."""
    viewer = api(served)
    host = httpx.URL(served.url).netloc.decode()
    cases = {f"{served.url}/runs?status=failed": ("/runs?status=failed", "Back to the page you came from"),
             "https://evil.example/phish": ("/", "Back to the overview"),
             f"http://evil.example@{host}.evil.example/x": ("/", "Back to the overview"),
             f"{served.url}/nope": ("/", "Back to the overview"),  # the failing page itself
             "": ("/", "Back to the overview")}
    for referer, (back, words) in cases.items():
        r = viewer.get("/nope", headers={"Referer": referer} if referer else {})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert '<h1 id="error-heading">Page not found</h1>' in r.text and "<h1>404</h1>" not in r.text
        assert f'<a href="{back}" id="back">{words}</a>' in r.text, (referer, r.text)
    refused = viewer.get("/audit", headers={"Referer": f"{served.url}/schedules"})  # the gate: admins only
    assert refused.status_code == 403 and '<h1 id="error-heading">Not allowed</h1>' in refused.text
    assert '<a href="/schedules" id="back">Back to the page you came from</a>' in refused.text
    for path in ("/api/v1/nope", "/api/v1/audit"):  # the API: as before
        r = viewer.get(path, headers={"Referer": f"{served.url}/runs"})
        assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}


def test_an_unknown_address_or_method_answers_in_the_servers_own_words(served):
    """No bare 'Not Found' or 'Method Not Allowed' text: a page answers with the site's error page (its
    navigation, who is logged in), the API with its JSON error document; a 405 keeps its Allow header."""
    viewer = api(served)
    for path in ("/api/v1/nope", "/api/v1/runs/x/y/z"):
        r = viewer.get(path)
        assert r.status_code == 404 and r.json() == {"error": f"no API route {path} (see /api/v1/openapi.json)"}
    r = viewer.get("/api/v1/runs/x/stop")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json() == {"error": "GET is not how /api/v1/runs/x/stop is used (it takes POST)"}
    r = viewer.get("/nope", headers={"Authorization": ""})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert '<p class="error" id="message">no page at /nope</p>' in r.text
    page = viewer.get("/logout")  # typed into the address bar
    assert page.status_code == 405 and page.headers["allow"] == "POST"
    assert "GET is not how /logout is used (it takes POST): use the page&#39;s buttons and forms" in page.text
    assert '<span id="whoami">token:viewer-token (viewer)</span>' in page.text
    assert viewer.get("/static/no-such.css").status_code == 404
