"""A workspace for the run-store tests: real ansible-playbook on localhost, no fakes.

Every ansible action appends its step name to order.txt, so a test can see what ran.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write

SECRET = "Tr0ub4dor-and-3-horses-NOLOG"

WORKSPACE = """
name: nights
config:
  audit: yes
blocks:
  - name: b
    config:
      password: "{secret}"
workflows:
  - name: nightly
    steps:
      - {{name: backup, block: b, action: ok}}
      - {{name: update, block: b, action: fail}}
      - {{name: verify, block: b, action: ok}}
    on_failure:
      - {{name: notify, block: b, action: notify}}
  - name: green
    steps:
      - {{name: backup, block: b, action: ok}}
      - {{name: verify, block: b, action: ok}}
    on_failure:
      - {{name: notify, block: b, action: notify}}
  - name: fixable
    steps:
      - {{name: backup, block: b, action: ok}}
      - {{name: update, block: b, action: fixable}}
      - {{name: verify, block: b, action: ok}}
  - name: long
    steps:
      - {{name: sleep, block: b, action: sleep}}
  - name: timed
    steps:
      - {{name: sleep, block: b, action: sleep, timeout: 3}}
      - {{name: after, block: b, action: ok}}
  - name: flaky
    steps:
      - {{name: flaky, block: b, action: flaky, retries: 3, retry_delay: 0.5}}
  - name: too-flaky
    steps:
      - {{name: flaky, block: b, action: flaky, retries: 1}}
  - name: changes
    steps:
      - {{name: write, block: b, action: write}}
      - {{name: script, block: b, action: script}}
  - name: secret
    steps:
      - {{name: secret, block: b, action: secret}}
"""

BLOCK = """
name: b
version: 1.0.0
config:
  password: default
actions:
  - {name: ok, playbook: ok.yml}
  - {name: fail, playbook: fail.yml}
  - {name: fixable, playbook: fixable.yml}
  - {name: sleep, playbook: sleep.yml}
  - {name: flaky, playbook: flaky.yml}
  - {name: write, playbook: write.yml}
  - {name: secret, playbook: secret.yml}
  - name: notify
    script:
      - echo "$POLYCRATE_STEP" >> "$POLYCRATE_WORKSPACE/order.txt"
  - name: script
    script:
      - echo script >> "$POLYCRATE_WORKSPACE/script.txt"
"""

HEAD = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: record the step
      ansible.builtin.shell: echo "{{ lookup('env', 'POLYCRATE_STEP') or 'none' }}" >> {{ workspace.root }}/order.txt
"""

PLAYS = {
    "ok.yml": HEAD,
    "fail.yml": HEAD
    + """
    - name: check free disk space
      ansible.builtin.fail:
        msg: "disk /var is full on purpose"
""",
    "fixable.yml": HEAD
    + """
    - name: apply the update
      ansible.builtin.fail:
        msg: "update broken until fixed"
      when: not (workspace.root + '/fixed') is exists
""",
    "sleep.yml": HEAD
    + """
    - name: sleep long
      ansible.builtin.command: sleep 300
""",
    "flaky.yml": HEAD
    + """
    - name: count attempts
      ansible.builtin.shell: echo x >> {{ workspace.root }}/attempts.txt; wc -l < {{ workspace.root }}/attempts.txt
      register: count
    - name: succeed on the third attempt
      ansible.builtin.fail:
        msg: "flaky: attempt {{ count.stdout | trim }}"
      when: (count.stdout | int) < 3
""",
    "write.yml": """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: write a file
      ansible.builtin.copy:
        dest: "{{ workspace.root }}/changed.txt"
        content: "changed\\n"
    - name: change a line
      ansible.builtin.lineinfile:
        path: "{{ workspace.root }}/existing.txt"
        line: "added by the play"
""",
    "secret.yml": """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: use the password
      ansible.builtin.shell: "echo using {{ block.config.password }}; echo {{ block.config.password }} >&2"
      no_log: true
    - name: use it and fail
      ansible.builtin.shell: "echo {{ block.config.password }}; exit 4"
      no_log: true
      ignore_errors: true
    - name: fail with it
      ansible.builtin.fail:
        msg: "bad password {{ block.config.password }}"
      no_log: true
""",
}


def make_workspace(root: Path, extra: str = "") -> Path:
    write(root / "workspace.poly", WORKSPACE.format(secret=SECRET) + extra)
    write(root / "blocks/b/block.poly", BLOCK)
    for name, text in PLAYS.items():
        write(root / "blocks/b" / name, text)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: /usr/bin/python3\n")
    return root


def order(root: Path) -> list[str]:
    path = root / "order.txt"
    return path.read_text().split() if path.exists() else []


def db_rows(root: Path, sql: str, *args) -> list[dict]:
    con = sqlite3.connect(root / ".polycrate" / "runs.db")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args).fetchall()]
    finally:
        con.close()


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """The CLI in the background (its own session, so the test can signal just it)."""
    env = dict(os.environ)
    env.pop("POLYCRATE_WORKFLOW", None)
    return subprocess.Popen(
        [sys.executable, "-m", "polycrate", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose command line or environment mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def last_json(text: str):
    return json.loads(text)
