"""Sliced steps (`slices: N`, AWX's job slicing) through the real CLI and real ansible-playbook: without a
backend the parts run one after the other here; with one, real `polycrate worker` processes run them at once.

Six inventory hosts on the local connection, each with its own name; the playbook appends one line per host
to a marker file (host, the hosts of its play, time), so every host's single run is visible.
No timed assertions: every wait polls for a state with a generous deadline.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.helpers import run_cli
from tests.team.conftest import no_backend

HOSTS = [f"node{i}" for i in range(1, 7)]
DEADLINE = 240.0


def _workspace(root: Path, marks: Path, fail_host: str = "", slices: int = 3, sleep: float = 2.0) -> Path:
    write(root / "workspace.poly", f"""
        name: slicews
        blocks:
          - name: b
        workflows:
          - name: wide
            steps:
              - {{name: touch, block: b, action: touch, slices: {slices}}}
              - {{name: after, block: b, action: after}}
          - name: scripted
            steps:
              - {{name: s, block: b, action: after, slices: 2}}
        """)
    write(root / "blocks/b/block.poly", """
        name: b
        actions:
          - name: touch
            playbook: touch.yml
          - name: after
            script:
              - echo after the sliced step
        """)
    write(root / "blocks/b/touch.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: mark the host
              ansible.builtin.shell: echo "{{{{ inventory_hostname }}}} {{{{ ansible_play_hosts_all | join(',') }}}} $(date +%s.%N)" >> {marks}/hosts.log
            - name: stay a while
              ansible.builtin.command: sleep {sleep}
            - name: the failing host
              ansible.builtin.fail:
                msg: "{{{{ inventory_hostname }}}} fails on purpose"
              when: inventory_hostname == "{fail_host}"
            - name: changed on every host
              ansible.builtin.command: "true"
        """)
    write(root / "inventory.yml", "all:\n  hosts:\n" + "".join(
        f"    {h}:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        for h in HOSTS))
    write(root / ".gitignore", ".polycrate/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    return root


def _marks(marks: Path) -> list[list[str]]:
    path = marks / "hosts.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _step(shown: dict[str, Any], name: str) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in shown["steps"] if s["name"] == name)
    return step


# --- without a backend ------------------------------------------------------------------------------------------


def test_without_a_backend_the_slices_run_one_after_the_other_here_and_combine(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, sleep=0)
    env = no_backend(tmp_path)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=env)
    assert ran.returncode == 0, ran.output
    lines = _marks(marks)
    assert sorted(line[0] for line in lines) == HOSTS  # every host exactly once
    # three plays (one ansible-playbook each), two hosts each in inventory order, one after the other
    assert [line[1] for line in lines] == ["node1,node2"] * 2 + ["node3,node4"] * 2 + ["node5,node6"] * 2
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws, env=env).stdout)
    touch = _step(shown, "touch")
    assert touch["status"] == "succeeded"
    assert sorted(touch["hosts"]) == HOSTS
    assert all(c["ok"] == 3 and c["changed"] == 3 and c["failed"] == 0 for c in touch["hosts"].values())
    log = run_cli("runs", "logs", "latest", "--step", "touch", cwd=ws, env=env).stdout
    for index, hosts in enumerate((("node1", "node2"), ("node3", "node4"), ("node5", "node6")), 1):
        assert f"slice {index} of 3: hosts {', '.join(hosts)}" in log
    assert log.index("slice 1 of 3") < log.index("slice 2 of 3") < log.index("slice 3 of 3")
    assert "6 hosts in 3 slices" in ran.output


def test_without_a_backend_one_failing_host_fails_the_step_with_every_host_counted(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, fail_host="node4", sleep=0)
    env = no_backend(tmp_path)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=env)
    assert ran.returncode == 1, ran.output
    assert sorted(line[0] for line in _marks(marks)) == HOSTS  # the other slices ran all the same
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws, env=env).stdout)
    touch = _step(shown, "touch")
    assert touch["status"] == "failed"
    assert touch["failed_host"] == "node4"
    assert "slice 2 of 3 (hosts node3, node4) failed" in touch["message"]
    assert touch["hosts"]["node4"]["failed"] == 1 and touch["hosts"]["node4"]["ok"] == 2
    assert all(touch["hosts"][h]["failed"] == 0 and touch["hosts"][h]["ok"] == 3 for h in HOSTS if h != "node4")
    assert _step(shown, "after")["status"] == "skipped"


def test_slices_on_a_script_step_is_refused_before_anything_runs(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks)
    ran = run_cli("workflows", "run", "scripted", cwd=ws, env=no_backend(tmp_path))
    assert ran.returncode != 0
    assert "step 's': slices applies to ansible actions" in ran.stderr
    assert "workspace.poly" in ran.stderr and "Traceback" not in ran.output


def test_slices_must_be_a_whole_number_from_1(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws = _workspace(tmp_path / "ws", marks, slices=0)
    ran = run_cli("workflows", "run", "wide", cwd=ws, env=no_backend(tmp_path))
    assert ran.returncode == 2, ran.output
    assert "workspace.poly" in ran.stderr and "slices" in ran.stderr and "Traceback" not in ran.output
    assert not _marks(marks)
