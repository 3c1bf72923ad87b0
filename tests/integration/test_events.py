"""The Ansible event contract (polycrate.runtime.events) as the real callback writes it inside real ansible-playbook."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from polycrate.runtime.events import HOST_COUNTS, EventKind, read_events
from polycrate.runtime.action import event_environment

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.command: "true"
    - name: skipped on purpose
      ansible.builtin.debug: {msg: never}
      when: false
    - name: fail but go on
      ansible.builtin.fail: {msg: "allowed to fail"}
      ignore_errors: true
    - name: hide a secret
      ansible.builtin.fail: {msg: "the secret s3cr3t-value"}
      no_log: true
"""


def test_the_callback_writes_the_events_the_engine_reads(tmp_path):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: "
                                            f"{sys.executable}\n")
    events = tmp_path / "events.jsonl"
    env = event_environment({k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_CALLBACK")}, events)
    env["ANSIBLE_INVENTORY"] = str(tmp_path / "inventory.yml")
    proc = subprocess.run([sys.executable, "-m", "polycrate.runtime.ansible_playbook", "play.yml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # the no_log failure fails the play

    lines = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert set(kinds) <= {k.value for k in EventKind}
    assert kinds[0] == EventKind.PLAY_START and kinds[-1] == EventKind.STATS
    for kind in (EventKind.TASK_START, EventKind.OK, EventKind.SKIPPED, EventKind.FAILED):
        assert kind in kinds, kind
    assert all(isinstance(e["time"], float) for e in lines)
    assert tuple(lines[-1]["hosts"]["localhost"]) == HOST_COUNTS
    assert "s3cr3t-value" not in events.read_text()

    hosts, failure = read_events(events)
    assert hosts == {"localhost": {"ok": 2, "changed": 1, "failed": 1, "unreachable": 0, "skipped": 1,
                                   "rescued": 0, "ignored": 1}}
    assert failure is not None and failure["task"] == "hide a secret" and failure["host"] == "localhost"
    assert "s3cr3t-value" not in failure["message"]
