"""The server's own state: users, API tokens, sessions, the audit log, login failures, grants, teams, launches.

Behind one interface (``StateStore``, which holds every rule) in two places: with a team backend, in its
PostgreSQL (``server/state_postgres.py``), shared by every ``polycrate serve`` on it, so they are
interchangeable; without one (the default), SQLite at ``$POLYCRATE_SERVER_STATE/server.db`` (default
``$XDG_DATA_HOME/polycrate/server``, i.e. ``~/.local/share/polycrate/server``), mode 0600 in a 0700 folder.
Nothing secret is stored in the clear: passwords as scrypt hashes (memory-hard, 16 MiB per hash), API tokens and session
ids as SHA-256 hashes (they are 256-bit random values, so a fast hash is enough). A token is shown
once, when it is made.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.errors import NotFoundError, PolycrateError
from polycrate.history.migrations import Migration, migrate

ROLES = ("viewer", "operator", "admin")  # each includes the ones before it
NO_ROLE = "none"  # a user or token with this global role sees only the workspaces granted to it
TOKEN_PREFIX = "pcs_"
TEAM_PREFIX = "team:"  # a grant's principal: a user's name, token:NAME or team:NAME
TOKEN_GRANT_PREFIX = "token:"
SESSION_SECONDS = 12 * 3600
LOGIN_WINDOW = 15 * 60  # seconds over which failed logins are counted
LOGIN_FREE_FAILURES = 5  # per user name and address, before that pair waits (backoff)
LOGIN_FIRST_WAIT = 30.0  # seconds after the 5th failure; doubles with each further one
LOGIN_MAX_WAIT = 15 * 60
LOGIN_MAX_FAILURES_PER_CLIENT = 20  # per client address over all names (one address may be a whole office)
NAME_MAX = 64  # a user or token name; what the audit keeps of a claimed name longer than this is cut
AUDIT_ANONYMOUS_PER_MINUTE = 10  # rows one address may add without being logged in; the rest are counted
AUDIT_ANONYMOUS_TOTAL_PER_MINUTE = 60  # the same over all addresses (an attacker has many)

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # 16 MiB of memory per hash
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    client TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (time);
CREATE TABLE IF NOT EXISTS login_failures (
    time REAL NOT NULL,
    user TEXT NOT NULL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS login_failures_by_time ON login_failures (time);
CREATE TABLE IF NOT EXISTS grants (
    principal TEXT NOT NULL,
    workspace TEXT NOT NULL,
    role TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (principal, workspace)
);
CREATE TABLE IF NOT EXISTS teams (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS team_members (
    team TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created REAL NOT NULL,
    PRIMARY KEY (team, user)
);
CREATE TABLE IF NOT EXISTS launches (
    run_id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    workspace TEXT NOT NULL,
    workflow TEXT NOT NULL,
    shown TEXT NOT NULL,
    options TEXT NOT NULL,
    vars_file TEXT
);
"""

# Grants whose user, token or team no longer exists. Before grants needed their principal to exist and a
# removed token took its grants with it, such rows were written; a later user, token or team of that name
# would have inherited them. Frozen as shipped (a migration must not change when the code does); the
# backend's migration 11 (history/postgres.py) is the same statement.
_DANGLING_GRANTS = (
    "FROM grants WHERE CASE"
    " WHEN substr(principal, 1, 6) = 'token:' THEN NOT EXISTS (SELECT 1 FROM tokens WHERE name = substr(principal, 7))"
    " WHEN substr(principal, 1, 5) = 'team:' THEN NOT EXISTS (SELECT 1 FROM teams WHERE name = substr(principal, 6))"
    " ELSE NOT EXISTS (SELECT 1 FROM users WHERE name = principal) END")


def _v1_tables(db: sqlite3.Connection) -> None:
    # what every open applied before server.db had versions (a store of version 0 has them: each is IF NOT EXISTS)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _v2_dangling_grants(db: sqlite3.Connection) -> None:
    # each removed grant is audited: an admin who finds it gone reads why
    db.execute("INSERT INTO audit (time, actor, action, target, outcome, detail) SELECT ?, 'polycrate',"
               " 'grant-remove', principal || '@' || workspace, 'ok', json_object('role', role, 'reason',"
               " 'its user, token or team no longer exists (removed by a schema migration)') " + _DANGLING_GRANTS,
               (time.time(),))
    db.execute("DELETE " + _DANGLING_GRANTS)


# server.db's schema as migrations, its version in PRAGMA user_version (history/migrations.py's rules: append
# only, never edit one that shipped; each safe on a store that already has its change). A change to SCHEMA above
# is a new migration here too.
SERVER_MIGRATIONS: tuple[Migration, ...] = (
    ("users, tokens, sessions, audit, login_failures, grants, teams, team_members, launches (the first schema)",
     _v1_tables),
    ("grants of users, tokens and teams that no longer exist are removed (and audited)", _v2_dangling_grants),
)


def bounded(text: object, limit: int = NAME_MAX) -> str:
    """A name someone claimed, as the audit keeps it: at most `limit` characters (and how many there were),
    control characters written as escapes, so no row is huge and none moves an admin's cursor."""
    value = str(text)
    cut = value[:limit]
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
    return shown + (f"...({len(value)} characters)" if len(value) > limit else "")


def default_state_dir() -> Path:
    explicit = os.environ.get("POLYCRATE_SERVER_STATE")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "polycrate" / "server"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


_DUMMY_HASH = hash_password(secrets.token_hex(8))  # unknown users cost as much as known ones


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def higher(a: str | None, b: str | None) -> str:
    ranked = [r for r in (a, b) if r in ROLES]
    return max(ranked, key=ROLES.index) if ranked else NO_ROLE


def check_role(role: str, *, none_ok: bool = False) -> str:
    if role not in ROLES and not (none_ok and role == NO_ROLE):
        allowed = ROLES + ((NO_ROLE,) if none_ok else ())
        raise PolycrateError(f"unknown role '{role}' (roles: {', '.join(allowed)})")
    return role


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise PolycrateError("the password must have at least 8 characters")
    if len(password) > 1024:  # authenticate refuses longer ones: such a password could never log in
        raise PolycrateError("the password must have at most 1024 characters")


def check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise PolycrateError(f"invalid {what} name {name!r}: letters, digits, '.', '_', '@', '-', at most 64")
    return name


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a logged-in user (session) or an API token."""

    name: str
    role: str  # in every workspace ("none": only where granted)
    via: str  # "session" | "token"
    csrf: str | None = None  # the session's CSRF token; None for bearer tokens (no ambient credential)
    grants: tuple[tuple[str, str], ...] = ()  # (workspace, role): more than `role` in that workspace
    secret: str | None = field(default=None, repr=False, compare=False)  # the session id or token, to re-check

    @property
    def label(self) -> str:
        return self.name if self.via == "session" else f"token:{self.name}"

    @property
    def everywhere(self) -> bool:
        """Whether this principal sees every workspace (then a run may be named by a prefix of its id)."""
        return self.role in ROLES

    def role_in(self, workspace: str | None) -> str:
        granted = dict(self.grants).get(workspace) if workspace is not None else None
        return higher(self.role, granted)

    def may(self, needed: str, workspace: str | None = None) -> bool:
        """The role is held everywhere, or (with `workspace`) in that workspace."""
        return role_allows(self.role_in(workspace) if workspace is not None else self.role, needed)

    def may_somewhere(self, needed: str) -> bool:
        return self.may(needed) or any(role_allows(role, needed) for _, role in self.grants)

    def sees(self, workspace: str) -> bool:
        return self.may("viewer", workspace)


class StateStore(ABC):
    """The server's state, whatever holds it: every rule lives here (password hashing, session expiry, the
    login backoff, the audit's cut names), written once in SQL that SQLite and PostgreSQL both read. An
    implementation gives ``_sql`` (one statement, ``?`` placeholders, rows readable by column name),
    ``_serialized`` (the login count's critical section, across every server that shares the state),
    ``where`` (named in errors) and ``close``."""

    where: str | Path

    def __init__(self) -> None:
        self._login_lock = threading.Lock()  # this process's anonymous audit budget
        self._anonymous: dict[str | None, list[float]] = {}  # address -> times of its anonymous audit rows
        self._suppressed = 0  # anonymous rows not written since the last one that was

    @abstractmethod
    def _sql(self, sql: str, args: tuple = ()) -> Any: ...

    @abstractmethod
    def _serialized(self) -> AbstractContextManager[object]: ...

    @abstractmethod
    def close(self) -> None: ...

    # --- users -----------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str, *, replace: bool = False) -> None:
        check_name(name, "user")
        check_role(role, none_ok=True)
        _check_password(password)
        exists = self._sql("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
        if exists and not replace:
            raise PolycrateError(f"user '{name}' exists (use --replace to set a new password or role)")
        self._sql(
            "INSERT INTO users (name, role, password, created) VALUES (?,?,?,?) ON CONFLICT (name) DO UPDATE"
            " SET role = excluded.role, password = excluded.password",
            (name, role, hash_password(password), time.time()),
        )
        if exists:  # a new password ends the old sessions
            self._sql("DELETE FROM sessions WHERE user = ?", (name,))

    def remove_user(self, name: str) -> None:
        if self._sql("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"no user '{name}'", self.where)
        self._sql("DELETE FROM grants WHERE principal = ?", (name,))  # a later user of that name starts bare

    def _user_exists(self, name: str) -> None:
        if not self._sql("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise NotFoundError(f"no user '{bounded(name)}'", self.where)

    def set_role(self, name: str, role: str) -> None:
        check_role(role, none_ok=True)
        self._user_exists(name)
        self._sql("UPDATE users SET role = ? WHERE name = ?", (role, name))

    def set_password(self, name: str, password: str, *, keep_session: str | None = None) -> None:
        """A new password ends the user's sessions, but `keep_session` (the one changing its own password)."""
        _check_password(password)
        self._user_exists(name)
        self._sql("UPDATE users SET password = ? WHERE name = ?", (hash_password(password), name))
        keep = token_hash(keep_session) if keep_session else ""
        self._sql("DELETE FROM sessions WHERE user = ? AND hash != ?", (name, keep))

    def change_own_password(self, name: str, current: str, new: str, session: str | None) -> bool:
        """False when `current` is not the user's password (nothing changed)."""
        if self.authenticate(name, current) is None:
            return False
        self.set_password(name, new, keep_session=session)
        return True

    def users(self) -> list[dict]:
        return [dict(r) for r in self._sql("SELECT name, role, created FROM users ORDER BY name")]

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same cost either way)."""
        if len(name) > NAME_MAX or len(password) > 1024:
            verify_password("", _DUMMY_HASH)  # the same cost: the answer says nothing about which was long
            return None
        row = self._sql("SELECT role, password FROM users WHERE name = ?", (name,)).fetchone()
        ok = verify_password(password, row["password"] if row else _DUMMY_HASH)
        return row["role"] if row and ok else None

    # --- login rate limit ------------------------------------------------------------------
    # Failures count per user name AND address: five from one address make that pair wait (30 s,
    # doubling, at most 15 min); the owner at another address is not locked out. One address trying
    # many names waits after 20 in the window. A try is counted before its password is checked
    # (begin_login), so concurrent tries cannot slip past the count.

    def login_wait(self, name: str, client: str | None, now: float | None = None) -> float:
        """Seconds this name from this address must wait before its password is checked again (0: go)."""
        now = now or time.time()
        since = now - LOGIN_WINDOW
        row = self._sql("SELECT COUNT(*) AS n, MAX(time) AS last FROM login_failures WHERE time > ? AND user = ?"
                        " AND client IS NOT DISTINCT FROM ?", (since, bounded(name), client)).fetchone()
        count, last = row["n"], row["last"]
        wait = 0.0
        if count >= LOGIN_FREE_FAILURES:
            wait = max(0.0, last + min(LOGIN_FIRST_WAIT * 2 ** (count - LOGIN_FREE_FAILURES), LOGIN_MAX_WAIT) - now)
        if client:
            per_client = self._sql("SELECT COUNT(*) AS n, MAX(time) AS last FROM login_failures WHERE time > ?"
                                   " AND client = ?", (since, client)).fetchone()
            if per_client["n"] >= LOGIN_MAX_FAILURES_PER_CLIENT:
                wait = max(wait, per_client["last"] + LOGIN_WINDOW - now)
        return wait

    def login_blocked(self, name: str, client: str | None, now: float | None = None) -> bool:
        return self.login_wait(name, client, now) > 0

    def begin_login(self, name: str, client: str | None) -> float | None:
        """Counts a try as failed before its password is checked (`login_succeeded` takes it back when the
        password was right); the try's time, or None when the pair must wait."""
        with self._serialized():
            if self.login_blocked(name, client):
                return None
            now = time.time()
            self._sql("DELETE FROM login_failures WHERE time < ?", (now - LOGIN_WINDOW,))
            self._sql("INSERT INTO login_failures (time, user, client) VALUES (?,?,?)", (now, bounded(name), client))
            return now

    def login_succeeded(self, name: str, client: str | None) -> None:
        self._sql("DELETE FROM login_failures WHERE user = ? AND client IS NOT DISTINCT FROM ?", (bounded(name), client))

    def record_login_failure(self, name: str, client: str | None) -> None:
        now = time.time()
        self._sql("DELETE FROM login_failures WHERE time < ?", (now - LOGIN_WINDOW,))
        self._sql("INSERT INTO login_failures (time, user, client) VALUES (?,?,?)", (now, bounded(name), client))

    def clear_login_failures(self, name: str) -> None:
        self._sql("DELETE FROM login_failures WHERE user = ?", (bounded(name),))

    # --- sessions --------------------------------------------------------------------------

    def new_session(self, user: str) -> str:
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        self._sql("DELETE FROM sessions WHERE expires < ?", (now,))
        self._sql("INSERT INTO sessions (hash, user, csrf, created, expires) VALUES (?,?,?,?,?)",
                        (token_hash(session_id), user, secrets.token_urlsafe(32), now, now + SESSION_SECONDS))
        return session_id

    def session(self, session_id: str) -> Principal | None:
        row = self._sql(
            "SELECT s.user, s.csrf, u.role FROM sessions s JOIN users u ON u.name = s.user"
            " WHERE s.hash = ? AND s.expires > ?", (token_hash(session_id), time.time())).fetchone()
        if row is None:
            return None
        return Principal(row["user"], row["role"], "session", row["csrf"], self.grants_of(row["user"]), session_id)

    def end_session(self, session_id: str) -> None:
        self._sql("DELETE FROM sessions WHERE hash = ?", (token_hash(session_id),))

    # --- tokens ----------------------------------------------------------------------------

    def add_token(self, name: str, role: str) -> str:
        check_name(name, "token")
        check_role(role, none_ok=True)
        if self._sql("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise PolycrateError(f"token '{name}' exists (remove it first: polycrate server token remove {name})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._sql("INSERT INTO tokens (name, role, hash, created) VALUES (?,?,?,?)",
                        (name, role, token_hash(token), time.time()))
        return token

    def remove_token(self, name: str) -> None:
        if self._sql("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"no token '{name}'", self.where)
        self._sql("DELETE FROM grants WHERE principal = ?", (TOKEN_GRANT_PREFIX + name,))  # a later token starts bare

    def _token_exists(self, name: str) -> None:
        if not self._sql("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise NotFoundError(f"no token '{bounded(name)}'", self.where)

    def tokens(self) -> list[dict]:
        return [dict(r) for r in self._sql("SELECT name, role, created, last_used FROM tokens ORDER BY name")]

    def token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_hash(token)
        row = self._sql("SELECT name, role FROM tokens WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            return None
        self._sql("UPDATE tokens SET last_used = ? WHERE hash = ?", (time.time(), digest))
        return Principal(row["name"], row["role"], "token", None, self.grants_of(f"token:{row['name']}"), token)

    def still_valid(self, who: Principal) -> bool:
        """Whether the session or token behind `who` still holds (a live stream asks this as it goes)."""
        if who.secret is None:
            return False
        if who.via == "session":
            return self._sql("SELECT 1 FROM sessions WHERE hash = ? AND expires > ?",
                             (token_hash(who.secret), time.time())).fetchone() is not None
        return self._sql("SELECT 1 FROM tokens WHERE hash = ?", (token_hash(who.secret),)).fetchone() is not None

    # --- grants ----------------------------------------------------------------------------

    def grants_of(self, principal: str) -> tuple[tuple[str, str], ...]:
        """The principal's own grants and, for a user, those of its teams: per workspace the highest role."""
        rows = self._sql("SELECT workspace, role FROM grants WHERE principal = ? UNION ALL"
                         " SELECT g.workspace, g.role FROM grants g JOIN team_members m"
                         " ON g.principal = 'team:' || m.team WHERE m.user = ?", (principal, principal))
        best: dict[str, str] = {}
        for r in rows:
            best[r["workspace"]] = higher(best.get(r["workspace"]), r["role"])
        return tuple(sorted(best.items()))

    def grant(self, principal: str, workspace: str, role: str) -> None:
        """`principal` is a user name, `token:NAME` or `team:NAME`; the role applies in that workspace only."""
        # the principal must exist: a grant to a mistyped name would wait for a later user or token of that name
        if principal.startswith(TEAM_PREFIX):
            self._team_exists(principal.removeprefix(TEAM_PREFIX))
        elif principal.startswith(TOKEN_GRANT_PREFIX):
            self._token_exists(principal.removeprefix(TOKEN_GRANT_PREFIX))
        else:
            self._user_exists(principal)
        check_role(role)
        if not workspace or len(workspace) > 200 or not workspace.isprintable():
            raise PolycrateError(f"invalid workspace name {workspace!r}")
        self._sql("INSERT INTO grants (principal, workspace, role, created) VALUES (?,?,?,?) ON CONFLICT"
                  " (principal, workspace) DO UPDATE SET role = excluded.role", (principal, workspace, role, time.time()))

    def revoke(self, principal: str, workspace: str) -> None:
        if self._sql("DELETE FROM grants WHERE principal = ? AND workspace = ?", (principal, workspace)).rowcount == 0:
            raise NotFoundError(f"no grant for '{principal}' in '{workspace}'", self.where)

    def grants(self) -> list[dict]:
        return [dict(r) for r in self._sql("SELECT principal, workspace, role, created FROM grants"
                                           " ORDER BY principal, workspace")]

    # --- teams ------------------------------------------------------------------------------
    # A team is a name with members (users); a grant to `team:NAME` gives each member that role in the
    # workspace (a member's own grant or global role may be higher: the highest counts).

    def _team_exists(self, name: str) -> None:
        if not self._sql("SELECT 1 FROM teams WHERE name = ?", (name,)).fetchone():
            raise NotFoundError(f"no team '{bounded(name)}'", self.where)

    def add_team(self, name: str) -> None:
        check_name(name, "team")
        if self._sql("SELECT 1 FROM teams WHERE name = ?", (name,)).fetchone():
            raise PolycrateError(f"team '{name}' exists")
        self._sql("INSERT INTO teams (name, created) VALUES (?,?)", (name, time.time()))

    def remove_team(self, name: str) -> None:
        if self._sql("DELETE FROM teams WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"no team '{bounded(name)}'", self.where)
        self._sql("DELETE FROM grants WHERE principal = ?", (TEAM_PREFIX + name,))

    def add_member(self, team: str, user: str) -> None:
        self._team_exists(team)
        self._user_exists(user)
        self._sql("INSERT INTO team_members (team, user, created) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                  (team, user, time.time()))

    def remove_member(self, team: str, user: str) -> None:
        if self._sql("DELETE FROM team_members WHERE team = ? AND user = ?", (team, user)).rowcount == 0:
            raise NotFoundError(f"'{bounded(user)}' is not in team '{bounded(team)}'", self.where)

    def teams(self) -> list[dict]:
        """Every team with its members (sorted) and its grants."""
        members: dict[str, list[str]] = {}
        for r in self._sql("SELECT team, user FROM team_members ORDER BY team, user"):
            members.setdefault(r["team"], []).append(r["user"])
        grants: dict[str, list[dict]] = {}
        for r in self._sql("SELECT principal, workspace, role FROM grants WHERE principal LIKE 'team:%'"
                           " ORDER BY workspace"):
            grants.setdefault(r["principal"].removeprefix(TEAM_PREFIX), []).append(
                {"workspace": r["workspace"], "role": r["role"]})
        return [{"name": r["name"], "created": r["created"], "members": members.get(r["name"], []),
                 "grants": grants.get(r["name"], [])}
                for r in self._sql("SELECT name, created FROM teams ORDER BY name")]

    # --- launches --------------------------------------------------------------------------

    def record_launch(self, run_id: str, actor: str, workspace: str, workflow: str, shown: dict, options: dict,
                      vars_file: str | None) -> None:
        """What the server launched: `shown` is what pages may show (secret values masked); `options` and
        the vars file are what a relaunch reuses."""
        self._sql("INSERT INTO launches (run_id, time, actor, workspace, workflow, shown, options, vars_file)"
                  " VALUES (?,?,?,?,?,?,?,?)", (run_id, time.time(), actor, workspace, workflow,
                                                json.dumps(shown, sort_keys=True), json.dumps(options), vars_file))

    def launch_of(self, run_id: str) -> dict | None:
        row = self._sql("SELECT * FROM launches WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return dict(row) | {"shown": json.loads(row["shown"]), "options": json.loads(row["options"])}

    # --- audit -----------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str | None = None, outcome: str = "ok",
              client: str | None = None, detail: dict | None = None) -> None:
        self._sql(
            "INSERT INTO audit (time, actor, action, target, outcome, client, detail) VALUES (?,?,?,?,?,?,?)",
            (time.time(), bounded(actor), action, bounded(target, 300) if target is not None else None,
             bounded(outcome, 300), client, json.dumps(detail or {}, sort_keys=True)),
        )

    def audit_anonymous(self, actor: str, action: str, outcome: str, client: str | None,
                        detail: dict | None = None) -> bool:
        """An audit row for someone not logged in, within a budget per address and in all: beyond it the
        row is only counted, and the next row written says how many were left out. False when left out."""
        suppressed = self._anonymous_budget(client, time.time())
        if suppressed is None:
            return False
        extra = {"not_logged_before": suppressed} if suppressed else {}
        self.audit(actor, action, None, outcome, client, (detail or {}) | extra)
        return True

    def _anonymous_budget(self, client: str | None, now: float) -> int | None:
        """Take one row of the anonymous budget: None when it is spent (the row is counted as left out), else
        how many were left out before it. In this process's memory; with a backend in PostgreSQL (one budget
        for every server)."""
        with self._login_lock:
            for key in list(self._anonymous):
                self._anonymous[key] = [t for t in self._anonymous[key] if t > now - 60]
                if not self._anonymous[key]:
                    del self._anonymous[key]
            mine = self._anonymous.setdefault(client, [])
            total = sum(len(v) for v in self._anonymous.values())
            if len(mine) >= AUDIT_ANONYMOUS_PER_MINUTE or total >= AUDIT_ANONYMOUS_TOTAL_PER_MINUTE:
                self._suppressed += 1
                return None
            mine.append(now)
            suppressed, self._suppressed = self._suppressed, 0
        return suppressed

    def audit_log(self, limit: int = 200, *, before: int | None = None, actor: str | None = None,
                  action: str | None = None, outcome: str | None = None, since: float | None = None) -> list[dict]:
        """Newest first; `before` (a row id) pages back; the filters match exactly (outcome: its beginning)."""
        where, args = [], []
        for column, value in (("id < ?", before), ("actor = ?", actor), ("action = ?", action),
                              ("time >= ?", since)):
            if value is not None:
                where.append(column)
                args.append(value)
        if outcome is not None:
            where.append("outcome LIKE ? ESCAPE '\\'")
            args.append(outcome.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._sql(sql, (*args, limit)).fetchall()
        return [dict(r) | {"detail": json.loads(r["detail"] or "{}")} for r in rows]


class ServerState(StateStore):
    """The state in SQLite (the default, without a backend): ``server.db`` in the state folder."""

    def __init__(self, folder: Path | None = None):
        super().__init__()
        self.folder = folder or default_state_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.path = self.where = self.folder / "server.db"
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._serial = threading.Lock()
        self._sql("PRAGMA foreign_keys = ON")
        try:
            # first: a state from a newer polycrate is refused before anything is written to it
            migrate(self.db, self.path, SERVER_MIGRATIONS, "the server state")
        except BaseException:
            self.db.close()
            raise
        try:
            self._sql("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            pass
        os.chmod(self.path, 0o600)

    def _sql(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        # one connection shared by the server's worker threads: one statement at a time
        with self._lock:
            return self.db.execute(sql, args)

    def _serialized(self) -> AbstractContextManager[object]:
        return self._serial  # one server per state folder: a lock of this process is enough

    def close(self) -> None:
        self.db.close()
