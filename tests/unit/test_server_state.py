"""The server's state (users, tokens, sessions, rate limit, audit), its charts and its lazy imports."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polycrate.errors import PolycrateError
from polycrate.history import RunRecord
from polycrate.server import chart
from polycrate.server.state import (
    LOGIN_FREE_FAILURES,
    ServerState,
    hash_password,
    role_allows,
    verify_password,
)


@pytest.fixture
def state(tmp_path):
    s = ServerState(tmp_path / "state")
    yield s
    s.close()


def test_passwords_are_scrypt_hashed_and_checked():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert hash_password("correct horse") != stored  # salted
    assert not verify_password("x", "garbage")


def test_roles_include_the_lower_ones():
    assert role_allows("admin", "operator") and role_allows("operator", "viewer") and role_allows("viewer", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")


def test_tokens_are_stored_as_hashes_only(state, tmp_path):
    token = state.add_token("ci", "operator")
    assert state.token(token).role == "operator"
    assert state.token(token + "x") is None and state.token("not-a-token") is None
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("server.db*"))  # the WAL too
    assert token.encode() not in raw
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw
    state.remove_token("ci")
    assert state.token(token) is None
    with pytest.raises(PolycrateError, match="unknown role"):
        state.add_token("x", "root")
    with pytest.raises(PolycrateError, match="invalid token name"):
        state.add_token("no spaces", "viewer")


def test_users_sessions_and_a_new_password_ends_sessions(state):
    state.add_user("ann", "viewer", "ann-password")
    assert state.authenticate("ann", "ann-password") == "viewer"
    assert state.authenticate("ann", "wrong-password") is None
    assert state.authenticate("nobody", "ann-password") is None
    session = state.new_session("ann")
    who = state.session(session)
    assert who.name == "ann" and who.via == "session" and len(who.csrf) > 30
    with pytest.raises(PolycrateError, match="exists"):
        state.add_user("ann", "admin", "other-password")
    state.add_user("ann", "admin", "other-password", replace=True)
    assert state.session(session) is None
    session = state.new_session("ann")
    state.end_session(session)
    assert state.session(session) is None


def test_login_failures_make_that_user_and_address_wait_not_the_user(state):
    for _ in range(LOGIN_FREE_FAILURES - 1):
        state.record_login_failure("ann", "127.0.0.1")
    assert not state.login_blocked("ann", "127.0.0.1")
    state.record_login_failure("ann", "127.0.0.1")
    assert state.login_blocked("ann", "127.0.0.1")
    assert not state.login_blocked("ann", "127.0.0.9")  # ann elsewhere is not locked out (issue #26)
    assert not state.login_blocked("bob", "127.0.0.1")
    assert not state.login_blocked("ann", "127.0.0.1", now=time.time() + 16 * 60)
    state.clear_login_failures("ann")
    assert not state.login_blocked("ann", "127.0.0.1")


def test_audit_keeps_newest_first(state):
    state.audit("ann", "login", outcome="ok", client="127.0.0.1")
    state.audit("ann", "launch", "ops/nightly", detail={"run_id": "r1"})
    log = state.audit_log()
    assert [a["action"] for a in log] == ["launch", "login"] and log[0]["detail"] == {"run_id": "r1"}


def test_duration_chart_is_svg_without_style_or_script():
    runs = [RunRecord(id=f"r{i}", kind="workflow", name="w", started=0.0, status=s, duration=d)
            for i, (s, d) in enumerate([("succeeded", 10.0), ("failed", 30.0), ("interrupted", 5.0)])]
    svg = chart.durations(runs)
    assert svg.startswith("<svg") and svg.count("<rect") == 3
    assert 'fill="#c62828"' in svg and 'data-status="failed"' in svg
    assert "style=" not in svg and "<script" not in svg
    assert chart.durations([]) == ""


def test_web_stack_loads_only_for_serve():
    code = (
        "import sys, contextlib, io\n"
        "from polycrate.cli import main\n"
        "for argv in (['--help'], ['server', '--help'], ['serve', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2', 'polycrate.server.app') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_vendored_htmx_matches_its_noted_checksum():
    static = Path(__import__("polycrate.server", fromlist=["x"]).__file__).parent / "static"
    digest = hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest()
    assert digest in (static / "VENDOR.md").read_text()
