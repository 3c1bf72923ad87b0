"""Grants left dangling by an older polycrate (to a user, token or team that no longer exists: written before a
grant needed its principal and before removing a token removed its grants) are removed by a schema migration,
in SQLite's server.db and in the backend's PostgreSQL, each removal audited; a new token or user of that name
starts bare. The old state is built for real: the schema as it shipped, rows as the old code wrote them, then
the real CLI opens it (SQLite) or `backend init` migrates it (PostgreSQL)."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from polycrate.history.postgres import MIGRATIONS, SCHEMA_VERSION, connect
from polycrate.server.state import hash_password, token_hash
from tests.helpers import run_cli
from tests.team.conftest import no_backend

pytestmark = pytest.mark.team

# server.db's tables as polycrate wrote them before its versions (PRAGMA user_version 0): frozen here
OLD_SERVER_SCHEMA = """
CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created REAL NOT NULL,
                     last_used REAL);
CREATE TABLE sessions (hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
                       csrf TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, actor TEXT NOT NULL,
                    action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, client TEXT, detail TEXT);
CREATE INDEX audit_by_time ON audit (time);
CREATE TABLE login_failures (time REAL NOT NULL, user TEXT NOT NULL, client TEXT);
CREATE INDEX login_failures_by_time ON login_failures (time);
CREATE TABLE grants (principal TEXT NOT NULL, workspace TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL,
                     PRIMARY KEY (principal, workspace));
CREATE TABLE teams (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE team_members (team TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
                           user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE, created REAL NOT NULL,
                           PRIMARY KEY (team, user));
CREATE TABLE launches (run_id TEXT PRIMARY KEY, time REAL NOT NULL, actor TEXT NOT NULL, workspace TEXT NOT NULL,
                       workflow TEXT NOT NULL, shown TEXT NOT NULL, options TEXT NOT NULL, vars_file TEXT);
"""

KEPT = [("ann", "ops", "viewer"), ("team:oncall", "ops", "operator"), ("token:ci", "lab", "operator")]
DANGLING = [("bob", "ops", "admin"),               # a user removed (or a name mistyped) before the fix
            ("token:old-ci", "ops", "operator"),   # a token removed before removal took its grants along
            ("team:gone", "lab", "admin")]         # a team's grant that outlived it


def _old_rows(execute, placeholder: str) -> None:
    """The rows an older polycrate left: users, a token, a team, and grants to those and to absent ones."""
    now = time.time()
    q = ", ".join([placeholder] * 4)
    execute(f"INSERT INTO users (name, role, password, created) VALUES ({q})", ("ann", "none", hash_password("pw-ann-1234"), now))
    execute(f"INSERT INTO tokens (name, role, hash, created) VALUES ({q})", ("ci", "none", token_hash("pcs_x"), now))
    execute(f"INSERT INTO teams (name, created) VALUES ({placeholder}, {placeholder})", ("oncall", now))
    for principal, workspace, role in KEPT + DANGLING:
        execute(f"INSERT INTO grants (principal, workspace, role, created) VALUES ({q})", (principal, workspace, role, now))


def _grants(env: dict, *extra: str) -> list[tuple[str, str, str]]:
    listed = run_cli("server", "grant", "list", *extra, "-o", "json", env=env)
    assert listed.returncode == 0, listed.output
    return [(g["principal"], g["workspace"], g["role"]) for g in json.loads(listed.stdout)["grants"]]


def _check_after_migration(env: dict, *extra: str) -> None:
    assert _grants(env, *extra) == KEPT
    audit = run_cli("server", "audit", "--action", "grant-remove", *extra, "-o", "json", env=env)
    assert audit.returncode == 0, audit.output
    removed = sorted((e["actor"], e["target"], e["detail"]["role"]) for e in json.loads(audit.stdout)["entries"])
    assert removed == sorted(("polycrate", f"{p}@{w}", r) for p, w, r in DANGLING)
    assert all("no longer exists" in e["detail"]["reason"] for e in json.loads(audit.stdout)["entries"])
    # a new token of a removed token's name starts bare
    made = run_cli("server", "token", "add", "old-ci", "--role", "none", *extra, env=env)
    assert made.returncode == 0, made.output
    assert _grants(env, *extra) == KEPT


def test_sqlite_server_state_drops_dangling_grants_when_opened(tmp_path):
    folder = tmp_path / "server-state"
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / "server.db", isolation_level=None)
    db.executescript(OLD_SERVER_SCHEMA)
    _old_rows(db.execute, "?")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()

    env = no_backend(tmp_path) | {"POLYCRATE_SERVER_STATE": str(folder)}
    _check_after_migration(env)
    db = sqlite3.connect(folder / "server.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1  # versioned now: reopening does not migrate again
    db.close()


def test_sqlite_server_state_from_a_newer_polycrate_is_refused_untouched(tmp_path):
    folder = tmp_path / "server-state"
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / "server.db", isolation_level=None)
    db.executescript(OLD_SERVER_SCHEMA)
    db.execute("PRAGMA user_version = 1000")  # a version no polycrate here knows
    db.close()
    data = (folder / "server.db").read_bytes()
    refused = run_cli("server", "grant", "list", env=no_backend(tmp_path) | {"POLYCRATE_SERVER_STATE": str(folder)})
    assert refused.returncode == 2 and "Traceback" not in refused.output, refused.output
    assert "the server state was written by a newer polycrate" in refused.stderr
    assert str(folder / "server.db") in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (folder / "server.db").read_bytes() == data


def test_backend_init_drops_dangling_grants_of_an_older_schema(tmp_path, fresh_database):
    """A backend at schema version 10 (the last before this migration), as `backend init` left it."""
    old = 10
    assert SCHEMA_VERSION > old
    with connect(fresh_database) as db:
        db.execute("CREATE TABLE polycrate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                   " applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        for number, (name, step) in enumerate(MIGRATIONS[:old], 1):
            with db.transaction():
                step(db)
                db.execute("INSERT INTO polycrate_schema (version, name) VALUES (%s, %s)", (number, name))
        with db.transaction():
            db.execute("SET LOCAL search_path TO polycrate_server")
            _old_rows(db.execute, "%s")

    env = no_backend(tmp_path) | {"POLYCRATE_BACKEND": fresh_database}
    refused = run_cli("server", "grant", "list", env=env)
    assert refused.returncode != 0 and "run `polycrate backend init` to migrate it" in refused.stderr, refused.output
    init = run_cli("backend", "init", env=env)
    assert init.returncode == 0, init.output
    assert f"schema migrated from version {old} to {SCHEMA_VERSION}" in init.stdout, init.output
    _check_after_migration(env)
