"""The server's own state: users, API tokens, sessions, the audit log, login failures.

SQLite at ``$POLYCRATE_SERVER_STATE/server.db`` (default ``$XDG_DATA_HOME/polycrate/server``,
i.e. ``~/.local/share/polycrate/server``), mode 0600 in a 0700 folder. Nothing secret is stored
in the clear: passwords as scrypt hashes (memory-hard, 16 MiB per hash), API tokens and session
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
from dataclasses import dataclass
from pathlib import Path

from polycrate.errors import NotFoundError, PolycrateError

ROLES = ("viewer", "operator", "admin")  # each includes the ones before it
TOKEN_PREFIX = "pcs_"
SESSION_SECONDS = 12 * 3600
LOGIN_WINDOW = 15 * 60  # seconds over which failed logins are counted
LOGIN_MAX_FAILURES = 5  # per user name within the window
LOGIN_MAX_FAILURES_PER_CLIENT = 20  # per client address (one address may be a whole office behind NAT)

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
"""


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


def check_role(role: str) -> str:
    if role not in ROLES:
        raise PolycrateError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
    return role


def check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise PolycrateError(f"invalid {what} name {name!r}: letters, digits, '.', '_', '@', '-', at most 64")
    return name


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a logged-in user (session) or an API token."""

    name: str
    role: str
    via: str  # "session" | "token"
    csrf: str | None = None  # the session's CSRF token; None for bearer tokens (no ambient credential)

    @property
    def label(self) -> str:
        return self.name if self.via == "session" else f"token:{self.name}"

    def may(self, needed: str) -> bool:
        return role_allows(self.role, needed)


class ServerState:
    def __init__(self, folder: Path | None = None):
        self.folder = folder or default_state_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.path = self.folder / "server.db"
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._sql("PRAGMA foreign_keys = ON")
        try:
            self._sql("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            pass
        self.db.executescript(SCHEMA)
        os.chmod(self.path, 0o600)

    def _sql(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        # one connection shared by the server's worker threads: one statement at a time
        with self._lock:
            return self.db.execute(sql, args)

    def close(self) -> None:
        self.db.close()

    # --- users -----------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str, *, replace: bool = False) -> None:
        check_name(name, "user")
        check_role(role)
        if len(password) < 8:
            raise PolycrateError("the password must have at least 8 characters")
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
            raise NotFoundError(f"no user '{name}'", self.path)

    def users(self) -> list[dict]:
        return [dict(r) for r in self._sql("SELECT name, role, created FROM users ORDER BY name")]

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same cost either way)."""
        row = self._sql("SELECT role, password FROM users WHERE name = ?", (name,)).fetchone()
        ok = verify_password(password, row["password"] if row else _DUMMY_HASH)
        return row["role"] if row and ok else None

    # --- login rate limit ------------------------------------------------------------------

    def login_blocked(self, name: str, client: str | None, now: float | None = None) -> bool:
        now = now or time.time()
        since = now - LOGIN_WINDOW
        by_user = self._sql("SELECT COUNT(*) FROM login_failures WHERE time > ? AND user = ?",
                                  (since, name)).fetchone()[0]
        by_client = self._sql("SELECT COUNT(*) FROM login_failures WHERE time > ? AND client = ?",
                                    (since, client)).fetchone()[0] if client else 0
        return by_user >= LOGIN_MAX_FAILURES or by_client >= LOGIN_MAX_FAILURES_PER_CLIENT

    def record_login_failure(self, name: str, client: str | None) -> None:
        now = time.time()
        self._sql("DELETE FROM login_failures WHERE time < ?", (now - LOGIN_WINDOW,))
        self._sql("INSERT INTO login_failures (time, user, client) VALUES (?,?,?)", (now, name, client))

    def clear_login_failures(self, name: str) -> None:
        self._sql("DELETE FROM login_failures WHERE user = ?", (name,))

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
        return Principal(row["user"], row["role"], "session", row["csrf"]) if row else None

    def end_session(self, session_id: str) -> None:
        self._sql("DELETE FROM sessions WHERE hash = ?", (token_hash(session_id),))

    # --- tokens ----------------------------------------------------------------------------

    def add_token(self, name: str, role: str) -> str:
        check_name(name, "token")
        check_role(role)
        if self._sql("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise PolycrateError(f"token '{name}' exists (remove it first: polycrate server token remove {name})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._sql("INSERT INTO tokens (name, role, hash, created) VALUES (?,?,?,?)",
                        (name, role, token_hash(token), time.time()))
        return token

    def remove_token(self, name: str) -> None:
        if self._sql("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"no token '{name}'", self.path)

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
        return Principal(row["name"], row["role"], "token")

    # --- audit -----------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str | None = None, outcome: str = "ok",
              client: str | None = None, detail: dict | None = None) -> None:
        self._sql(
            "INSERT INTO audit (time, actor, action, target, outcome, client, detail) VALUES (?,?,?,?,?,?,?)",
            (time.time(), actor, action, target, outcome, client, json.dumps(detail or {}, sort_keys=True)),
        )

    def audit_log(self, limit: int = 200) -> list[dict]:
        rows = self._sql("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) | {"detail": json.loads(r["detail"] or "{}")} for r in rows]
