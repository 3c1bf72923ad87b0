"""The attacks of issue #26 against a real `polycrate serve` on loopback, each of which must now fail.

Runs are real `polycrate workflows run` processes (a real ansible-playbook on localhost for the template
payload); clients connect from several loopback addresses (127.0.0.2, ...) to be several machines.
"""
from __future__ import annotations

import json
import re
import threading

import httpx
import pytest

from tests.conftest import run_cli
from tests.server_fixtures import make_workspace, start_server, serve_ops_and_lab, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure")
    spool = tmp / "spool"
    spool.mkdir()
    server = serve_ops_and_lab(tmp, env={"TMPDIR": str(spool)})
    server.spool = spool  # type: ignore[attr-defined]
    yield server
    server.stop()


def api(server, role: str = "viewer", **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens[role]}"}, timeout=60,
                        **kwargs)


def from_address(server, address: str, **kwargs) -> httpx.Client:
    """A client whose connections come from `address` (another loopback address: another machine, to the server)."""
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=60, **kwargs)


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": user, "password": password, "csrf": token})


def finished(client: httpx.Client, run_id: str) -> dict:
    return wait_for(lambda: (lambda r: r if r["status"] != "running" else None)(client.get(f"/api/v1/runs/{run_id}").json()),
                    what=f"run {run_id}")


def log_of(client: httpx.Client, run_id: str) -> str:
    return "\n".join(s["log"] for s in client.get(f"/api/v1/runs/{run_id}/log").json()["steps"])


# --- launch values are data ------------------------------------------------------------------


def test_a_template_in_a_launch_value_is_never_run(served, tmp_path):
    marker = tmp_path / "pwned"
    payload = "{{ lookup('pipe','id > " + str(marker) + "') }}"
    admin = api(served, "admin")
    # the attack, as free-form extra vars (an admin's, where the workflow allows them): the
    # interpreter path carries the template
    r = admin.post("/api/v1/workspaces/ops/workflows/echo/runs",
                   json={"extra_vars": [{"ansible_python_interpreter": payload + "/usr/bin/python3"}]})
    assert r.status_code == 202, r.text
    finished(admin, r.json()["run_id"])
    # a declared variable the play prints, launched by an operator: its value is the literal text
    operator = api(served, "operator")
    r = operator.post("/api/v1/workspaces/ops/workflows/echo/runs", json={"vars": {"note": payload}})
    assert r.status_code == 202, r.text
    run = finished(operator, r.json()["run_id"])
    assert run["status"] == "succeeded", run
    assert f"note=[{payload}]" in log_of(admin, run["run_id"])
    assert not marker.exists()
    # the same in key=value form (shell-quoted, as Ansible reads key=value)
    r = admin.post("/api/v1/workspaces/ops/workflows/echo/runs", json={"extra_vars": [f'extra="{payload}"']})
    assert r.status_code == 202, r.text
    run = finished(admin, r.json()["run_id"])
    assert run["status"] == "succeeded" and not marker.exists()
    assert f"extra=[{payload}]" in log_of(admin, run["run_id"])


def test_free_form_extra_vars_are_off_unless_the_workflow_allows_them_for_admins(served):
    operator, admin = api(served, "operator"), api(served, "admin")
    off = admin.post("/api/v1/workspaces/ops/workflows/green/runs", json={"extra_vars": {"a": "1"}})
    assert off.status_code == 400 and "extra_vars" in off.json()["error"] and "off" in off.json()["error"]
    not_admin = operator.post("/api/v1/workspaces/ops/workflows/echo/runs", json={"extra_vars": {"a": "1"}})
    assert not_admin.status_code == 403 and "admins only" in not_admin.json()["error"]


@pytest.mark.parametrize("values, field", [
    ({"nope": "x"}, "vars.nope"), ({"count": 9}, "vars.count"), ({"count": "2"}, "vars.count"),
    ({"loud": "false"}, "vars.loud"), ({"target": "prod"}, "vars.target"), ({"note": 5}, "vars.note"),
])
def test_declared_launch_variables_are_checked(served, values, field):
    r = api(served, "operator").post("/api/v1/workspaces/ops/workflows/echo/runs", json={"vars": values})
    assert r.status_code == 400 and r.json()["error"].startswith(field), r.text
    green = api(served, "operator").post("/api/v1/workspaces/ops/workflows/green/runs", json={"vars": {"x": 1}})
    assert green.status_code == 400 and "declares no such launch variable" in green.json()["error"]


def test_secret_launch_values_are_masked_everywhere(served):
    secret = "Launch-S3cret-4711"
    operator = api(served, "operator")
    r = operator.post("/api/v1/workspaces/ops/workflows/echo/runs",
                      json={"vars": {"note": "visible note", "password": secret, "count": 3, "loud": True,
                                     "target": "production"}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    run = finished(operator, run_id)
    assert run["status"] == "succeeded"
    admin = api(served, "admin")
    log = log_of(admin, run_id)
    assert "note=[visible note] password=[********] count=[3] loud=[True] target=[production]" in log
    for client in (api(served), admin):
        for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/log", "/api/v1/overview"):
            assert secret not in client.get(path).text, path
    assert secret not in admin.get("/api/v1/audit", params={"limit": "1000"}).text
    launch = next(a for a in admin.get("/api/v1/audit", params={"action": "launch"}).json()
                  if a["detail"].get("run_id") == run_id)
    assert launch["detail"]["parameters"] == {"count": 3, "loud": True, "note": "visible note", "password": "********",
                                              "target": "production"}
    session = httpx.Client(base_url=served.url, timeout=60)
    assert login(session, "viewer", served.passwords["viewer"]).status_code == 303
    page = session.get(f"/runs/{run_id}").text
    assert secret not in page and "note=visible note" in page and "password=********" in page
    stores = [p for ws in served.workspaces for p in ws.rglob("*") if p.is_file() and ".polycrate" in p.parts]
    stores += list(served.state.glob("server.db*"))
    assert stores and not any(secret.encode() in p.read_bytes() for p in stores)


def test_a_launch_refused_for_what_it_asks_is_audited(served):
    """An operator's `@/etc/shadow` in a limit, free-form extra vars, a value out of bounds: each refused launch
    is in the audit log (who, what, why), as a launch refused by the workflow's lock is; a secret never."""
    secret = "Refused-S3cret-99"
    operator, admin = api(served, "operator"), api(served, "admin")
    tries = [("workflows/echo", {"limit": "localhost,@/etc/shadow"}, "limit: '@'"),
             ("workflows/echo", {"extra_vars": {"a": "{{ lookup('pipe','id') }}"}}, "extra_vars: workflow 'echo' takes"),
             ("workflows/echo", {"vars": {"count": 9, "password": secret}}, "vars.count: "),
             ("workflows/green", {"vars": {"x": 1}}, "vars.x: "),
             ("blocks/sh/actions/ok", {"limit": "@/etc/passwd"}, "limit: '@'")]
    for route, body, _ in tries:
        assert operator.post(f"/api/v1/workspaces/ops/{route}/runs", json=body).status_code in (400, 403)
    session = httpx.Client(base_url=served.url, timeout=60)
    assert login(session, "operator", served.passwords["operator"]).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/account").text).group(1)
    form = session.post("/workspaces/ops/workflows/echo/launch", data={"csrf": csrf, "limit": "@/etc/group"})
    assert form.status_code == 400
    rows = admin.get("/api/v1/audit", params={"outcome": "refused", "limit": "1000"}).json()
    for route, _, reason in tries:
        target = "ops/" + route.removeprefix("workflows/").replace("blocks/", "").replace("/actions", "")
        assert any(r["target"] == target and r["actor"] == "token:operator-token" and reason in r["outcome"]
                   for r in rows), (target, reason)
    assert any(r["actor"] == "operator" and r["action"] == "launch" and r["target"] == "ops/echo"
               and "limit: '@'" in r["outcome"] for r in rows)
    assert secret not in json.dumps(admin.get("/api/v1/audit", params={"limit": "1000"}).json())


def test_a_refused_launch_form_never_writes_a_secret_back(served):
    """The page a refused launch form answers with holds the values typed, but not a secret launch variable's
    nor free-form extra vars (an admin's `db_password=...`): those are typed again."""
    session = httpx.Client(base_url=served.url, timeout=60)
    assert login(session, "admin", served.passwords["admin"]).status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/account").text).group(1)
    page = session.post("/workspaces/ops/workflows/echo/launch", data={
        "csrf": csrf, "var-note": "typed note", "var-password": "Form-Secret-31", "var-count": "9",
        "extra_vars": "db_password=Extra-Secret-32"})
    assert page.status_code == 400 and 'id="message">vars.count: ' in page.text
    assert 'value="typed note"' in page.text and 'value="9"' in page.text
    assert "Form-Secret-31" not in page.text and "Extra-Secret-32" not in page.text


def test_the_terminal_keeps_ansibles_meaning_of_extra_vars(served, tmp_path):
    """Whoever types --extra-vars is a user of the host already: there a template is a template."""
    r = run_cli("-w", str(served.workspaces[0]), "workflows", "run", "echo", "--extra-vars", 'note="{{ 6 * 7 }}"')
    assert r.returncode == 0, r.output
    assert "note=[42]" in r.output


@pytest.mark.parametrize("limit", ["@/etc/shadow", "localhost,@/etc/shadow", "localhost:@/etc/shadow",
                                   "localhost, @/etc/shadow", "localhost,/etc/shadow", "local\x00host", "x" * 60_000])
def test_a_limit_with_a_file_or_a_path_is_refused(served, limit):
    r = api(served, "operator").post("/api/v1/workspaces/ops/workflows/echo/runs", json={"limit": limit})
    assert r.status_code == 400, r.text
    assert "etc" not in r.json()["error"] or "@" in r.json()["error"] or "path" in r.json()["error"]


def test_a_limit_of_host_patterns_runs(served):
    client = api(served, "operator")
    r = client.post("/api/v1/workspaces/ops/workflows/echo/runs", json={"limit": "localhost,!db*"})
    assert r.status_code == 202, r.text
    run = finished(client, r.json()["run_id"])
    assert run["ansible_options"]["limit"] == "localhost,!db*" and run["status"] == "succeeded"


def test_values_typed_at_the_terminal_are_not_shown_to_viewers(served):
    ops = served.workspaces[0]
    r = run_cli("-w", str(ops), "workflows", "run", "echo", "--extra-vars", "db_password=hunter2-Terminal")
    assert r.returncode == 0, r.output
    viewer = api(served)
    runs = viewer.get("/api/v1/runs", params={"workflow": "echo"})
    assert "hunter2" not in runs.text
    run = runs.json()["runs"][0]
    assert run["ansible_options"]["extra_vars"] == ["db_password=********"]
    assert "hunter2" not in viewer.get(f"/api/v1/runs/{run['run_id']}").text
    session = httpx.Client(base_url=served.url, timeout=60)
    assert login(session, "viewer", served.passwords["viewer"]).status_code == 303
    page = session.get(f"/runs/{run['run_id']}")
    assert page.status_code == 200 and "hunter2" not in page.text


def test_values_launched_over_http_are_not_shown_to_viewers(served):
    client = api(served, "operator")
    r = api(served, "admin").post("/api/v1/workspaces/ops/workflows/echo/runs",
                                  json={"extra_vars": {"api_key": "k3y-Over-Http"}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    finished(client, run_id)
    viewer = api(served)
    for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/log"):
        assert "k3y-Over-Http" not in viewer.get(path).text, path
    audit = api(served, "admin").get("/api/v1/audit", params={"action": "launch"}).json()
    launch = next(a for a in audit if a["detail"].get("run_id") == run_id)
    assert launch["detail"]["extra_vars"] == ["api_key"] and "k3y-Over-Http" not in json.dumps(audit)


# --- sizes and types -------------------------------------------------------------------------


def test_a_100_mb_anonymous_upload_is_refused_and_leaves_no_temporary_file(served):
    sent = 0

    def body():
        nonlocal sent
        yield b"--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            sent += len(chunk)
            yield chunk
        yield b"\r\n--xyz--\r\n"

    for path in ("/api/v1/workspaces/ops/workflows/green/runs", "/login", "/logout"):
        try:
            r = httpx.post(served.url + path, content=body(), timeout=60,
                           headers={"Content-Type": "multipart/form-data; boundary=xyz"})
            assert r.status_code in (413, 415), (path, r.status_code)
        except httpx.HTTPError:
            pass  # the server answered and closed while the client still sent: refused all the same
        assert list(served.spool.iterdir()) == [], path
    # declared too large: refused before a byte is read, also for a logged-in operator
    big = api(served, "operator").post("/api/v1/workspaces/ops/workflows/green/runs",
                                       content=b"{" + b" " * (20 << 20) + b"}",
                                       headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert list(served.spool.iterdir()) == []


BAD_BODIES = [
    {"limit": 5}, {"limit": ["localhost"]}, {"step": ["backup"]}, {"extra_vars": 5}, {"limit": "local\x00host"},
    {"confirm": "false"}, {"check": "no"}, {"check": "true"}, {"resume": 1}, {"tags": {"a": 1}},
    {"extra_vars": {"x": json.loads("[" * 30 + "]" * 30)}}, [1, 2], "text", 5, None,
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_wrongly_typed_launches_get_400_and_nothing_runs(served, body):
    client = api(served, "operator")
    before = len(client.get("/api/v1/runs", params={"workspace": "ops", "limit": "1000"}).json()["runs"])
    r = client.post("/api/v1/workspaces/ops/workflows/green/runs", content=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (body, r.status_code, r.text)
    assert r.json()["error"]
    assert len(client.get("/api/v1/runs", params={"workspace": "ops", "limit": "1000"}).json()["runs"]) == before


def test_deep_nesting_and_odd_query_strings_get_400(served):
    client = api(served, "operator")
    deep = client.post("/api/v1/workspaces/ops/workflows/green/runs", content=b"[" * 50_000 + b"]" * 50_000,
                       headers={"Content-Type": "application/json"})
    assert deep.status_code in (400, 413)
    for query in ({"limit": "²"}, {"limit": "-1"}, {"limit": "9" * 40}, {"since": "nan"}, {"since": "1e308"},
                  {"until": "9999-99-99"}, {"status": "x\x00"}):
        assert client.get("/api/v1/runs", params=query).status_code == 400, query
    assert api(served, "admin").get("/api/v1/audit", params={"before": "²"}).status_code == 400


# --- the audit log ---------------------------------------------------------------------------


def test_anonymous_failures_are_rate_limited_before_they_are_written(served):
    client = from_address(served, "127.0.0.9")
    admin = api(served, "admin")
    before = len(admin.get("/api/v1/audit", params={"limit": "1000", "action": "login"}).json())
    answers = [client.post("/login", data={"username": f"nobody{i}", "password": "x"}).status_code for i in range(220)]
    assert set(answers) == {403}  # no CSRF token: refused before any password check
    after = admin.get("/api/v1/audit", params={"limit": "1000", "action": "login"}).json()
    assert len(after) - before <= 10, len(after) - before


def test_user_names_in_the_audit_are_bounded_and_escaped(served):
    client = from_address(served, "127.0.0.10")
    long_name = "a" * 60_000  # the body limit (64 KiB) refuses the 900,000 characters of the issue outright
    assert login(client, long_name, "x").status_code == 401
    assert client.post("/login", data={"username": "a" * 900_000, "password": "x"}).status_code == 413
    assert login(client, "evil\x1b[2J\x1b]0;owned\x07", "x").status_code == 401
    rows = api(served, "admin").get("/api/v1/audit", params={"action": "login", "limit": "20"}).json()
    assert all(len(r["actor"]) < 100 for r in rows)
    shown = served.cli("server", "audit", "--limit", "20")
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "evil\\x1b[2J" in shown.stdout


def test_the_audit_pages_and_filters(served):
    admin = api(served, "admin")
    first = admin.get("/api/v1/audit", params={"limit": "3"})
    assert len(first.json()) == 3 and 'rel="next"' in first.headers["link"]
    older = first.headers["link"].split(";")[0].strip("<>")
    second = admin.get(older).json()
    assert second and max(r["id"] for r in second) < min(r["id"] for r in first.json())
    assert {r["action"] for r in admin.get("/api/v1/audit", params={"action": "launch"}).json()} == {"launch"}
    r = served.cli("server", "audit", "--action", "launch", "-o", "json")
    assert {e["action"] for e in json.loads(r.stdout)["entries"]} == {"launch"}


# --- logins ----------------------------------------------------------------------------------


def test_wrong_passwords_from_one_address_do_not_lock_the_owner_out(served):
    attacker = from_address(served, "127.0.0.2")
    for _ in range(5):
        assert login(attacker, "admin", "wrong-password").status_code == 401
    assert login(attacker, "admin", served.passwords["admin"]).status_code == 429  # that address waits
    owner = from_address(served, "127.0.0.3")
    assert login(owner, "admin", served.passwords["admin"]).status_code == 303  # the owner does not


def test_concurrent_wrong_logins_get_no_more_password_checks(served):
    client = from_address(served, "127.0.0.4")
    tokens = []
    for _ in range(18):
        tokens.append(re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1))
    cookie = client.cookies.get("pc_login")
    answers: list[int] = []

    def attempt(token: str) -> None:
        with from_address(served, "127.0.0.4") as c:
            c.cookies.set("pc_login", cookie, path="/login")
            answers.append(c.post("/login", data={"username": "operator", "password": "nope-nope", "csrf": cookie}).status_code)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(401) == 5 and answers.count(429) == 13, answers


def test_forwarded_for_is_believed_only_from_the_proxy(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    server = start_server(tmp_path, [ws], extra_args=("--behind-proxy", "--proxy", "127.0.0.1"))
    try:
        # a client that is not the proxy rotates X-Forwarded-For: its own address counts, and waits
        direct = from_address(server, "127.0.0.5")
        answers = []
        for i in range(7):
            token = re.search(r'name="csrf" value="([^"]+)"', direct.get("/login").text).group(1)
            answers.append(direct.post("/login", data={"username": "admin", "password": "wrong", "csrf": token},
                                       headers={"X-Forwarded-For": f"10.1.1.{i}"}).status_code)
        assert answers[:5] == [401] * 5 and answers[5:] == [429, 429]
        # through the proxy: the address the proxy added (the rightmost), not what the client wrote
        proxy = from_address(server, "127.0.0.1")
        token = re.search(r'name="csrf" value="([^"]+)"', proxy.get("/login").text).group(1)
        proxy.post("/login", data={"username": "viewer", "password": "wrong", "csrf": token},
                   headers={"X-Forwarded-For": "6.6.6.6, 10.2.3.4"})
        rows = json.loads(server.cli("server", "audit", "-o", "json", "--actor", "viewer").stdout)["entries"]
        assert rows[0]["client"] == "10.2.3.4"
        clients = {e["client"] for e in json.loads(server.cli("server", "audit", "-o", "json").stdout)["entries"]}
        assert not any(c and c.startswith("10.1.1.") for c in clients)
    finally:
        server.stop()


# --- streams, redirects, hosts ----------------------------------------------------------------


def _stream_until_end(client: httpx.Client, url: str, on_first_line) -> list[str]:
    kinds: list[str] = []
    with client.stream("GET", url, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
                if kinds.count("line") == 1 and line[7:] == "line":
                    on_first_line()
    return kinds


def test_a_live_stream_ends_when_the_session_or_token_ends(served):
    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    operator = api(served, "operator")
    run_id = operator.post("/api/v1/workspaces/ops/workflows/slow/runs", json={}).json()["run_id"]
    try:
        session = httpx.Client(base_url=served.url, timeout=60)
        assert login(session, "viewer", served.passwords["viewer"]).status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/").text).group(1)
        other = httpx.Client(base_url=served.url, timeout=60, cookies=session.cookies)
        kinds = _stream_until_end(session, f"/runs/{run_id}/log/events",
                                  lambda: other.post("/logout", data={"csrf": csrf}))
        assert kinds[-1] == "gone" and "end" not in kinds
        assert served.cli("server", "token", "add", "short-lived", "--role", "viewer").returncode == 0
        token = served.cli("server", "token", "list").stdout  # the token itself is printed once, below
        del token
        made = served.cli("server", "token", "add", "short-lived2", "--role", "viewer")
        secret = made.stdout.strip().splitlines()[-1]
        client = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60)
        kinds = _stream_until_end(client, f"/api/v1/runs/{run_id}/log/events",
                                  lambda: served.cli("server", "token", "remove", "short-lived2"))
        assert kinds[-1] == "gone"
    finally:
        (ops / "gate").touch()
        (ops / "gate2").touch()
        finished(operator, run_id)


def test_the_trailing_slash_redirect_never_names_the_host(served):
    client = api(served)
    r = client.get("/runs/", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/runs"
    r = client.get(served.url + "//evil.example/", follow_redirects=False)
    assert r.headers["location"] == "/evil.example"
    r = client.get("/runs/?status=failed", follow_redirects=False)
    assert r.headers["location"] == "/runs?status=failed"


def test_an_unknown_host_name_is_refused(served):
    client = api(served)
    assert client.get("/api/v1/runs", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/v1/runs", headers={"Host": f"localhost:{served.url.rsplit(':', 1)[1]}"}).status_code == 200


def test_a_browser_refused_before_any_route_gets_the_sites_error_page_and_an_api_client_json(served):
    """A body too large (413), a file upload (415) and a Host name this server does not answer to (400) were
    answered with the API's JSON document also to a browser asking for a page: now the site's error page (a
    heading in words, the message, a way back); for the unknown Host without who is logged in (another site's
    script can read that answer). An API client, and anything outside Accept: text/html, gets JSON as before."""
    page = {"Accept": "text/html,application/xhtml+xml"}
    browser = from_address(served, "127.0.0.11", headers=page)
    assert login(browser, "operator", served.passwords["operator"]).status_code in (200, 303)
    big = browser.post("/login", data={"username": "a" * 900_000, "password": "x"})
    assert big.status_code == 413 and big.headers["content-type"].startswith("text/html"), big.text[:300]
    assert '<h1 id="error-heading">Too much sent at once</h1>' in big.text
    assert "the request body is larger than" in big.text and 'id="back"' in big.text and "operator" in big.text
    assert big.headers["x-frame-options"] == "DENY"
    upload = browser.post("/login", content=b"--xyz\r\n\r\nx\r\n--xyz--\r\n",
                          headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert upload.status_code == 415 and '<h1 id="error-heading">Not what this page takes</h1>' in upload.text
    assert "no file uploads here" in upload.text
    elsewhere = browser.get("/", headers={"Host": "evil.example"})
    assert elsewhere.status_code == 400 and elsewhere.headers["content-type"].startswith("text/html")
    assert "does not answer to that Host name" in elsewhere.text and 'id="error-heading"' in elsewhere.text
    assert "operator" not in elsewhere.text and 'name="csrf"' not in elsewhere.text
    # API clients: the error document, as before
    client = api(served, "operator")
    for answer, status in ((client.post("/api/v1/workspaces/ops/workflows/green/runs", content=b"{" + b" " * (1 << 20)
                                        + b"}", headers={"Content-Type": "application/json", **page}), 413),
                           (client.get("/api/v1/runs", headers={"Host": "evil.example", **page}), 400),
                           (httpx.post(served.url + "/login", content=b"x", timeout=60,
                                       headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 415)):
        assert answer.status_code == status and set(answer.json()) == {"error"}, (status, answer.text[:200])


# --- workspaces granted ------------------------------------------------------------------------


def test_a_user_granted_one_workspace_sees_and_finds_only_its_runs(served):
    cli = served.cli
    assert cli("server", "user", "add", "lab-only", "--role", "none", "--password-stdin",
               input="lab-only-password\n").returncode == 0
    assert cli("server", "grant", "add", "lab-only", "lab", "--role", "operator").returncode == 0
    admin = api(served, "admin")
    ops_run = admin.get("/api/v1/runs", params={"workspace": "ops"}).json()["runs"][0]["run_id"]
    lab_run = admin.get("/api/v1/runs", params={"workspace": "lab"}).json()["runs"][0]["run_id"]
    assert admin.get(f"/api/v1/runs/{lab_run[:-2]}").status_code == 200  # who sees everything may give a prefix
    client = httpx.Client(base_url=served.url, timeout=60)
    assert login(client, "lab-only", "lab-only-password").status_code == 303
    listed = client.get("/api/v1/runs").json()["runs"]
    assert listed and {r["workspace"] for r in listed} == {"lab"}
    assert {r["workspace"] for r in client.get("/api/v1/overview").json()} == {"lab"}
    assert client.get(f"/api/v1/runs/{ops_run}").status_code == 404
    assert client.get(f"/runs/{ops_run}").status_code == 404
    assert client.get(f"/api/v1/runs/{ops_run}/log").status_code == 404
    assert client.get(f"/api/v1/runs/{ops_run}/log/events").status_code == 404
    assert client.get(f"/api/v1/runs/{lab_run}").status_code == 200
    assert client.get(f"/api/v1/runs/{lab_run[:-1]}").status_code == 404  # no prefixes
    assert client.get("/api/v1/runs/latest").status_code == 404
    assert client.get("/api/v1/runs", params={"workspace": "ops"}).status_code == 404
    assert client.get("/workspaces/ops/workflows/green").status_code == 404
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    assert client.post("/api/v1/workspaces/ops/workflows/green/runs", json={},
                       headers={"X-CSRF-Token": csrf}).status_code == 404
    assert client.post(f"/api/v1/runs/{ops_run}/stop", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert client.get("/api/v1/audit").status_code == 403
    launched = client.post("/api/v1/workspaces/lab/workflows/green/runs", json={}, headers={"X-CSRF-Token": csrf})
    assert launched.status_code == 202, launched.text
    finished(client, launched.json()["run_id"])
    page = client.get("/").text
    assert "ops" not in re.sub(r"<[^>]+>", " ", page).split()


# --- controls a team expects -------------------------------------------------------------------


def test_relaunch_reuses_the_values_and_can_take_the_failed_hosts_only(served):
    operator = api(served, "operator")
    r = operator.post("/api/v1/workspaces/ops/workflows/echo/runs",
                      json={"vars": {"note": "again", "password": "Relaunch-S3cret-1", "count": 2}})
    assert r.status_code == 202, r.text
    first = finished(operator, r.json()["run_id"])
    again = operator.post(f"/api/v1/runs/{first['run_id']}/relaunch", json={})
    assert again.status_code == 202, again.text
    run = finished(operator, again.json()["run_id"])
    assert run["run_id"] != first["run_id"] and run["status"] == "succeeded"
    assert "note=[again] password=[********] count=[2]" in log_of(api(served, "admin"), run["run_id"])
    failed = operator.get("/api/v1/runs", params={"workspace": "ops", "status": "failed", "workflow": "nightly"}
                          ).json()["runs"][-1]
    r = operator.post(f"/api/v1/runs/{failed['run_id']}/relaunch", json={"failed_hosts": True})
    assert r.status_code == 202, r.text
    run = finished(operator, r.json()["run_id"])
    assert run["ansible_options"]["limit"] == "localhost" and run["steps"][1]["hosts"]["localhost"]["failed"] == 1
    nothing = operator.post(f"/api/v1/runs/{first['run_id']}/relaunch", json={"failed_hosts": True})
    assert nothing.status_code == 409 and "no failed" in nothing.json()["error"]
    assert operator.post(f"/api/v1/runs/{first['run_id']}/relaunch", json={"failed_hosts": "yes"}).status_code == 400
    assert api(served).post(f"/api/v1/runs/{first['run_id']}/relaunch", json={}).status_code == 403


def test_a_big_log_is_paged_with_a_raw_download(served):
    operator = api(served, "operator")
    run_id = operator.post("/api/v1/workspaces/ops/workflows/big/runs", json={}).json()["run_id"]
    assert finished(operator, run_id)["status"] == "succeeded"
    session = httpx.Client(base_url=served.url, timeout=60)
    assert login(session, "viewer", served.passwords["viewer"]).status_code == 303
    page = session.get(f"/runs/{run_id}")
    assert page.status_code == 200 and len(page.content) < 400_000, len(page.content)
    assert "the last line" in page.text and "the first line" not in page.text and "are not shown" in page.text
    more = session.get(f"/runs/{run_id}", params={"tail": str(4_000_000)})
    assert "the first line" in more.text and "are not shown" not in more.text
    raw = session.get(f"/runs/{run_id}/log/raw")
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.text.startswith("==> print\n") and raw.text.count("\n") > 30_000
    assert raw.text.rstrip().endswith("the last line") and len(raw.content) > 3_000_000
    assert session.get(f"/runs/{run_id}", params={"tail": "²"}).status_code == 400
