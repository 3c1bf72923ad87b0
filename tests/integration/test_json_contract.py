"""The one JSON contract: every command's `-o json` output validates against the schema its `schema`
key names (src/polycrate/contract/schemas/), a run has one id key everywhere, `-o yaml` is the same data, and
the webhook body a real HTTP server on loopback receives is the run `runs show` prints.

The runners of tests/helpers.py validate every `-o json`/`-o yaml` output of every test; this module
makes sure each command is asked at least once, against real ansible-playbook runs."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from polycrate import contract
from tests.helpers import REPO, run_cli, run_cli_inprocess, validate_document, write
from tests.integration.runs_workspace import make_workspace

# documents asked for in other modules, against services this one does not start
ELSEWHERE = {
    "toolchain-build": "tests/integration/test_container_toolchain.py (podman)",
    "toolchain-info": "tests/integration/test_container_toolchain.py (podman)",
    "block-push": "tests/integration/test_registry_blocks.py (docker-registry)",
    "block-pull": "tests/integration/test_registry_blocks.py (docker-registry)",
    "notify-test": "tests/integration/test_notifications.py (SMTP and chat servers on loopback)",
    "backend-import": "tests/team/test_backend.py (PostgreSQL)",
    "workers": "tests/team/test_workers.py (PostgreSQL, polycrate worker)",
    "schedules-backend": "tests/team/test_schedules.py (PostgreSQL, polycrate worker)",
    "queued-run": "tests/team/test_server_queue_schedules.py (PostgreSQL, a run no worker took yet)",
}




class Seen:
    """Runs commands with -o json and keeps every document, by schema."""

    def __init__(self):
        self.docs: dict[str, list[dict]] = {}

    def add(self, doc: dict) -> dict:
        validate_document(doc)
        self.docs.setdefault(doc["schema"].split(":")[2], []).append(doc)
        return doc

    def json(self, *argv: str, cwd: Path, code: int = 0, runner=run_cli_inprocess, **kw) -> dict:
        result = runner("-o", "json", *argv, cwd=cwd, **kw)  # before the command: `ssh HOST ...` takes the rest
        assert result.returncode == code, result.output
        return self.add(json.loads(result.stdout))


def _keys(value, found=None) -> set[str]:
    found = set() if found is None else found
    if isinstance(value, dict):
        for key, inner in value.items():
            found.add(key)
            _keys(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _keys(inner, found)
    return found


def test_every_command_prints_a_valid_document_with_one_name_for_the_run_id(tmp_path, hook_server):
    seen = Seen()
    port = hook_server.port
    ws = make_workspace(tmp_path / "ws", f"""
  - name: timer
    schedule: {{on_calendar: "*-*-* 03:00:00", randomized_delay: 60}}
    steps:
      - {{name: backup, block: b, action: ok}}
webhooks:
  - url: http://127.0.0.1:{port}/hook
    on: [success, failure]
""")

    # runs: a failed workflow, a succeeded one, one action, the one-argument form
    failed = seen.json("workflows", "run", "nightly", cwd=ws, code=1, runner=run_cli)
    green = seen.json("workflows", "run", "green", cwd=ws, runner=run_cli)
    action = seen.json("run", "b", "ok", cwd=ws, runner=run_cli)
    seen.json("run", "green", cwd=ws, runner=run_cli)
    seen.json("actions", "run", "b", "ok", cwd=ws, runner=run_cli)
    listed = seen.json("runs", "list", cwd=ws)
    shown = seen.json("runs", "show", failed["run_id"], cwd=ws)
    logs = seen.json("runs", "logs", failed["run_id"], cwd=ws)
    seen.json("runs", "logs", failed["run_id"], "--step", "notify", cwd=ws)

    # the run id: one key name in workflows run, run, runs list, runs show, runs logs and the webhook
    ids = [r["run_id"] for r in listed["runs"]]
    assert failed["run_id"] in ids and green["run_id"] in ids and action["run_id"] in ids
    assert shown["run_id"] == logs["run_id"] == failed["run_id"]
    bodies = [r["body"] for r in hook_server.requests]
    assert len(bodies) == 5
    for body in bodies:
        seen.add(body)
        assert body["run_id"] in ids
    for doc in [failed, green, action, listed, shown, logs, *bodies]:
        assert "id" not in _keys(doc) and "check" not in _keys(doc)  # no second name for the id or check mode
    # workflows run -o json prints the run as recorded: the document of runs show
    assert failed == seen.json("runs", "show", failed["run_id"], cwd=ws)
    assert failed["status"] == "failed" and failed["failed_step"] == "update"
    assert [s["status"] for s in failed["steps"]] == ["succeeded", "failed", "skipped", "succeeded"]

    # the workspace, its workflows, blocks and actions
    seen.json("version", cwd=ws)
    workflows = seen.json("workflows", "list", cwd=ws)
    timer = next(w for w in workflows["workflows"] if w["name"] == "timer")
    assert timer["schedule"] == {"kind": "on_calendar", "expression": "*-*-* 03:00:00", "randomized_delay": 60,
                                 "user": None, "group": None, "persistent": True, "timeout": None, "log_file": None,
                                 "missed": "run-once", "max_delay": None}
    assert all(w["schedule"] is None for w in workflows["workflows"] if w["name"] != "timer")
    seen.json("workflows", "inspect", "nightly", cwd=ws)
    actions = seen.json("actions", "list", cwd=ws)
    notify = next(a for a in actions["actions"] if a["name"] == "notify")
    assert notify["type"] == "script" and notify["script"] and notify["playbook"] is None
    seen.json("actions", "inspect", "b", "ok", cwd=ws)
    blocks = seen.json("blocks", "list", cwd=ws)
    assert blocks["blocks"][0]["actions"] == actions["actions"]  # an action has one shape
    seen.json("blocks", "inspect", "b", cwd=ws)
    seen.json("workspace", "inspect", cwd=ws)
    seen.json("workspace", "validate", cwd=ws)
    seen.json("workspace", "snapshot", cwd=ws)
    seen.json("workspace", "update", cwd=ws)
    seen.json("run", "b", "ok", "--snapshot", cwd=ws)
    seen.json("ssh", "list", cwd=ws)

    # schedules, written to a folder of the test
    dest = tmp_path / "units"
    dest.mkdir()
    env = {"POLYCRATE_EXECUTABLE": "/usr/bin/true"}
    plan = seen.json("schedules", "plan", "--dest", str(dest), cwd=ws, env=env)
    assert all(t.endswith("Z") for s in plan["schedules"] for t in s["next_runs"])
    seen.json("schedules", "apply", "--dest", str(dest), cwd=ws, env=env)
    seen.json("schedules", "list", "--dest", str(dest), cwd=ws, env=env)
    seen.json("workflows", "schedule", "green", "--on-calendar", "Sat 04:00", "--dest", str(dest), cwd=ws, env=env)
    seen.json("workflows", "schedule", "green", "--remove", "--dest", str(dest), cwd=ws, env=env)

    # encryption with a key the command makes
    secrets_ws = tmp_path / "sealed"
    key = tmp_path / "key.txt"
    made = seen.json("workspace", "keygen", "--identity", str(key), cwd=tmp_path, runner=run_cli)
    write(secrets_ws / "workspace.poly", f"name: sealed\nencryption:\n  recipients: [{made['recipient']}]\n")
    write(secrets_ws / "artifacts/secrets/token.txt", "s3cr3t\n")
    seen.json("workspace", "encrypt", "--identity", str(key), cwd=secrets_ws, runner=run_cli)
    seen.json("workspace", "decrypt", "--identity", str(key), cwd=secrets_ws, runner=run_cli)

    # the web server's users, tokens and audit log
    server_env = {"POLYCRATE_SERVER_STATE": str(tmp_path / "server-state")}
    assert run_cli_inprocess("server", "user", "add", "ada", "--role", "admin", "--password-stdin", cwd=tmp_path,
                             env=server_env, input="correct horse battery\n").returncode == 0
    assert run_cli_inprocess("server", "token", "add", "ci", "--role", "viewer", cwd=tmp_path,
                             env=server_env).returncode == 0
    seen.json("server", "user", "list", cwd=tmp_path, env=server_env)
    tokens = seen.json("server", "token", "list", cwd=tmp_path, env=server_env)
    assert tokens["tokens"][0]["last_used"] is None  # never used: present, null
    seen.json("server", "audit", cwd=tmp_path, env=server_env)
    assert run_cli_inprocess("server", "grant", "add", "ada", "ops", "--role", "operator", cwd=tmp_path,
                             env=server_env).returncode == 0
    grants = seen.json("server", "grant", "list", cwd=tmp_path, env=server_env)
    assert grants["grants"] and grants["grants"][0]["workspace"] == "ops"
    for args in (("team", "add", "ops-team"), ("team", "join", "ops-team", "ada"),
                 ("grant", "add", "team:ops-team", "ops", "--role", "viewer")):
        assert run_cli_inprocess("server", *args, cwd=tmp_path, env=server_env).returncode == 0, args
    teams = seen.json("server", "team", "list", cwd=tmp_path, env=server_env)
    assert teams["teams"][0]["members"] == ["ada"] and teams["teams"][0]["grants"] == [
        {"workspace": "ops", "role": "viewer"}]

    # team mode's backend: none set on this host (with one: tests/team/)
    (tmp_path / "host-config.yml").write_text("# no backend\n")
    status = seen.json("backend", "status", cwd=tmp_path,
                       env={"POLYCRATE_BACKEND": "", "POLYCRATE_CONFIG": str(tmp_path / "host-config.yml")})
    assert status["backend"] is None and status["schema_version"] is None

    # every document the CLI can print was asked for here, or in the module named for it
    documents = {p.name.split(".v")[0] for p in contract.SCHEMA_DIR.glob("*.schema.json")} - {"common"}
    assert documents - set(seen.docs) == set(ELSEWHERE), documents - set(seen.docs)

    # -o yaml is the same data
    for argv in (("runs", "show", failed["run_id"]), ("workflows", "list"), ("actions", "list")):
        as_yaml = run_cli_inprocess(*argv, "-o", "yaml", cwd=ws)
        as_json = run_cli_inprocess(*argv, "-o", "json", cwd=ws)
        assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout), argv


def test_every_json_output_of_the_cli_goes_through_the_contract():
    """Each emit_json(...) in src/polycrate/cli/ prints a contract document (contract.NAME(...)), so a
    new command cannot print JSON without a schema."""
    offenders, calls = [], 0
    for path in sorted((REPO / "src/polycrate/cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "emit_json":
                arg = node.args[0]
                calls += 1
                called = arg.func if isinstance(arg, ast.Call) else None
                ok = isinstance(called, ast.Attribute) and getattr(called.value, "id", None) == "contract"
                if not ok:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert calls >= 25 and offenders == []
