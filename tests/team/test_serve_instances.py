"""Two `polycrate serve` processes on two ports with one backend are interchangeable (issue #25, stateless servers):
a session made by logging in on one works on the other, users and the audit are one, a logout on one ends the
session on both; a launch on one goes through the queue to a real `polycrate worker`, shows running on the other,
and its log arrives there live; a second launch is refused naming the run and its worker; a stop from a server
ends the run on its worker.

No timed assertions: every wait polls with a generous deadline; the stop's time is printed, not asserted."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.server_fixtures import Server, _spawn, make_workspace, start_server, wait_for, wait_port
from tests.team.conftest import committed

pytestmark = pytest.mark.team

DEADLINE = 180.0  # seconds a wait may take on this shared machine before the test fails


def _second_server(first: Server, tmp: Path) -> Server:
    """Another `polycrate serve` over the same workspaces and backend, on its own port and state folder."""
    port = free_port()
    argv = list(first.argv)
    argv[argv.index("--listen") + 1] = f"127.0.0.1:{port}"
    argv[argv.index("--state") + 1] = str(tmp / "server-state")
    proc = _spawn(argv)
    wait_port(port, proc)
    return Server(f"http://127.0.0.1:{port}", tmp / "server-state", first.workspaces, proc, argv,
                  dict(first.tokens), dict(first.passwords))


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    """Through the real login form: its page sets the form's CSRF cookie and field."""
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"username": user, "password": password, "csrf": token})


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def run_doc(client: httpx.Client, run_id: str) -> dict | None:
    r = client.get(f"/api/v1/runs/{run_id}")
    return r.json() if r.status_code == 200 else None


def test_two_servers_one_backend_are_interchangeable(team_env, tmp_path, monkeypatch, serve_worker):
    for key, value in team_env.items():  # both servers, their launches and the CLI: this host's backend setting
        monkeypatch.setenv(key, value)
    worker_name, worker_proc = serve_worker
    ops = committed(make_workspace(tmp_path / "ops", "ops"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(tmp_path / "a", [ops])  # its users and tokens made by the CLI (`server user add`, ...)
    b = _second_server(a, tmp_path / "b")
    try:
        # the CLI wrote the users and tokens to the backend, not to a's state folder: b knows them as well
        assert not (a.state / "server.db").exists() and not (b.state / "server.db").exists()
        for server in (a, b):
            who = httpx.get(f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {a.tokens['viewer']}"})
            assert who.json() == {"name": "viewer-token", "role": "viewer", "via": "token"}

        # log in through a's login form; the cookie works on b
        on_a = httpx.Client(base_url=a.url, timeout=60)
        assert login(on_a, "operator", a.passwords["operator"]).status_code == 303
        cookie = on_a.cookies["pc_session"]
        on_b = httpx.Client(base_url=b.url, cookies={"pc_session": cookie}, timeout=60)
        assert on_b.get("/api/v1/whoami").json() == {"name": "operator", "role": "operator", "via": "session"}
        assert csrf_of(on_b) == csrf_of(on_a)  # one session, one CSRF token, whichever server renders the page

        # a launch on a (its launch form, the session's CSRF token) goes through the queue to the worker
        launched = on_a.post("/workspaces/ops/workflows/slow/launch",
                             data={"csrf": csrf_of(on_a, "/workspaces/ops/workflows/slow")})
        assert launched.status_code == 303, launched.text
        run_id = launched.headers["location"].rsplit("/", 1)[1]
        running = wait_for(lambda: (lambda d: d if d and d["status"] == "running" else None)(run_doc(on_b, run_id)),
                           DEADLINE, "b to show the run launched on a as running")
        assert running["user"] == "web:operator" and running["workspace"] == "ops"
        page = on_b.get(f"/runs/{run_id}")
        assert page.status_code == 200 and run_id in page.text and 'id="stop"' in page.text
        from polycrate.history.postgres import connect

        db = connect(team_env["POLYCRATE_BACKEND"])
        try:
            row = db.execute("SELECT worker, launched_by, queue FROM team_runs WHERE id = %s", (run_id,)).fetchone()
        finally:
            db.close()
        assert row == {"worker": worker_name, "launched_by": "web:operator", "queue": "default"}

        # b's live log (the run page's event stream) shows the step's lines as the worker writes them
        texts: list[str] = []
        ended: dict = {}
        with on_b.stream("GET", f"/runs/{run_id}/log/events") as stream:
            assert stream.status_code == 200
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "line":
                    texts.append(json.loads(line.removeprefix("data: "))["text"])
                    if texts[-1] == "first line of the slow step":
                        assert "second line after the gate" not in texts  # live: the run waits at its gate
                        (ops / "gate").touch()
                        (ops / "gate2").touch()
                elif line.startswith("data: ") and event == "end":
                    ended = json.loads(line.removeprefix("data: "))
                    break
        assert "first line of the slow step" in texts and texts.index("second line after the gate") < texts.index("done")
        assert ended["status"] == "succeeded"
        log = on_b.get(f"/api/v1/runs/{run_id}/log").json()
        assert "second line after the gate" in log["steps"][0]["log"] and log == on_a.get(f"/api/v1/runs/{run_id}/log").json()

        # a second launch while one runs: 409 naming the running run and its worker, from either server
        (ops / "gate").unlink()
        (ops / "gate2").unlink()
        operator_b = httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {b.tokens['operator']}"},
                                  timeout=60)
        operator_a = httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {a.tokens['operator']}"},
                                  timeout=60)
        second = operator_b.post("/api/v1/workspaces/ops/workflows/slow/runs", json={})
        assert second.status_code == 202, second.text
        second_id = second.json()["run_id"]
        wait_for(lambda: (lambda d: d if d and d["status"] == "running" else None)(run_doc(operator_a, second_id)),
                 DEADLINE, "the second run to start")
        refused = operator_a.post("/api/v1/workspaces/ops/workflows/slow/runs", json={})
        assert refused.status_code == 409, refused.text
        assert second_id in refused.json()["error"] and f"worker {worker_name}" in refused.json()["error"]

        # a stop from a: the run's own process on the worker stops its step
        asked = time.monotonic()
        stopped = operator_a.post(f"/api/v1/runs/{second_id}/stop")
        assert stopped.status_code == 202, stopped.text
        ended_run = wait_for(lambda: (lambda d: d if d and d["status"] != "running" else None)(
            run_doc(operator_b, second_id)), DEADLINE, "the stopped run to end")
        print(f"stop from server a to the run's recorded end (seen on b): {time.monotonic() - asked:.2f} s")
        assert ended_run["status"] == "interrupted"
        # who stopped it: the engine's first write of the record says it (team/execute.py's interrupt reason)
        final = wait_for(lambda: (lambda d: d if "by web:" in (d["message"] or "") else None)(
            run_doc(operator_b, second_id)), DEADLINE, "the stopped run's record to say who stopped it")
        assert final["status"] == "interrupted" and "interrupted by web:token:operator-token" in final["message"]

        # a user added on b (its API) logs in on a; logging out on b ends the session on a
        admin_b = httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {b.tokens['admin']}"}, timeout=60)
        assert admin_b.post("/api/v1/users", json={"name": "dora", "role": "viewer",
                                                   "password": "dora-password"}).status_code == 201
        assert login(httpx.Client(base_url=a.url, timeout=60), "dora", "dora-password").status_code == 303
        assert on_b.post("/logout", data={"csrf": csrf_of(on_b)}).status_code == 303
        assert on_a.get("/api/v1/whoami").status_code == 401

        # one audit: what happened on either server, read on either
        admin_a = httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {a.tokens['admin']}"}, timeout=60)
        audit = admin_a.get("/api/v1/audit").json()
        assert audit == admin_b.get("/api/v1/audit").json()
        happened = [(r["actor"], r["action"], r["outcome"].split(":")[0]) for r in reversed(audit)]
        for expected in [("operator", "login", "ok"), ("operator", "launch", "ok"),
                         ("token:operator-token", "launch", "ok"), ("token:operator-token", "launch", "refused"),
                         ("token:operator-token", "stop", "ok"), ("token:admin-token", "user-add", "ok"),
                         ("dora", "login", "ok"), ("operator", "logout", "ok")]:
            assert expected in happened, (expected, happened)
        assert worker_proc.poll() is None
    finally:
        b.stop()
        a.stop()


def test_a_queued_run_is_named_as_queued_not_as_missing(team_dsn, tmp_path):
    """Before a worker takes a launched run it has no record: the server says it is queued, where and by whom."""
    from polycrate.errors import NotFoundError
    from polycrate.server.catalog import Catalog
    from polycrate.team.launch import Launch, checked_commit, enqueue

    ops = committed(make_workspace(tmp_path / "ops", "ops"))
    run_id = enqueue(team_dsn, Launch(workspace="ops", root=ops, workflow="green", queue="nobody-serves-this",
                                      git_commit=checked_commit(ops), launched_by="web:ann"))
    catalog = Catalog([ops], backend=team_dsn)
    with pytest.raises(NotFoundError, match=f"run {run_id} is queued on 'nobody-serves-this' \\(launched by web:ann\\)"):
        catalog.find_run(run_id)
    with pytest.raises(NotFoundError, match="no run '20990101-000000-abcdef'"):
        catalog.find_run("20990101-000000-abcdef")
