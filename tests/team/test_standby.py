"""A worker keeps one run process warm ahead (team/standby.py): the next run becomes that very process, a
new one warms up after it, and none outlives its worker. Real worker processes, real PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import run_cli
from tests.helpers import wait_for as _wait_for

pytestmark = pytest.mark.team



def _standbys(worker_pid: int) -> list[int]:
    """The worker's children that wait as `worker execute --standby`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == worker_pid and b"--standby" in argv:
            found.append(int(entry.name))
    return found


def test_the_next_run_is_the_warm_process_and_none_outlives_the_worker(team_env, tmp_path):
    ws = tmp_path / "ws"
    write(ws / "workspace.poly", """
        name: warmws
        blocks:
          - name: b
        workflows:
          - name: hello
            steps:
              - {name: greet, block: b, action: greet}
        """)
    write(ws / "blocks/b/block.poly", """
        name: b
        actions:
          - name: greet
            script:
              - echo hello
        """)
    write(ws / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    write(ws / ".gitignore", ".polycrate/\nartifacts/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=ws, check=True, capture_output=True)
    out = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "polycrate", "worker", "--name", "w1"], cwd=tmp_path,
                              env=os.environ | team_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    out.close()
    try:
        first = _wait_for(lambda: _standbys(worker.pid), "the worker started a warm process")
        assert len(first) == 1
        waited = run_cli("workflows", "run", "hello", "--wait", cwd=ws, env=team_env)
        assert waited.returncode == 0, waited.output
        from polycrate.history.postgres import connect

        db = connect(team_env["POLYCRATE_BACKEND"])
        try:
            pid = db.execute("SELECT pid FROM team_runs WHERE workflow = 'hello'").fetchone()["pid"]
        finally:
            db.close()
        assert pid == first[0]  # the run was the process that had warmed up
        second = _wait_for(lambda: [p for p in _standbys(worker.pid) if p != first[0]], "a new warm process")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        _wait_for(lambda: not Path(f"/proc/{second[0]}").exists() or
                  (Path(f"/proc/{second[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"),
                  "the warm process ended with its worker")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
