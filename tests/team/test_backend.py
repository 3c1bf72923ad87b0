"""Team mode's history through the real CLI against a real PostgreSQL: the setting, `backend init`,
`backend import` (without loss, twice is once), runs recorded in PostgreSQL and read back from another
process with `runs list/show/logs` in the same JSON contract."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polycrate.history.postgres import MIGRATIONS, SCHEMA_VERSION
from tests.helpers import assert_one_line_error, run_cli
from tests.integration.runs_workspace import SECRET, make_workspace, wait_for
from tests.team.conftest import no_backend

pytestmark = pytest.mark.team


def _psql(postgres, dsn_db: str, sql: str) -> list[str]:
    db = dsn_db.rsplit("/", 1)[1]
    out = subprocess.run([str(postgres.bin / "psql"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                          "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True,
                         text=True)
    return out.stdout.split("\n")[:-1]


def test_init_creates_the_schema_once_and_says_so(postgres, fresh_database, tmp_path):
    env = no_backend(tmp_path) | {"POLYCRATE_BACKEND": fresh_database}
    before = run_cli("runs", "list", cwd=make_workspace(tmp_path / "ws"), env=env)
    assert_one_line_error(before, "no polycrate schema yet: run `polycrate backend init`")
    first = run_cli("backend", "init", env=env)
    assert first.returncode == 0, first.output
    assert f"schema migrated from version 0 to {SCHEMA_VERSION} (new)" in first.stdout
    second = run_cli("backend", "init", env=env)
    assert second.returncode == 0 and f"schema is current (version {SCHEMA_VERSION})" in second.stdout, second.output
    assert _psql(postgres, fresh_database, "SELECT version, name FROM polycrate_schema ORDER BY version") == [
        f"{number}|{name}" for number, (name, _apply) in enumerate(MIGRATIONS, 1)]
    status = run_cli("backend", "status", "-o", "json", env=env)
    assert json.loads(status.stdout) == {"schema": "urn:polycrate:backend-status:v1", "backend": fresh_database,
                                         "schema_version": SCHEMA_VERSION, "schema_current": True}
    listed = run_cli("runs", "list", "-o", "json", cwd=tmp_path / "ws", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout)["runs"] == [], listed.output


def test_bad_settings_are_one_line_errors_naming_their_file(tmp_path, postgres):
    ws = make_workspace(tmp_path / "ws")
    env = no_backend(tmp_path)
    wrong = run_cli("runs", "list", cwd=ws, env=env | {"POLYCRATE_BACKEND": "mysql://x@127.0.0.1/y"})
    assert_one_line_error(wrong, "must be a PostgreSQL URL")

    config = tmp_path / "config.yml"
    config.write_text("backend:\n  dsn: postgresql://x@127.0.0.1/y\n")
    unknown = run_cli("runs", "list", cwd=ws, env=env | {"POLYCRATE_CONFIG": str(config)})
    assert_one_line_error(unknown, "unknown key 'dsn'")
    assert f"{config}:2:" in unknown.stderr or "config.yml:2:" in unknown.stderr, unknown.stderr

    config.write_text("backend:\n  dsn_file: missing.dsn\n")
    missing = run_cli("runs", "list", cwd=ws, env=env | {"POLYCRATE_CONFIG": str(config)})
    assert_one_line_error(missing, "cannot read dsn_file")

    secret = "s3cret-Passw0rd"
    closed = run_cli("runs", "list", cwd=ws, env=env | {"POLYCRATE_BACKEND": f"postgresql://ann:{secret}@127.0.0.1:1/x"})
    assert_one_line_error(closed, "cannot connect to the backend postgresql://ann:********@127.0.0.1:1/x", code=74,
                          hidden=[secret])
    run = run_cli("workflows", "run", "green", cwd=ws, env=env | {"POLYCRATE_BACKEND": f"postgresql://ann:{secret}@127.0.0.1:1/x"})
    assert_one_line_error(run, "cannot connect to the backend", code=74, hidden=[secret])
    assert not (ws / "order.txt").exists()  # no step ran without its record
    assert not (ws / ".polycrate" / "runs.db").exists()  # nothing fell back to SQLite


def test_the_host_configuration_names_a_dsn_file(tmp_path, team_dsn):
    ws = make_workspace(tmp_path / "ws")
    (tmp_path / "backend.dsn").write_text(f"# the team's database\n{team_dsn}\n")
    config = tmp_path / "config.yml"
    config.write_text("backend:\n  dsn_file: backend.dsn   # beside this file\n")
    env = {"POLYCRATE_BACKEND": "", "POLYCRATE_CONFIG": str(config)}
    status = run_cli("backend", "status", "-o", "json", env=env)
    assert status.returncode == 0, status.output
    assert json.loads(status.stdout)["backend"] == team_dsn
    run = run_cli("workflows", "run", "green", "--here", cwd=ws, env=env)  # here: not launched on a worker's queue
    assert run.returncode == 0, run.output
    assert not (ws / ".polycrate" / "runs.db").exists()  # recorded in PostgreSQL, not in the workspace
    listed = run_cli("runs", "list", "-o", "json", cwd=ws, env=env)
    assert [r["name"] for r in json.loads(listed.stdout)["runs"]] == ["green"]
    # a filter that matches nothing: one line, with how many runs PostgreSQL holds of this workspace
    nothing = run_cli("runs", "list", "--status", "interrupted", cwd=ws, env=env)
    assert nothing.stdout == "no run matches --status interrupted (1 run recorded)\n", nothing.output


def _documents(ws: Path, env: dict[str, str]) -> dict:
    """What `runs list/show/logs -o json` print for every run: the contract's documents."""
    listed = run_cli("runs", "list", "--limit", "100", "-o", "json", cwd=ws, env=env)
    assert listed.returncode == 0, listed.output
    runs = json.loads(listed.stdout)
    shown, logs = {}, {}
    for run in runs["runs"]:
        show = run_cli("runs", "show", run["run_id"], "-o", "json", cwd=ws, env=env)
        log = run_cli("runs", "logs", run["run_id"], "-o", "json", cwd=ws, env=env)
        assert show.returncode == 0 and log.returncode == 0, show.output + log.output
        shown[run["run_id"]], logs[run["run_id"]] = json.loads(show.stdout), json.loads(log.stdout)
    return {"list": runs, "show": shown, "logs": logs}


def test_import_moves_a_sqlite_history_without_loss_and_twice_is_once(postgres, team_dsn, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    local = no_backend(tmp_path)
    for argv in (["workflows", "run", "nightly"], ["workflows", "run", "green"], ["workflows", "run", "secret"],
                 ["workflows", "run", "changes"], ["run", "b", "notify"]):
        run_cli(*argv, cwd=ws, env=local)
    before = _documents(ws, local)
    assert len(before["list"]["runs"]) == 5
    assert any(s["hosts"] for doc in before["show"].values() for s in doc["steps"])
    assert any(s["log"] for doc in before["logs"].values() for s in doc["steps"])

    team = no_backend(tmp_path) | {"POLYCRATE_BACKEND": team_dsn}
    first = run_cli("backend", "import", str(ws), "-o", "json", env=team)
    assert first.returncode == 0, first.output
    report = json.loads(first.stdout)
    assert (report["workspace"], report["imported"], report["already_there"]) == ("nights", 5, 0)
    assert report["steps"] == sum(len(d["steps"]) for d in before["show"].values()) and report["log_bytes"] > 0

    after = _documents(ws, team)  # read from PostgreSQL: the same documents, byte for byte
    assert _differences(after, before) == []
    assert SECRET not in json.dumps(after)  # masked then, masked now

    second = run_cli("backend", "import", "-w", str(ws), env=team)
    assert second.returncode == 0, second.output
    assert "0 run(s) imported" in second.stdout and "5 already there" in second.stdout
    assert _documents(ws, team) == before
    counts = _psql(postgres, team_dsn, "SELECT (SELECT count(*) FROM runs WHERE workspace = 'nights'),"
                   " (SELECT count(*) FROM steps WHERE workspace = 'nights'),"
                   " (SELECT count(*) FROM log_chunks WHERE workspace = 'nights')")
    runs, steps, chunks = map(int, counts[0].split("|"))
    assert (runs, steps) == (5, report["steps"]) and chunks >= sum(
        1 for d in before["logs"].values() for s in d["steps"] if s["log"])


def test_a_run_recorded_in_postgresql_is_followed_from_another_process(team_env, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    run = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "long", "--here"], cwd=ws,
                           env=_env(team_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        def running() -> bool:
            listed = run_cli("runs", "list", "--status", "running", "-o", "json", cwd=ws, env=team_env)
            runs = json.loads(listed.stdout)["runs"] if listed.returncode == 0 else []
            return bool(runs) and runs[0]["current_step"] == "sleep"

        wait_for(running, timeout=120, what="the run to be recorded as running in PostgreSQL")
        follow = subprocess.Popen([sys.executable, "-m", "polycrate", "runs", "logs", "latest", "--follow"], cwd=ws,
                                  env=_env(team_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        for line in follow.stdout:  # the live log as it grows: the task that records the step, then the sleep
            lines.append(line)
            if "TASK [sleep long]" in line:
                break
        run.send_signal(2)  # Ctrl-C: the run stops and records it
        assert run.wait(timeout=120) == 130
        rest, _ = follow.communicate(timeout=120)
        assert follow.returncode == 130, rest
        text = "".join(lines) + rest
        assert "==> sleep: b sleep" in text and "TASK [record the step]" in text
        assert "==> run " in rest and "interrupted" in rest
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws, env=team_env).stdout)
    assert shown["status"] == "interrupted" and shown["steps"][0]["status"] == "interrupted"
    assert not (ws / ".polycrate" / "runs.db").exists()


def _env(extra: dict[str, str]) -> dict[str, str]:
    from tests.helpers import cli_environment

    return cli_environment(extra)


def _differences(a, b, where: str = "") -> list[str]:
    """Where two JSON values differ (paths), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_import_of_a_workspace_without_history_is_a_one_line_error(team_env, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    result = run_cli("backend", "import", str(ws), env=team_env)
    assert_one_line_error(result, "workspace 'nights' has no run history to import")
    assert not (ws / ".polycrate" / "runs.db").exists()  # nothing made while refusing
