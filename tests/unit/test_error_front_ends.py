"""One refusal, its advice in each front end's words (errors.PolycrateError.hints): the terminal's flags only at a
terminal, the web view's words in the server's child (launched by web:NAME), none in a scheduled run's record."""
from __future__ import annotations

import pytest

from polycrate.cli import _front_end
from polycrate.errors import CLI, SCHEDULE, WEB, LockedError, PolycrateError


def test_an_error_is_said_with_the_hint_of_whom_it_is_said_to():
    exc = PolycrateError("workflow 'x' asks for confirmation", "/ws/workspace.poly", 4,
                         hints={CLI: "re-run with --force", WEB: "tick its confirmation box"})
    assert exc.message == "workflow 'x' asks for confirmation; re-run with --force"  # the CLI's, as before
    assert str(exc) == "/ws/workspace.poly:4: workflow 'x' asks for confirmation; re-run with --force"
    assert exc.said_to(CLI) == str(exc)
    assert exc.said_to(WEB) == "/ws/workspace.poly:4: workflow 'x' asks for confirmation; tick its confirmation box"
    assert exc.said_to(SCHEDULE) == "/ws/workspace.poly:4: workflow 'x' asks for confirmation"  # no hint: the statement
    plain = PolycrateError("no such block")
    assert plain.said_to(WEB) == plain.said_to(CLI) == str(plain) == "no such block"


def test_a_held_lock_tells_a_terminal_to_wait_and_the_web_view_what_it_can_do(tmp_path):
    from polycrate.history.locking import RunLock  # the lock every run takes (flock: a second descriptor is refused)

    holder = RunLock(tmp_path, "workflow-x", "workflow 'x'")
    holder.acquire()
    try:
        with pytest.raises(LockedError) as info:
            RunLock(tmp_path, "workflow-x", "workflow 'x'").acquire()
    finally:
        holder.release()
    exc = info.value
    assert exc.held.startswith("workflow 'x' is already running (")
    assert str(exc).endswith("; use --wait to wait for it")
    assert exc.said_to(WEB).endswith(f"{exc.held}; launch it again when that run has ended (or stop it on its page)")
    assert "--wait" not in exc.said_to(WEB) and "--wait" not in exc.said_to(SCHEDULE)


@pytest.mark.parametrize("words, front", [
    (["workflows", "run", "x", "--force", "--here", "--run-id", "r1", "--launched-by", "web:ann"], WEB),
    (["run", "sh", "ok", "--launched-by=web:token:ci"], WEB),
    (["workflows", "run", "x", "--launched-by", "systemd:polycrate-ops-x.service"], CLI),
    (["workflows", "run", "x"], CLI),
    (["workflows", "run", "x", "--launched-by"], CLI),
])
def test_the_servers_child_is_the_web_views_front_end(words, front):
    assert _front_end(words) == front
