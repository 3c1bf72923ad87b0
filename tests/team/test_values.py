"""Launch values in team mode travel in PostgreSQL with the run, never in a file of the launching host.

A real `polycrate serve` with a backend and real `polycrate worker` processes, each with a folder, HOME, config and
cache of its own (another host, as far as files go: nothing of the server's state folder is theirs), fetching the
workspace from its git remote; a real ansible-playbook prints the values and the action writes what it saw to a
marker file; real age (each worker's `polycrate worker keygen`); PostgreSQL dumped with pg_dump to look for a
secret in every table.

No timed assertions: every wait polls for a state with a generous deadline.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write
from tests.helpers import run_cli
from tests.server_fixtures import start_server, wait_for
from tests.team.harness import Team

pytestmark = pytest.mark.team

SECRET = "Team-S3cret-Value-4711"
FILE_SECRET = "Cli-F1le-S3cret-0815"
NOTE = "{{ 6 * 7 }} plain note"  # a template in a value from the web stays text
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
DECLARED = """
    launch:
      variables:
        - {name: note, type: string}
        - {name: password, type: secret}"""


def _workspace(ws: Path, marks: Path, recipients: list[str], name: str = "vals") -> None:
    encryption = f"encryption: {{recipients: {json.dumps(recipients)}}}" if recipients else ""
    write(ws / "workspace.poly", f"""
name: {name}
blocks:
  - name: b
workflows:
  - name: echo{DECLARED}
    steps:
      - {{name: echo, block: b, action: echo}}
  - name: echo-elsewhere
    queue: elsewhere{DECLARED}
    steps:
      - {{name: echo, block: b, action: echo}}
  - name: cli
    steps:
      - {{name: cli, block: b, action: cli}}
  - name: two
    steps:
      - {{name: cli, block: b, action: cli}}
      - {{name: gated, block: b, action: gated}}
  - name: two-web
    launch:
      variables:
        - {{name: cli_note, type: string, required: true}}
        - {{name: cli_secret, type: secret, required: true}}
    steps:
      - {{name: first, block: b, action: first}}
      - {{name: gated, block: b, action: gated}}
{encryption}
""")
    write(ws / "blocks/b/block.poly", "name: b\nactions:\n  - {name: echo, playbook: echo.yml}\n"
                                      "  - {name: cli, playbook: cli.yml}\n  - {name: gated, playbook: gated.yml}\n"
                                      "  - {name: first, script: ['true']}\n")
    write(ws / "blocks/b/echo.yml", f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "note=[{{{{ note }}}}] password=[{{{{ password }}}}]"
    - ansible.builtin.shell: 'printf "%s|%s\\n" "$NOTE" "$PASSWORD" >> {marks}/echo'
      environment: {{NOTE: "{{{{ note }}}}", PASSWORD: "{{{{ password }}}}"}}
""")
    write(ws / "blocks/b/cli.yml", f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "cli_note=[{{{{ cli_note }}}}] cli_calc=[{{{{ cli_calc }}}}] cli_secret=[{{{{ cli_secret }}}}] k=[{{{{ k }}}}]"
    - ansible.builtin.shell: 'printf "%s|%s|%s|%s\\n" "$A" "$B" "$C" "$D" >> {marks}/cli'
      environment: {{A: "{{{{ cli_note }}}}", B: "{{{{ cli_calc }}}}", C: "{{{{ cli_secret }}}}", D: "{{{{ k }}}}"}}
""")
    # the interpreter named: a worker's HOME of its own is no home for a pyenv shim
    write(ws / "blocks/b/gated.yml", f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.stat: {{path: {marks}/open}}
      register: gate
    - ansible.builtin.fail: {{msg: the gate is closed}}
      when: not gate.stat.exists
    - ansible.builtin.shell: 'printf "%s|%s\\n" "$A" "$C" >> {marks}/two'
      environment: {{A: "{{{{ cli_note }}}}", C: "{{{{ cli_secret }}}}"}}
""")
    write(ws / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                f"      ansible_python_interpreter: {sys.executable}\n")
    write(ws / ".gitignore", ".polycrate/\nartifacts/\n")


def _git(cwd: Path, *argv: str) -> None:
    subprocess.run([*GIT, *argv], cwd=cwd, check=True, capture_output=True)


def _dump(postgres, dsn: str) -> str:
    """Every row of every table of the test's database, as pg_dump writes them."""
    done = subprocess.run([str(postgres.bin / "pg_dump"), "--data-only", dsn], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "COPY public.team_run_values" in done.stdout  # the dump has the tables it is to be searched in
    return done.stdout


def _readable(paths) -> list[tuple[Path, bytes]]:
    found = []
    for path in paths:
        try:
            found.append((path, path.read_bytes()))
        except OSError:  # a folder, or another user's
            continue
    return found


def _finished(api: httpx.Client, run_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = api.get(f"/api/v1/runs/{run_id}")
        doc: dict[str, Any] = r.json() if r.status_code == 200 else {}
        return doc if doc.get("status") not in (None, "queued", "running") else None  # queued: no worker took it yet

    found: dict[str, Any] = wait_for(ended, timeout=240, what=f"run {run_id} to end")
    return found


def _site(team_env: dict[str, str], tmp_path: Path) -> tuple[Team, dict[str, str]]:
    """The launching host's clone of the workspace (its remote a bare repository) and two workers' keys, the
    workspace listing the good one's recipient only: the Team and the recipients."""
    marks = tmp_path / "marks"
    marks.mkdir()
    team = Team(tmp_path / "launch" / "vals", marks, team_env, tmp_path)
    good_home, bad_home = tmp_path / "host-good", tmp_path / "host-bad"
    recipients = {}
    for name, home in (("good", good_home), ("bad", bad_home)):
        made = run_cli("worker", "keygen", "--name", name, env=team_env | Team.host_env(home))
        assert made.returncode == 0, made.output
        recipients[name] = made.stdout.strip()
    # the workspace lists the good worker's recipient only; it is fetched by the workers from its remote
    _workspace(team.ws, marks, [recipients["good"]])
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    _git(team.ws, "init", "-q", "-b", "main")
    _git(team.ws, "remote", "add", "origin", str(origin))
    _git(team.ws, "add", "-A")
    _git(team.ws, "commit", "-q", "-m", "vals")
    _git(team.ws, "push", "-q", "-u", "origin", "main")
    return team, recipients


def test_launch_values_reach_a_worker_on_another_host_through_postgresql(postgres, team_env, tmp_path, monkeypatch):
    for key, value in team_env.items():  # the server and the CLI: this host's backend
        monkeypatch.setenv(key, value)
    team, recipients = _site(team_env, tmp_path)
    marks, good_home, bad_home = team.marks, tmp_path / "host-good", tmp_path / "host-bad"
    bare = tmp_path / "bare"  # a workspace that lists no recipient: nowhere to send a secret value to
    _workspace(bare, marks, [], "bare")
    for argv in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "bare")):
        _git(bare, *argv)
    server = start_server(tmp_path, [team.ws, bare])
    try:
        operator = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['operator']}"},
                                timeout=60)
        admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['admin']}"},
                             timeout=60)
        # launched before any worker runs: whatever it needs is in PostgreSQL, nothing in the server's folder
        r = operator.post("/api/v1/workspaces/vals/workflows/echo/runs",
                          json={"vars": {"note": NOTE, "password": SECRET}})
        assert r.status_code == 202, r.text
        first_id = r.json()["run_id"]
        assert not [p for p in server.state.rglob("*") if p.is_file() and p.suffix == ".yml"]
        team.start_worker("good", "--queue", "default", home=good_home)
        first = _finished(operator, first_id)
        assert first["status"] == "succeeded", (first.get("message"), admin.get(f"/api/v1/runs/{first_id}/log").text,
                                                team.worker_log("good"))
        assert (marks / "echo").read_text() == f"{NOTE}|{SECRET}\n"  # the action saw both, the note as text
        log = "\n".join(s["log"] for s in admin.get(f"/api/v1/runs/{first_id}/log").json()["steps"])
        assert f"note=[{NOTE}] password=[********]" in log

        # a relaunch takes the same values: the secret as its launch sealed it (the server never opens it)
        r = operator.post(f"/api/v1/runs/{first_id}/relaunch", json={})
        assert r.status_code == 202, r.text
        again_id = r.json()["run_id"]
        assert _finished(operator, again_id)["status"] == "succeeded"
        assert (marks / "echo").read_text() == f"{NOTE}|{SECRET}\n" * 2
        sealed = {row["id"]: bytes(row["sealed"]) for row in team.sql(
            "SELECT id, sealed FROM team_run_values WHERE sealed IS NOT NULL")}
        assert sealed[again_id] == sealed[first_id] and sealed[first_id].startswith(b"age-encryption.org/v1\n")

        # a worker whose identity the workspace does not list: the run fails with the reason, nothing runs
        team.start_worker("bad", "--queue", "elsewhere", home=bad_home)
        r = operator.post("/api/v1/workspaces/vals/workflows/echo-elsewhere/runs",
                          json={"vars": {"note": "refused", "password": SECRET}})
        assert r.status_code == 202, r.text
        refused = _finished(operator, r.json()["run_id"])
        assert refused["status"] == "failed" and refused["steps"] == [], refused
        message = refused["message"]
        assert message.startswith("refused: the launch's secret value password is not encrypted to this worker's "
                                  f"age identity ({recipients['bad']}, "), message
        assert "add that recipient to encryption.recipients" in message and message.endswith("nothing executed")
        assert "\n" not in message and (marks / "echo").read_text().count("\n") == 2

        # the terminal: --extra-vars @FILE from another folder, the files gone before a worker takes the run
        elsewhere = tmp_path / "elsewhere"
        write(elsewhere / "vars.yml", 'cli_note: from the file\ncli_calc: "{{ 6 * 7 }}"\n')
        from polycrate.runtime.ansible_options import SECRET_FILE_HEAD

        write(elsewhere / "secret.yml", f"{SECRET_FILE_HEAD}cli_secret: {FILE_SECRET}\n")
        launched = run_cli("-w", str(team.ws), "workflows", "run", "cli", "--queue", "later", "--extra-vars",
                           "@vars.yml", "--extra-vars", "@secret.yml", "--extra-vars", "k=typed", cwd=elsewhere,
                           env=team_env)
        assert launched.returncode == 0, launched.output
        cli_id = launched.stdout.strip().splitlines()[-1]
        for name in ("vars.yml", "secret.yml"):
            (elsewhere / name).unlink()
        team.start_worker("later", "--queue", "later", "--identity",
                          str(good_home / "config" / "polycrate" / "worker" / "good" / "age-identity.txt"),
                          home=tmp_path / "host-later")
        done = _finished(operator, cli_id)
        assert done["status"] == "succeeded", done
        # a file keeps Ansible's meaning at the terminal (its template evaluated); the secret one is masked
        assert (marks / "cli").read_text() == f"from the file|42|{FILE_SECRET}|typed\n"
        cli_log = "\n".join(s["log"] for s in admin.get(f"/api/v1/runs/{cli_id}/log").json()["steps"])
        assert "cli_note=[from the file] cli_calc=[42] cli_secret=[********] k=[typed]" in cli_log

        # no recipient in the workspace: a secret value is refused at the launch, nothing queued
        r = operator.post("/api/v1/workspaces/bare/workflows/echo/runs", json={"vars": {"password": SECRET}})
        assert r.status_code == 409 and "encryption.recipients, and workspace.poly lists none" in r.json()["error"]
        write(elsewhere / "secret.yml", f"{SECRET_FILE_HEAD}cli_secret: {FILE_SECRET}\n")
        refused_cli = run_cli("-w", str(bare), "workflows", "run", "cli", "--extra-vars", "@secret.yml", cwd=elsewhere,
                              env=team_env)
        assert refused_cli.returncode != 0 and "lists none" in refused_cli.stderr, refused_cli.output
        assert "nothing was queued" in refused_cli.stderr and refused_cli.stderr.count("\n") == 1
        assert team.sql("SELECT count(*) AS n FROM team_runs WHERE workspace = 'bare'")[0]["n"] == 0
        (elsewhere / "secret.yml").unlink()

        # the opened values are gone from the workers' scratch; no plaintext secret anywhere it could be kept
        assert not [f for f in _readable(Path("/dev/shm").glob("polycrate-secrets-*/**/*")) if SECRET.encode() in f[1]]
        seen = [_dump(postgres, team_env["POLYCRATE_BACKEND"])]
        for client in (operator, admin):
            for path in ("/api/v1/runs", "/api/v1/overview", "/api/v1/audit?limit=1000"):
                seen.append(client.get(path).text)
            for run_id in (first_id, again_id, refused["run_id"], cli_id):
                seen += [client.get(f"/api/v1/runs/{run_id}").text, client.get(f"/api/v1/runs/{run_id}/log").text,
                         client.get(f"/runs/{run_id}/log/raw").text]
        seen += [team.worker_log(n) for n in ("good", "bad", "later")] + [server.proc.stderr.read()]
        seen += [run_cli("-w", str(team.ws), "runs", "show", i, "-o", "json", env=team_env).output
                 for i in (first_id, cli_id)]
        for secret in (SECRET, FILE_SECRET):
            assert not [n for n, text in enumerate(seen) if secret in text], secret
        kept = [p for p in [*server.state.rglob("*"), *tmp_path.glob("host-*/**/*")] if p.is_file()]
        assert not [p for p in kept if SECRET.encode() in p.read_bytes() or FILE_SECRET.encode() in p.read_bytes()]
        assert "from the file" in seen[0] and "plain note" in seen[0]  # the plain values are there, as data
    finally:
        team.stop_all()
        server.stop()


def test_a_resumed_run_gets_its_launch_values_again_on_another_worker(team_env, tmp_path):
    team, _ = _site(team_env, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    from polycrate.runtime.ansible_options import SECRET_FILE_HEAD

    write(elsewhere / "vars.yml", "cli_note: resumed note\ncli_calc: 1\n")
    write(elsewhere / "secret.yml", f"{SECRET_FILE_HEAD}cli_secret: {FILE_SECRET}\n")
    key = str(tmp_path / "host-good" / "config" / "polycrate" / "worker" / "good" / "age-identity.txt")
    try:
        team.start_worker("first", "--identity", key, home=tmp_path / "host-first")
        failed = run_cli("-w", str(team.ws), "workflows", "run", "two", "--wait", "--extra-vars", "@vars.yml",
                         "--extra-vars", "@secret.yml", "--extra-vars", "k=typed", cwd=elsewhere, env=team_env)
        assert failed.returncode == 1, failed.output
        first = failed.stdout.splitlines()[0]
        assert [s["status"] for s in team.show(first)["steps"]] == ["succeeded", "failed"]
        team.stop("first")  # another worker, another host, resumes it: the files were the first one's
        for name in ("vars.yml", "secret.yml"):
            (elsewhere / name).unlink()
        (team.marks / "open").touch()
        team.start_worker("second", "--identity", key, home=tmp_path / "host-second")
        resumed = run_cli("-w", str(team.ws), "workflows", "run", "two", "--resume", "--wait", env=team_env)
        assert resumed.returncode == 0, resumed.output + json.dumps(team.show(resumed.stdout.splitlines()[0]))
        shown = team.show(resumed.stdout.splitlines()[0])
        assert shown["resumed_from"] == first and [s["status"] for s in shown["steps"]][1] == "succeeded"
        assert (team.marks / "two").read_text() == f"resumed note|{FILE_SECRET}\n"
        assert FILE_SECRET not in resumed.output + json.dumps(shown) + team.worker_log("second")
        assert not list(Path("/dev/shm").glob(f"polycrate-values-{first}"))  # its links went with the run
    finally:
        team.stop_all()  # every worker it started, also after a failed assertion


def test_a_web_resume_gets_the_launch_values_again_without_asking(team_env, tmp_path, monkeypatch):
    """Was: a resume from the web view or the API of a workflow with required launch values was refused by the
    server (`vars.cli_note: required`); given again, they were new values of a new launch, which the run refused.
    Now `{"resume": true}` alone runs the rest with the values the failed run was launched with, the secret too."""
    for name, value in team_env.items():
        monkeypatch.setenv(name, value)
    team, _ = _site(team_env, tmp_path)
    key = str(tmp_path / "host-good" / "config" / "polycrate" / "worker" / "good" / "age-identity.txt")
    server = start_server(tmp_path, [team.ws])
    try:
        operator = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['operator']}"},
                                timeout=60)
        team.start_worker("first", "--identity", key, home=tmp_path / "host-first")
        r = operator.post("/api/v1/workspaces/vals/workflows/two-web/runs",
                          json={"vars": {"cli_note": "web note", "cli_secret": SECRET}})
        assert r.status_code == 202, r.text
        failed = _finished(operator, r.json()["run_id"])
        assert [s["status"] for s in failed["steps"]] == ["succeeded", "failed"], failed
        (team.marks / "open").touch()
        r = operator.post("/api/v1/workspaces/vals/workflows/two-web/runs", json={"resume": True})
        assert r.status_code == 202, r.text
        resumed = _finished(operator, r.json()["run_id"])
        assert resumed["status"] == "succeeded" and resumed["resumed_from"] == failed["run_id"], resumed
        assert (team.marks / "two").read_text() == f"web note|{SECRET}\n"
        seen = operator.get(f"/api/v1/runs/{resumed['run_id']}").text + operator.get(
            f"/api/v1/runs/{resumed['run_id']}/log").text + team.worker_log("first")
        assert SECRET not in seen
    finally:
        team.stop_all()
        server.stop()
