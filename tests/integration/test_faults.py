"""Faults (issue 14): polycrate killed by SIGKILL leaves no process of its step behind; a damaged
run store never stops a run; a full disk or a read-only workspace is one line and a non-zero exit."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, write

WORKSPACE = """
name: faults
blocks:
  - name: s
workflows:
  - name: nap
    steps:
      - {name: nap, block: s, action: nap}
  - name: quick
    steps:
      - {name: hi, block: s, action: hi}
"""
BLOCK = """
name: s
version: 1.0.0
actions:
  - name: nap
    script:
      - "if [ -e ../../fast ]; then echo fast; exit 0; fi"
      - "sleep 30 & echo $! >> ../../step.pids"
      - "bash -c 'echo $$ >> ../../step.pids; sleep 30' &"
      - "echo $$ >> ../../step.pids"
      - "echo started"
      - "sleep 30"
  - name: hi
    script: ["echo hello from hi"]
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", WORKSPACE)
    write(root / "blocks/s/block.poly", BLOCK)
    return root


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in os.listdir(f"/proc/{current}/task") if os.path.isdir(f"/proc/{current}/task") else []:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def test_sigkill_during_a_script_step_leaves_no_process_and_the_next_run_starts(ws):
    env = dict(os.environ)
    env.pop("POLYCRATE_WORKFLOW", None)
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "nap"], cwd=ws, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while time.monotonic() < deadline:  # wait until the step's three processes wrote their pids
            text = (ws / "step.pids").read_text() if (ws / "step.pids").exists() else ""
            pids = {int(p) for p in text.split()}
            if len(pids) >= 3:
                break
            time.sleep(0.1)
        assert len(pids) >= 3, proc.stdout.read1().decode() if proc.poll() is not None else "no pids"
        tree = _descendants(proc.pid) | pids
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 20 and any(_alive(p) for p in tree):  # generous; then assert
            time.sleep(0.05)
        gone_after = time.monotonic() - killed_at
        survivors = [p for p in tree if _alive(p)]
        print(f"\nSIGKILL of polycrate: {len(tree)} processes of the step, all gone after {gone_after:.2f} s")
        assert not survivors, f"still alive: {survivors}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    runs = run_cli("runs", "list", cwd=ws)
    assert "interrupted" in runs.stdout, runs.output
    (ws / "fast").write_text("")
    again = run_cli("workflows", "run", "nap", cwd=ws, timeout=60)
    assert again.returncode == 0, again.output
    assert "fast" in again.output


def test_a_stopped_step_under_the_supervisor_keeps_its_exit_status(ws):
    result = run_cli("run", "s", "hi", cwd=ws)
    assert result.returncode == 0 and "hello from hi" in result.output
    write(ws / "blocks/s/block.poly", BLOCK.replace('script: ["echo hello from hi"]', 'script: ["exit 7"]'))
    failed = run_cli("run", "s", "hi", cwd=ws)
    assert failed.returncode == 1 and "exit 7" in failed.output, failed.output


def _damage(db: Path, how: str) -> None:
    if how == "half-truncated":
        os.truncate(db, db.stat().st_size // 2)
    elif how == "garbage":
        db.write_bytes(os.urandom(32768))
    else:  # a broken header
        with open(db, "r+b") as handle:
            handle.write(b"NOT AN SQLITE DB")


@pytest.mark.parametrize("how", ["half-truncated", "garbage", "broken header"])
def test_a_damaged_run_store_is_moved_aside_and_the_run_goes_on(ws, how):
    for _ in range(3):  # a store with a few runs (and enough pages that half of it is damage)
        assert run_cli("workflows", "run", "quick", cwd=ws).returncode == 0
    db = ws / ".polycrate" / "runs.db"
    with sqlite3.connect(db) as conn:  # fold the WAL in: the damage is to the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for side in ("runs.db-wal", "runs.db-shm"):
        (ws / ".polycrate" / side).unlink(missing_ok=True)
    _damage(db, how)

    result = run_cli("workflows", "run", "quick", cwd=ws)

    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    notice = [line for line in result.output.splitlines() if "moved aside" in line]
    assert len(notice) == 1 and "runs.db" in notice[0] and "damaged" in notice[0], result.output
    aside = sorted((ws / ".polycrate").glob("runs.db.corrupt-*"))
    assert aside and aside[0].name in notice[0]
    listing = run_cli("runs", "list", cwd=ws)
    assert listing.returncode == 0, listing.output
    assert "moved aside" in listing.stderr and aside[0].name in listing.stderr
    assert len([line for line in listing.stdout.splitlines() if "quick" in line]) == 1  # the new store's run
    shown = run_cli("runs", "show", "latest", cwd=ws)
    assert shown.returncode == 0 and "moved aside" in shown.output  # the notice is kept with the run


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of our own (root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


COMMANDS = (["run", "s", "hi"], ["workflows", "run", "quick"], ["runs", "list"])


def _one_line_failure(result) -> str:
    assert result.returncode not in (0, 70), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("polycrate: error: "), result.stderr
    return lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_and_a_read_only_workspace(small_disk):
    root = small_disk / "ws"
    write(root / "workspace.poly", WORKSPACE)
    write(root / "blocks/s/block.poly", BLOCK)
    first = run_cli("workflows", "run", "quick", cwd=root)
    assert first.returncode == 0, first.output
    run_id = re.search(r"\brun (\d{8}-\d{6}-[0-9a-f]+)", first.output).group(1)
    with open(small_disk / "filler", "wb") as filler:  # fill the disk to the last block
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    for command in COMMANDS:
        line = _one_line_failure(run_cli(*command, cwd=root))
        print(f"\nfull disk, {' '.join(command)}: {line}")
    (small_disk / "filler").unlink()
    listing = run_cli("runs", "list", cwd=root)
    assert listing.returncode == 0 and run_id in listing.stdout, listing.output  # what was recorded stays

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for command in COMMANDS:
        line = _one_line_failure(run_cli(*command, cwd=root))
        print(f"read-only, {' '.join(command)}: {line}")
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    listing = run_cli("runs", "show", run_id, cwd=root)
    assert listing.returncode == 0 and "hi" in listing.stdout, listing.output
