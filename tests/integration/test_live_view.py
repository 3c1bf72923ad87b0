"""The live view on a pseudo-terminal and off one: colours, width, status line, heartbeat, plain store."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.term_workspace import make_term_workspace

ESC = "\x1b"


@pytest.fixture
def ws(tmp_path):
    return make_term_workspace(tmp_path / "ws")


def run_in_pty(*args: str, cwd: Path, columns: int = 160, env: dict | None = None, timeout: float = 120,
               ctrl_c_after: bytes | None = None):
    """The CLI on a pseudo-terminal of `columns` columns; returns (exit code, everything it wrote).
    ``ctrl_c_after``: once the output holds it, the terminal's SIGINT (Ctrl-C) is sent, once."""
    pid, fd = pty.fork()
    if pid == 0:  # child: its stdin/stdout/stderr are the terminal
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "POLYCRATE_WORKFLOW", "COLUMNS")}
        full.update(env or {})
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "polycrate", *args], full)
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no output for {timeout}s; got {out[-2000:]!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if ctrl_c_after is not None and ctrl_c_after in out:
            os.kill(pid, 2)
            ctrl_c_after = None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def _store_bytes(ws: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in (ws / ".polycrate").rglob("*") if p.is_file()]


def _assert_colours_only_in_logs(ws: Path) -> None:
    """The step logs hold Ansible's colour codes (SGR) and no other escape code; the rest of the store none."""
    sgr = re.compile(rb"\x1b\[[0-9;]*m")
    logs = [(p, d) for p, d in _store_bytes(ws) if p.suffix == ".log"]
    assert any(sgr.search(d) for _, d in logs), logs
    for path, data in _store_bytes(ws):
        if path.suffix == ".log":
            assert b"\x1b" not in sgr.sub(b"", data), path
        else:
            assert b"\x1b[" not in data, path  # (runs.db is binary: a lone 0x1b byte can be part of a number)


def test_on_a_terminal_colours_width_and_the_status_line_pass_through(ws):
    code, out = run_in_pty("workflows", "run", "quiet", "--extra-vars", "seconds=3", cwd=ws, columns=160)
    assert code == 0, out[-3000:]
    assert f"{ESC}[0;32m" in out  # Ansible's own green for "ok:", passed through
    banner = next(line for line in out.splitlines() if "TASK [sleep silently]" in line)
    assert len(banner.strip().rstrip(f"{ESC}[0m")) >= 150, banner  # banner as wide as the terminal, not 80
    # the status line: redrawn in place (carriage return, erase line), naming step, task, host and time
    assert f"\r{ESC}[K" in out
    assert "[1/1] quiet · task 'sleep silently' on localhost · " in out and " elapsed (run " in out
    # the store keeps the colours (and no other escape code) for the web page; `runs logs` is plain text
    _assert_colours_only_in_logs(ws)
    logs = run_cli("runs", "logs", "latest", cwd=ws)
    assert "TASK [sleep silently]" in logs.stdout and ESC not in logs.stdout


def test_ctrl_c_on_a_terminal_takes_the_status_line_away_before_the_hint(ws):
    """Found by hand in tmux: the hint after Ctrl-C was printed behind the status line on one line."""
    code, text = run_in_pty("workflows", "run", "quiet", "--extra-vars", "seconds=300", cwd=ws,
                            ctrl_c_after=b" elapsed (run ")  # the status line is drawn: now Ctrl-C
    assert code == 130, text[-3000:]
    hint = text.index("next: continue it:")
    before = text[:hint]
    assert before.endswith(("\n", f"\r{ESC}[K")), repr(text[hint - 200:hint + 80])


@pytest.mark.parametrize("how", [{"NO_COLOR": "1"}, "--no-color"])
def test_no_color_and_no_color_flag_keep_ansible_plain_on_a_terminal(ws, how):
    args, env = (["--no-color"], None) if how == "--no-color" else ([], how)
    code, out = run_in_pty("workflows", "run", "quiet", "--extra-vars", "seconds=1", *args, cwd=ws, env=env)
    assert code == 0, out[-3000:]
    assert f"{ESC}[0;3" not in out and f"{ESC}[3" not in out  # no colour of any kind
    assert "TASK [sleep silently]" in out
    for path, data in _store_bytes(ws):  # nor in the run's log
        assert b"\x1b[" not in data, path


def test_off_a_terminal_no_escape_codes_and_a_heartbeat_in_silence(ws):
    # even a forced colour (ANSIBLE_FORCE_COLOR in the caller's environment) and a script's own escapes
    result = run_cli("workflows", "run", "quiet", "--heartbeat", "1", "--extra-vars", "seconds=4", cwd=ws,
                     env={"ANSIBLE_FORCE_COLOR": "1"})
    assert result.returncode == 0, result.output
    assert ESC not in result.stdout and ESC not in result.stderr
    beats = [line for line in result.stdout.splitlines() if line.startswith("polycrate: still running: ")]
    assert beats, result.stdout
    during = [b for b in beats if "[1/1] quiet, task 'sleep silently' on localhost, " in b]
    assert during and " elapsed (run " in during[-1], beats  # (an earlier one may come while Ansible starts)
    _assert_colours_only_in_logs(ws)  # off a terminal too: the run is recorded in colour
    logs = run_cli("runs", "logs", "latest", cwd=ws)
    assert ESC not in logs.stdout and "TASK [sleep silently]" in logs.stdout


def test_default_heartbeat_stays_quiet_in_a_short_silence_and_is_configurable_by_environment(ws):
    quiet = run_cli("workflows", "run", "quiet", "--extra-vars", "seconds=2", cwd=ws)
    assert quiet.returncode == 0 and "still running" not in quiet.stdout  # the default is 60s
    beats = run_cli("workflows", "run", "quiet", "--extra-vars", "seconds=3", cwd=ws, env={"POLYCRATE_HEARTBEAT": "1"})
    assert "polycrate: still running: " in beats.stdout
    off = run_cli("workflows", "run", "quiet", "--heartbeat", "0", "--extra-vars", "seconds=2", cwd=ws)
    assert "still running" not in off.stdout


def test_one_stream_for_the_story_and_a_single_action_gets_header_and_summary(ws):
    result = run_cli("run", "app", "fail", cwd=ws)
    assert result.returncode == 1
    assert result.stderr == ""  # a failed action is not an error of polycrate: the story is all on stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("==> action app fail: 1 step, run ")
    run_id = lines[0].rsplit(" ", 1)[1]
    assert lines.index("about to fail") < next(i for i, text in enumerate(lines) if text.startswith("action app fail failed after"))
    assert "  fail   failed (exit 3)  1" in result.stdout
    assert "failed: step fail" in result.stdout and "exit status 3" in result.stdout  # the wording: preflight.py
    assert "fix the cause, then again:  polycrate run app fail" in result.stdout
    assert f"polycrate runs show {run_id}" in result.stdout
    as_json = run_cli("run", "app", "fail", "-o", "json", cwd=ws)
    assert as_json.stdout.lstrip().startswith("{") and "==> action app fail" in as_json.stderr




def test_polycrate_alone_prints_help_and_exits_0(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("usage: polycrate") and "workflow" in result.stdout and result.stderr == ""
