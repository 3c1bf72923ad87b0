"""The server's state interface (server/state.py's StateStore) behaves the same in SQLite (no backend) and in the
team backend's PostgreSQL (server/state_postgres.py): users, tokens, sessions, login backoff, grants, teams,
launches and the audit. Each test runs against both (a real PostgreSQL, started by tests/postgres_server.py)."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from polycrate.errors import NotFoundError, PolycrateError
from polycrate.server import state as state_module
from polycrate.server.state import (
    AUDIT_ANONYMOUS_PER_MINUTE,
    LOGIN_FREE_FAILURES,
    LOGIN_MAX_FAILURES_PER_CLIENT,
    NAME_MAX,
    StateStore,
    token_hash,
)
from polycrate.server.state_backends import open_state

pytestmark = pytest.mark.team


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def opener(kind, tmp_path, request):
    """Opens a state (a second one on the same place is another server sharing it)."""
    backend = request.getfixturevalue("team_dsn") if kind == "postgresql" else None
    opened: list[StateStore] = []

    def open_one() -> StateStore:
        s = open_state(tmp_path / "state", backend)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def state(opener) -> Iterator[StateStore]:
    yield opener()


def _column(state: StateStore, sql: str, args: tuple = ()) -> list:
    return [next(iter(dict(r).values())) for r in state._sql(sql, args).fetchall()]


def test_users_passwords_are_scrypt_hashes_and_a_new_password_ends_sessions(state):
    state.add_user("ann", "viewer", "ann-password")
    stored = _column(state, "SELECT password FROM users WHERE name = ?", ("ann",))
    assert stored[0].startswith("scrypt$16384$8$1$") and "ann-password" not in stored[0]
    assert state.authenticate("ann", "ann-password") == "viewer"
    assert state.authenticate("ann", "wrong-password") is None
    assert state.authenticate("nobody", "ann-password") is None
    assert state.authenticate("x" * (NAME_MAX + 1), "ann-password") is None
    with pytest.raises(PolycrateError, match="exists"):
        state.add_user("ann", "admin", "other-password")
    with pytest.raises(PolycrateError, match="at least 8"):
        state.add_user("bob", "viewer", "short")
    with pytest.raises(PolycrateError, match="invalid user name"):
        state.add_user("no spaces", "viewer", "long-enough")
    with pytest.raises(PolycrateError, match="unknown role"):
        state.add_user("bob", "root", "long-enough")

    first, second = state.new_session("ann"), state.new_session("ann")
    state.add_user("ann", "admin", "other-password", replace=True)  # a new password ends every session
    assert state.session(first) is None and state.session(second) is None
    assert state.authenticate("ann", "other-password") == "admin"

    keep, other = state.new_session("ann"), state.new_session("ann")
    state.set_password("ann", "third-password", keep_session=keep)
    assert state.session(keep) is not None and state.session(other) is None
    assert not state.change_own_password("ann", "wrong-password", "fourth-password", keep)
    assert state.change_own_password("ann", "third-password", "fourth-password", keep)
    assert state.authenticate("ann", "fourth-password") == "admin"

    state.add_user("bob", "none", "bob-password")
    state.set_role("bob", "operator")
    assert [(u["name"], u["role"]) for u in state.users()] == [("ann", "admin"), ("bob", "operator")]
    assert all(set(u) == {"name", "role", "created"} for u in state.users())  # never the hash
    state.remove_user("bob")
    with pytest.raises(NotFoundError, match="no user 'bob'"):
        state.remove_user("bob")
    with pytest.raises(NotFoundError):
        state.set_role("bob", "viewer")


def test_sessions_carry_csrf_expire_and_end(state, monkeypatch):
    state.add_user("ann", "operator", "ann-password")
    session = state.new_session("ann")
    who = state.session(session)
    assert who is not None and (who.name, who.role, who.via) == ("ann", "operator", "session") and len(who.csrf) > 30
    assert state.still_valid(who)
    assert session not in str(_column(state, "SELECT hash FROM sessions"))  # only its hash is kept
    assert token_hash(session) in _column(state, "SELECT hash FROM sessions")
    state.end_session(session)
    assert state.session(session) is None and not state.still_valid(who)

    monkeypatch.setattr(state_module, "SESSION_SECONDS", -1.0)  # a session that expired as it was made
    expired = state.new_session("ann")
    assert state.session(expired) is None
    monkeypatch.setattr(state_module, "SESSION_SECONDS", 3600.0)
    live = state.new_session("ann")
    assert state.session(live) is not None
    state.remove_user("ann")  # a removed user's sessions go with it
    assert state.session(live) is None and _column(state, "SELECT hash FROM sessions") == []


def test_tokens_are_hashes_used_and_revoked(state):
    token = state.add_token("ci", "operator")
    assert token.startswith("pcs_")
    assert token not in str(_column(state, "SELECT hash FROM tokens")) and _column(state, "SELECT hash FROM tokens") \
        == [token_hash(token)]
    who = state.token(token)
    assert who is not None and (who.name, who.role, who.via, who.label) == ("ci", "operator", "token", "token:ci")
    assert state.tokens()[0]["last_used"] is not None and "hash" not in state.tokens()[0]
    assert state.token(token + "x") is None and state.token("not-a-token") is None
    assert state.still_valid(who)
    with pytest.raises(PolycrateError, match="exists"):
        state.add_token("ci", "viewer")
    state.remove_token("ci")
    assert state.token(token) is None and not state.still_valid(who)
    with pytest.raises(NotFoundError, match="no token 'ci'"):
        state.remove_token("ci")


def test_login_backoff_per_name_and_address(state):
    for _ in range(LOGIN_FREE_FAILURES - 1):
        assert state.begin_login("ann", "127.0.0.1") is not None  # each try counts until it proves right
    assert not state.login_blocked("ann", "127.0.0.1")
    state.record_login_failure("ann", "127.0.0.1")
    assert state.login_blocked("ann", "127.0.0.1") and state.begin_login("ann", "127.0.0.1") is None
    assert 0 < state.login_wait("ann", "127.0.0.1") <= 30
    assert not state.login_blocked("ann", "127.0.0.9") and not state.login_blocked("bob", "127.0.0.1")
    assert not state.login_blocked("ann", "127.0.0.1", now=time.time() + 16 * 60)
    state.login_succeeded("ann", "127.0.0.1")
    assert not state.login_blocked("ann", "127.0.0.1")
    for _ in range(LOGIN_FREE_FAILURES):
        state.record_login_failure("carl", None)  # no address known: counted as such
    assert state.login_blocked("carl", None) and not state.login_blocked("carl", "127.0.0.1")
    state.clear_login_failures("carl")
    assert not state.login_blocked("carl", None)
    for i in range(LOGIN_MAX_FAILURES_PER_CLIENT):
        state.record_login_failure(f"user{i}", "127.0.0.7")  # one address, many names
    assert state.login_blocked("someone-new", "127.0.0.7")


def test_audit_cuts_names_escapes_control_characters_and_filters(state):
    long_name = "m" * 300
    state.audit(long_name, "login", None, "failed", "127.0.0.1")
    state.audit("ann\x1b[2J", "launch", "ops/nightly", "ok", "127.0.0.1", {"run_id": "r1"})
    state.audit("ann", "launch", "ops/green", "refused: 100% busy", "127.0.0.1")
    rows = state.audit_log()
    assert [r["action"] for r in rows] == ["launch", "launch", "login"]  # newest first
    assert rows[2]["actor"] == "m" * NAME_MAX + "...(300 characters)"
    assert rows[1]["actor"] == "ann\\x1b[2J" and rows[1]["detail"] == {"run_id": "r1"}
    assert [r["target"] for r in state.audit_log(actor="ann")] == ["ops/green"]
    assert [r["target"] for r in state.audit_log(outcome="refused: 100%")] == ["ops/green"]
    assert state.audit_log(outcome="refused: 100_") == []  # % and _ are text, not patterns
    assert [r["action"] for r in state.audit_log(action="login")] == ["login"]
    assert [r["id"] for r in state.audit_log(1, before=rows[0]["id"])] == [rows[1]["id"]]
    assert state.audit_log(since=time.time() + 60) == []
    written = [state.audit_anonymous("x", "login", "failed", "127.0.0.5") for _ in range(AUDIT_ANONYMOUS_PER_MINUTE + 2)]
    assert written.count(True) == AUDIT_ANONYMOUS_PER_MINUTE and written[-1] is False
    assert len(state.audit_log(actor="x")) == AUDIT_ANONYMOUS_PER_MINUTE


def test_grants_teams_and_launches(state):
    state.add_user("ann", "none", "ann-password")
    token = state.add_token("ci", "none")
    state.grant("ann", "ops", "viewer")
    state.grant("token:ci", "lab", "operator")
    state.add_team("oncall")
    state.add_member("oncall", "ann")
    state.add_member("oncall", "ann")  # twice is once
    state.grant("team:oncall", "ops", "operator")
    who = state.session(state.new_session("ann"))
    assert who is not None and who.grants == (("ops", "operator"),) and who.may("operator", "ops")
    assert not who.may("viewer", "lab")
    ci = state.token(token)
    assert ci is not None and ci.grants == (("lab", "operator"),)
    assert state.teams() == [{"name": "oncall", "created": state.teams()[0]["created"], "members": ["ann"],
                              "grants": [{"workspace": "ops", "role": "operator"}]}]
    assert [(g["principal"], g["workspace"], g["role"]) for g in state.grants()] == [
        ("ann", "ops", "viewer"), ("team:oncall", "ops", "operator"), ("token:ci", "lab", "operator")]
    with pytest.raises(NotFoundError):
        state.grant("team:nobody", "ops", "viewer")
    state.remove_member("oncall", "ann")
    with pytest.raises(NotFoundError):
        state.remove_member("oncall", "ann")
    state.remove_team("oncall")
    assert state.teams() == [] and [g["principal"] for g in state.grants()] == ["ann", "token:ci"]
    state.revoke("ann", "ops")
    with pytest.raises(NotFoundError):
        state.revoke("ann", "ops")

    state.record_launch("run-1", "ann", "ops", "nightly", {"limit": "web1", "parameters": {"pw": "********"}},
                        {"limit": "web1"}, "/state/launches/run-1.secret.yml")
    launched = state.launch_of("run-1")
    assert launched is not None and launched["shown"] == {"limit": "web1", "parameters": {"pw": "********"}}
    assert launched["options"] == {"limit": "web1"} and launched["vars_file"] == "/state/launches/run-1.secret.yml"
    assert state.launch_of("run-2") is None


def test_a_grant_names_a_user_or_token_that_exists_and_goes_with_it(state):
    """A grant to a mistyped name is refused (it would wait for a later user or token of that name), and
    a removed token's grants go with it, as a removed user's do: a new token of that name starts bare."""
    with pytest.raises(NotFoundError, match="no user 'gohst'"):
        state.grant("gohst", "ops", "admin")
    with pytest.raises(NotFoundError, match="no token 'nope'"):
        state.grant("token:nope", "ops", "operator")
    assert state.grants() == []
    state.add_token("ci", "none")
    state.grant("token:ci", "ops", "operator")
    state.remove_token("ci")
    assert state.grants() == []
    again = state.token(state.add_token("ci", "none"))
    assert again is not None and again.grants == () and not again.sees("ops")


def test_two_openers_share_one_state(opener, kind):
    """Two servers on one state (PostgreSQL: two on one backend; SQLite: two on one folder) see each other."""
    a, b = opener(), opener()
    a.add_user("ann", "operator", "ann-password")
    assert b.authenticate("ann", "ann-password") == "operator"
    session = a.new_session("ann")
    who = b.session(session)
    assert who is not None and who.csrf == a.session(session).csrf
    b.end_session(session)
    assert a.session(session) is None
    a.audit("ann", "login")
    b.audit("ann", "logout")
    assert [r["action"] for r in a.audit_log()] == [r["action"] for r in b.audit_log()] == ["logout", "login"]
    for _ in range(LOGIN_FREE_FAILURES - 1):
        assert a.begin_login("bob", "127.0.0.1") is not None
    assert b.begin_login("bob", "127.0.0.1") is not None
    assert a.begin_login("bob", "127.0.0.1") is None  # the count is one over both


def test_a_broken_backend_connection_is_made_anew(team_dsn):
    """The backend restarted under a server (here: its connection ended by PostgreSQL): the request that meets
    the break fails, the next one works on a new connection, and nothing was lost."""
    import psycopg

    from polycrate.history.postgres import connect

    state = open_state(None, team_dsn)
    try:
        state.add_user("ann", "viewer", "ann-password")
        pid = _column(state, "SELECT pg_backend_pid() AS pid")[0]
        admin = connect(team_dsn)
        try:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            admin.close()
        with pytest.raises(psycopg.OperationalError):
            state.users()
        assert [u["name"] for u in state.users()] == ["ann"]
        assert _column(state, "SELECT pg_backend_pid() AS pid")[0] != pid
    finally:
        state.close()
