"""A stopped run leaves no process behind and its record says who stopped it, from the engine's first write.

Real ansible-playbook, `connection: local`: the long task is a shell whose `sleep 300` runs as a background job
(a non-interactive shell starts it with SIGINT ignored, as `cmd & wait` in many real tasks). Ansible runs each
task in its worker's own session and passes a stop on to that session as SIGINT only, so before the fix the
`sleep` outlived the stop (found with this very playbook). The task writes down its pids (the shell, the
background `sleep`, the module that started the shell); every process of the run carries a token in its
environment, so after polycrate has exited the test looks through /proc for anything left of the run.

No timed assertions: waits poll with a generous deadline (a hang guard on a busy machine).
"""
from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import cli_environment, run_cli, wait_for

DEADLINE = 180.0

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: a long task with a background job
      ansible.builtin.shell: |
        sleep 300 &
        echo "$! $$ $PPID" > {{ workspace.root }}/task.pids
        wait
"""


def _workspace(root: Path) -> Path:
    write(root / "workspace.poly", """
        name: stopws
        blocks:
          - name: b
        workflows:
          - name: long
            steps:
              - {name: sleep, block: b, action: sleep}
              - {name: after, block: b, action: sleep}
        """)
    write(root / "blocks/b/block.poly", """
        name: b
        actions:
          - {name: sleep, playbook: sleep.yml}
        """)
    write(root / "blocks/b/sleep.yml", PLAY)
    write(root / "inventory.yml",
          f"all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: {sys.executable}\n")
    return root


def alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its reaper has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def carrying(token: str) -> list[str]:
    """Every live process whose environment holds ``token``: what is left of the run."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or not alive(int(name)):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if token.encode() not in handle.read():
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{name}: {command}")
        except OSError:
            continue
    return found


class LongRun:
    """`polycrate workflows run long` in the background, every process of it marked with a token."""

    def __init__(self, ws: Path, zygote: bool):
        self.ws = ws
        self.token = f"polycrate-stop-test-{uuid.uuid4().hex}"
        env = cli_environment({"POLYCRATE_STOP_TEST_TOKEN": self.token, "POLYCRATE_ZYGOTE": "1" if zygote else "0",
                               "POLYCRATE_BACKEND": "", "POLYCRATE_CONFIG": str(ws.parent / "no-backend.yml")})
        (ws.parent / "no-backend.yml").write_text("# no backend\n")
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "long"], cwd=ws, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def task_pids(self) -> list[int]:
        marker = self.ws / "task.pids"
        text = marker.read_text() if marker.exists() else ""
        return [int(p) for p in text.split()] if len(text.split()) == 3 else []

    def run_id(self) -> str:
        shown = run_cli("runs", "show", "latest", "-o", "json", cwd=self.ws, env=self.env)
        assert shown.returncode == 0, shown.output
        return str(json.loads(shown.stdout)["run_id"])

    def cleanup(self) -> None:
        """Whatever failed: nothing of the run stays (its group, then anything with its token)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for line in carrying(self.token):
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def ws(tmp_path) -> Path:
    return _workspace(tmp_path / "ws")


@pytest.mark.parametrize("zygote", [True, False], ids=["warm-step", "plain-step"])
def test_sigterm_to_polycrate_leaves_no_process_of_the_playbook(ws, zygote):
    run = LongRun(ws, zygote)
    try:
        pids = wait_for(run.task_pids, "the task wrote its pids")
        assert all(alive(p) for p in pids[:2]), pids  # the sleep and its shell run
        run.proc.send_signal(signal.SIGTERM)
        out = run.proc.communicate(timeout=DEADLINE)[0].decode(errors="replace")  # a hang guard, not a timing
        assert run.proc.returncode == 130, out
        left = carrying(run.token)
        assert left == [], left
        assert [p for p in pids if alive(p)] == [], pids
        shown = json.loads(run_cli("runs", "show", run.run_id(), "-o", "json", cwd=ws, env=run.env).stdout)
        assert shown["status"] == "interrupted" and shown["message"] == "interrupted (SIGTERM)"
        assert [s["status"] for s in shown["steps"]] == ["interrupted", "skipped"]
    finally:
        run.cleanup()


def test_runs_stop_records_who_stopped_the_run_from_the_first_write_and_leaves_nothing(ws):
    run = LongRun(ws, zygote=True)
    try:
        pids = wait_for(run.task_pids, "the task wrote its pids")
        run_id = run.run_id()
        stopped = run_cli("runs", "stop", run_id, cwd=ws, env=run.env)
        assert stopped.returncode == 0, stopped.output
        out = run.proc.communicate(timeout=DEADLINE)[0].decode(errors="replace")
        assert run.proc.returncode == 130, out
        assert carrying(run.token) == [] and [p for p in pids if alive(p)] == []
        who = f"interrupted by {getpass.getuser()}@{socket.gethostname()} (polycrate runs stop)"
        shown = json.loads(run_cli("runs", "show", run_id, "-o", "json", cwd=ws, env=run.env).stdout)
        assert shown["status"] == "interrupted" and shown["message"] == who, shown
        # the step's row is written by the engine only, as the interrupt unwinds it: the first write says who
        assert shown["steps"][0]["status"] == "interrupted" and shown["steps"][0]["message"] == who, shown["steps"]
        assert not list((ws / ".polycrate" / "locks").glob("*.stop"))  # the note went with the run
    finally:
        run.cleanup()
