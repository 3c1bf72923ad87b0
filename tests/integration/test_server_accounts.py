"""Users, roles, grants, teams and passwords over the API of a real `polycrate serve` (issue #26).

Admins manage users, grants and teams; every user changes their own password (the current one
required, CSRF as every session POST); each change is audited without a password in it.
"""
from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.server_fixtures import serve_ops_and_lab


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accounts")
    server = serve_ops_and_lab(tmp)
    yield server
    server.stop()


def api(server, role: str | None = "admin") -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.tokens[role]}"} if role else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def session(server, user: str, password: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": user, "password": password, "csrf": token})
    assert r.status_code == 303, r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/account").text).group(1)
    return client, csrf


def audit_rows(server, action: str) -> list[dict]:
    return api(server).get("/api/v1/audit", params={"action": action}).json()


NEW_ROUTES = [
    ("POST", "/api/v1/users", {"name": "x-user", "role": "viewer", "password": "x-password-1"}),
    ("PATCH", "/api/v1/users/viewer", {"role": "viewer"}),
    ("DELETE", "/api/v1/users/nobody-here", None),
    ("GET", "/api/v1/grants", None),
    ("POST", "/api/v1/grants", {"principal": "viewer", "workspace": "ops", "role": "viewer"}),
    ("DELETE", "/api/v1/grants?principal=viewer&workspace=ops", None),
    ("GET", "/api/v1/teams", None),
    ("POST", "/api/v1/teams", {"name": "x-team"}),
    ("DELETE", "/api/v1/teams/x-team", None),
    ("POST", "/api/v1/teams/x-team/members", {"user": "viewer"}),
    ("DELETE", "/api/v1/teams/x-team/members?user=viewer", None),
]


@pytest.mark.parametrize(("method", "path", "body"), NEW_ROUTES, ids=[f"{m} {p}" for m, p, _ in NEW_ROUTES])
def test_only_admins_manage_users_grants_and_teams(served, method, path, body):
    for role, status in ((None, 401), ("viewer", 403), ("operator", 403)):
        r = api(served, role).request(method, path, json=body)
        assert r.status_code == status, (role, r.text)
    # a user with no role and no grant: refused too (403: these routes are not in a workspace)
    if not any(u["name"] == "bare" for u in api(served).get("/api/v1/users").json()):
        assert api(served).post("/api/v1/users", json={"name": "bare", "role": "none",
                                                       "password": "bare-password-1"}).status_code == 201
    client, csrf = session(served, "bare", "bare-password-1")
    assert client.request(method, path, json=body, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert api(served, "admin").request(method, path, json=body).status_code < 500


def test_an_admin_adds_changes_and_removes_a_user(served):
    admin = api(served)
    r = admin.post("/api/v1/users", json={"name": "carol", "role": "viewer", "password": "carol-first-pw"})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/users", json={"name": "carol", "role": "viewer",
                                             "password": "carol-first-pw"}).status_code == 400  # exists
    assert admin.post("/api/v1/users", json={"name": "dave", "role": "root", "password": "x" * 9}).status_code == 400
    assert admin.post("/api/v1/users", json={"name": "dave", "role": "viewer", "password": "short"}).status_code == 400
    assert admin.post("/api/v1/users", json={"name": "dave", "role": 5, "password": "x" * 9}).status_code == 400
    carol, _ = session(served, "carol", "carol-first-pw")
    assert carol.get("/api/v1/whoami").json()["role"] == "viewer"
    assert admin.patch("/api/v1/users/carol", json={"role": "operator"}).status_code == 200
    assert carol.get("/api/v1/whoami").json()["role"] == "operator"  # the session reads the role anew
    assert admin.patch("/api/v1/users/carol", json={"password": "carol-second-pw"}).status_code == 200
    assert carol.get("/api/v1/whoami").status_code == 401  # a new password ends her sessions
    session(served, "carol", "carol-second-pw")
    assert admin.patch("/api/v1/users/nobody", json={"role": "viewer"}).status_code == 404
    assert admin.patch("/api/v1/users/carol", json={}).status_code == 400
    assert admin.delete("/api/v1/users/carol").status_code == 204
    assert admin.delete("/api/v1/users/carol").status_code == 404
    assert "carol" not in {u["name"] for u in admin.get("/api/v1/users").json()}
    rows = audit_rows(served, "user-password") + audit_rows(served, "user-add") + audit_rows(served, "user-role")
    mine = [r for r in rows if r["target"] == "carol"]
    assert {r["action"] for r in mine} == {"user-add", "user-role", "user-password"}
    assert all(r["actor"] == "token:admin-token" for r in mine)
    text = json.dumps(admin.get("/api/v1/audit", params={"limit": 1000}).json())
    assert "carol-first-pw" not in text and "carol-second-pw" not in text


def test_the_last_admin_is_not_demoted_or_removed(served):
    admin = api(served)
    assert {u["name"] for u in admin.get("/api/v1/users").json() if u["role"] == "admin"} == {"admin"}
    r = admin.patch("/api/v1/users/admin", json={"role": "viewer"})
    assert r.status_code == 409 and "last admin" in r.json()["error"]
    assert admin.delete("/api/v1/users/admin").status_code == 409
    assert admin.get("/api/v1/whoami").status_code == 200


def test_grants_over_the_api_decide_what_a_user_sees(served):
    admin = api(served)
    assert admin.post("/api/v1/users", json={"name": "erin", "role": "none", "password": "erin-password-1"}
                      ).status_code == 201
    erin, csrf = session(served, "erin", "erin-password-1")
    ops_run = admin.get("/api/v1/runs", params={"workspace": "ops"}).json()["runs"][0]["run_id"]
    assert erin.get("/api/v1/runs").status_code == 403  # no workspace at all
    assert erin.get(f"/api/v1/runs/{ops_run}").status_code == 404  # a run of a workspace she may not see
    lab_run = admin.get("/api/v1/runs", params={"workspace": "lab"}).json()["runs"][0]["run_id"]
    assert admin.post("/api/v1/grants", json={"principal": "erin", "workspace": "nowhere", "role": "viewer"}
                      ).status_code == 400
    assert admin.post("/api/v1/grants", json={"principal": "erin", "workspace": "ops", "role": "viewer"}
                      ).status_code == 201
    assert {r["workspace"] for r in erin.get("/api/v1/runs").json()["runs"]} == {"ops"}
    assert erin.get(f"/api/v1/runs/{ops_run}").status_code == 200
    assert erin.get(f"/api/v1/runs/{lab_run}").status_code == 404  # another workspace's run: not there for her
    assert erin.post("/api/v1/workspaces/ops/workflows/green/runs", json={},
                     headers={"X-CSRF-Token": csrf}).status_code == 403  # a viewer there
    assert erin.post("/api/v1/workspaces/lab/workflows/green/runs", json={},
                     headers={"X-CSRF-Token": csrf}).status_code == 404  # no grant there
    assert {"principal": "erin", "workspace": "ops", "role": "viewer"} in [
        {k: g[k] for k in ("principal", "workspace", "role")} for g in admin.get("/api/v1/grants").json()]
    assert admin.delete("/api/v1/grants", params={"principal": "erin", "workspace": "ops"}).status_code == 204
    assert admin.delete("/api/v1/grants", params={"principal": "erin", "workspace": "ops"}).status_code == 404
    assert admin.delete("/api/v1/grants").status_code == 400
    assert erin.get(f"/api/v1/runs/{ops_run}").status_code == 404
    assert [r["target"] for r in audit_rows(served, "grant-remove")][0] == "erin@ops"


def test_a_team_gives_its_members_its_grants(served):
    admin = api(served)
    assert admin.post("/api/v1/users", json={"name": "frank", "role": "none", "password": "frank-password-1"}
                      ).status_code == 201
    assert admin.post("/api/v1/teams", json={"name": "lab-ops"}).status_code == 201
    assert admin.post("/api/v1/teams", json={"name": "lab-ops"}).status_code == 400
    assert admin.post("/api/v1/teams/lab-ops/members", json={"user": "nobody"}).status_code == 404
    assert admin.post("/api/v1/teams/no-team/members", json={"user": "frank"}).status_code == 404
    assert admin.post("/api/v1/teams/lab-ops/members", json={"user": "frank"}).status_code == 201
    assert admin.post("/api/v1/grants", json={"principal": "team:no-team", "workspace": "lab", "role": "operator"}
                      ).status_code == 404
    assert admin.post("/api/v1/grants", json={"principal": "team:lab-ops", "workspace": "lab", "role": "operator"}
                      ).status_code == 201
    frank, csrf = session(served, "frank", "frank-password-1")
    lab_run = admin.get("/api/v1/runs", params={"workspace": "lab"}).json()["runs"][0]["run_id"]
    ops_run = admin.get("/api/v1/runs", params={"workspace": "ops"}).json()["runs"][0]["run_id"]
    assert {r["workspace"] for r in frank.get("/api/v1/runs").json()["runs"]} == {"lab"}
    assert frank.get(f"/api/v1/runs/{ops_run}").status_code == 404
    assert frank.get(f"/api/v1/runs/{lab_run}").status_code == 200
    r = frank.post("/api/v1/workspaces/lab/workflows/green/runs", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text  # an operator in lab through the team
    teams = {t["name"]: t for t in admin.get("/api/v1/teams").json()}
    assert teams["lab-ops"]["members"] == ["frank"]
    assert teams["lab-ops"]["grants"] == [{"workspace": "lab", "role": "operator"}]
    listed = served.cli("server", "team", "list")
    assert listed.returncode == 0 and "lab-ops" in listed.stdout and "lab:operator" in listed.stdout
    assert admin.delete("/api/v1/teams/lab-ops/members", params={"user": "frank"}).status_code == 204
    assert frank.get(f"/api/v1/runs/{lab_run}").status_code == 404  # out of the team: no workspace left
    assert admin.delete("/api/v1/teams/lab-ops").status_code == 204
    assert not [g for g in admin.get("/api/v1/grants").json() if g["principal"] == "team:lab-ops"]
    actions = [r["action"] for r in admin.get("/api/v1/audit", params={"limit": 1000}).json()
               if r["action"].startswith("team-")]
    assert {"team-add", "team-member-add", "team-member-remove", "team-remove"} <= set(actions)


def test_teams_from_the_cli(served):
    cli = served.cli
    assert cli("server", "team", "add", "night-shift").returncode == 0
    assert cli("server", "team", "join", "night-shift", "viewer").returncode == 0
    r = cli("server", "team", "join", "night-shift", "nobody")
    assert r.returncode != 0 and "no user 'nobody'" in r.output and "Traceback" not in r.output
    assert cli("server", "grant", "add", "team:night-shift", "lab", "--role", "operator").returncode == 0
    r = cli("server", "grant", "add", "team:no-such", "lab", "--role", "operator")
    assert r.returncode != 0 and "no team 'no-such'" in r.output
    viewer, csrf = session(served, "viewer", served.passwords["viewer"])
    # a viewer everywhere, an operator in lab through the team: launches there, not in ops
    r = viewer.post("/api/v1/workspaces/lab/workflows/green/runs", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text
    assert viewer.post("/api/v1/workspaces/ops/workflows/green/runs", json={},
                       headers={"X-CSRF-Token": csrf}).status_code == 403
    assert cli("server", "team", "leave", "night-shift", "viewer").returncode == 0
    assert viewer.post("/api/v1/workspaces/lab/workflows/green/runs", json={},
                       headers={"X-CSRF-Token": csrf}).status_code == 403
    assert cli("server", "team", "remove", "night-shift").returncode == 0
    assert "night-shift" not in cli("server", "grant", "list").stdout


def test_everyone_changes_their_own_password(served):
    admin = api(served)
    assert admin.post("/api/v1/users", json={"name": "gina", "role": "none", "password": "gina-password-1"}
                      ).status_code == 201
    gina, csrf = session(served, "gina", "gina-password-1")  # no grant at all: still her own account
    other, _ = session(served, "gina", "gina-password-1")
    assert gina.get("/account").status_code == 200
    r = gina.post("/api/v1/account/password", json={"current": "gina-password-1", "new": "gina-password-2"})
    assert r.status_code == 403 and "CSRF" in r.text  # a session POST needs the token
    r = gina.post("/api/v1/account/password", json={"current": "wrong-one-here", "new": "gina-password-2"},
                  headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    r = gina.post("/api/v1/account/password", json={"current": "gina-password-1", "new": "short"},
                  headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and "8 characters" in r.json()["error"]
    r = gina.post("/api/v1/account/password", json={"current": "gina-password-1", "new": ["x"]},
                  headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400
    r = gina.post("/api/v1/account/password", json={"current": "gina-password-1", "new": "gina-password-2"},
                  headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert gina.get("/api/v1/whoami").status_code == 200  # this session stays
    assert other.get("/api/v1/whoami").status_code == 401  # the other one ended
    session(served, "gina", "gina-password-2")
    # the form: the repetition must match
    page = gina.post("/account/password", data={"csrf": csrf, "current": "gina-password-2", "new": "gina-password-3",
                                                "again": "gina-password-x"})
    assert page.status_code == 400 and "differ" in page.text
    # a token has no password
    r = api(served, "viewer").post("/api/v1/account/password", json={"current": "a" * 8, "new": "b" * 8})
    assert r.status_code == 400 and "token" in r.json()["error"]
    rows = audit_rows(served, "password-change")
    assert [r["outcome"] for r in rows[:2]] == ["ok", "refused: wrong current password"]
    assert all(r["actor"] == "gina" for r in rows[:2])
    text = json.dumps(admin.get("/api/v1/audit", params={"limit": 1000}).json())
    assert "gina-password-2" not in text and "wrong-one-here" not in text


def test_admin_forms_answer_with_a_redirect_and_the_note_shows_once(served):
    """Post/Redirect/Get: a successful form POST answers 303 to its page, which shows the note once, so a
    refresh of the page sends nothing again; a refused form renders the page with the message."""
    admin = httpx.Client(base_url=served.url, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', admin.get("/login").text).group(1)
    assert admin.post("/login", data={"username": "admin", "password": served.passwords["admin"],
                                      "csrf": token}).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', admin.get("/admin").text).group(1)
    r = admin.post("/admin/users", data={"csrf": csrf, "name": "prg-user", "role": "viewer",
                                         "password": "prg-password-1"})
    assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
    page = admin.get("/admin")
    assert page.status_code == 200 and "user prg-user added" in page.text
    assert "user prg-user added" not in admin.get("/admin").text  # shown once: a refresh is a plain GET
    assert len([u for u in api(served).get("/api/v1/users").json() if u["name"] == "prg-user"]) == 1
    # a refused change: the form again with why, no redirect
    r = admin.post("/admin/users", data={"csrf": csrf, "name": "prg-user", "role": "viewer",
                                         "password": "prg-password-1"})
    assert r.status_code == 409 or r.status_code == 400, r.status_code
    assert 'id="message"' in r.text and "prg-user" in r.text and 'action="/admin/users"' in r.text
    # a new token: shown once on the page the redirect leads to, never again
    r = admin.post("/admin/tokens", data={"csrf": csrf, "name": "prg-token", "role": "viewer"})
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    page = admin.get("/admin")
    shown = re.search(r'<pre id="new-token">([^<]+)</pre>', page.text)
    assert shown and "no-store" in page.headers["cache-control"]
    assert httpx.get(served.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {shown.group(1)}"}
                     ).json()["name"] == "prg-token"
    assert 'id="new-token"' not in admin.get("/admin").text
    r = admin.post("/admin/tokens", data={"csrf": csrf, "name": "prg-token", "role": "viewer"})
    assert r.status_code == 400 and 'id="message"' in r.text
    # a note planted by someone else (not signed with this session's secret) is ignored
    admin.cookies.set("pc_flash", "eyJtZXNzYWdlIjogInBsYW50ZWQifQ.0000", domain="127.0.0.1", path="/admin")
    assert "planted" not in admin.get("/admin").text
    # one's own password: the account page after a redirect, too
    gina_less, gcsrf = session(served, "prg-user", "prg-password-1")
    r = gina_less.post("/account/password", data={"csrf": gcsrf, "current": "prg-password-1",
                                                  "new": "prg-password-2", "again": "prg-password-2"})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert "your password is changed" in gina_less.get("/account").text


def test_without_a_grant_a_workspaces_pages_and_api_answer_404_and_its_runs_are_in_no_list(served):
    """Not 403: a 403 would tell that the workspace or the run exists. Also for someone with no grant at all."""
    admin = api(served)
    for name in ("hana", "ivan"):
        assert admin.post("/api/v1/users", json={"name": name, "role": "none", "password": f"{name}-password-1"}
                          ).status_code == 201
    assert admin.post("/api/v1/grants", json={"principal": "hana", "workspace": "lab", "role": "operator"}
                      ).status_code == 201
    ops_run = admin.get("/api/v1/runs", params={"workspace": "ops"}).json()["runs"][0]["run_id"]
    lab_run = admin.get("/api/v1/runs", params={"workspace": "lab"}).json()["runs"][0]["run_id"]
    gets = ["/workspaces/ops/workflows/green", "/workspaces/ops/blocks/sh/actions/ok", f"/runs/{ops_run}",
            f"/runs/{ops_run}/log/raw", f"/api/v1/runs/{ops_run}", f"/api/v1/runs/{ops_run}/log",
            f"/api/v1/runs/{ops_run}/log?search=hello", f"/api/v1/runs/{ops_run}/log/events"]
    posts = ["/api/v1/workspaces/ops/workflows/green/runs", "/api/v1/workspaces/ops/blocks/sh/actions/ok/runs",
             f"/api/v1/runs/{ops_run}/stop", f"/api/v1/runs/{ops_run}/relaunch"]
    for name in ("hana", "ivan"):  # an operator in lab only; no grant at all
        client, csrf = session(served, name, f"{name}-password-1")
        for path in gets:
            r = client.get(path)
            assert r.status_code == 404, (name, path, r.status_code)
        for path in posts:
            r = client.post(path, json={}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 404, (name, path, r.status_code, r.text)
    hana, _ = session(served, "hana", "hana-password-1")
    assert {r["workspace"] for r in hana.get("/api/v1/runs").json()["runs"]} == {"lab"}
    assert ops_run not in hana.get("/runs").text and lab_run in hana.get("/runs").text
    assert hana.get("/api/v1/runs", params={"workspace": "ops"}).status_code == 404
    assert ops_run not in json.dumps(hana.get("/api/v1/overview").json())
    assert hana.get(f"/api/v1/runs/{lab_run}").status_code == 200


def test_a_refusal_names_the_role_held_in_plain_words(served):
    """A user that exists is not added again, and the answer names the web's ways to change it. 403 says which role one has and which is needed ("has the operator role", never "is a operator"), and a
    user with no role anywhere is told how to get one (a grant), on the pages and in the API."""
    admin = api(served)
    assert admin.post("/api/v1/users", json={"name": "nell", "role": "none", "password": "nell-password-1"}
                      ).status_code == 201
    again = admin.post("/api/v1/users", json={"name": "nell", "role": "viewer", "password": "nell-password-2"})
    assert again.status_code == 400 and again.json()["error"] == (  # the CLI's --replace means nothing here
        "user 'nell' exists: set its role or password instead (its row on the users page; PATCH /api/v1/users/nell)")
    nell, _ = session(served, "nell", "nell-password-1")
    for answer in (nell.get("/api/v1/overview").json()["error"], nell.get("/").text):
        assert "nell has no role in any workspace yet" in answer and "server grant add nell WORKSPACE" in answer
    assert api(served, "operator").get("/api/v1/audit").json()["error"] == (
        "token:operator-token has the operator role here; this needs the admin role")
    assert api(served, "viewer").post("/api/v1/workspaces/ops/workflows/green/runs", json={}).json()["error"] == (
        "token:viewer-token has the viewer role in ops; this needs the operator role")
    assert admin.post("/api/v1/grants", json={"principal": "nell", "workspace": "lab", "role": "viewer"}
                      ).status_code == 201
    assert nell.get("/api/v1/audit").json()["error"] == "nell has no role here; this needs the admin role"
