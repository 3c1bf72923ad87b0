"""Real workspaces and a real `polycrate serve` on loopback, for the API and browser tests.

The runs in the stores are made by real `polycrate workflows run` processes (script actions, and one
real ansible-playbook on localhost for a failing task); the server is the real CLI command in its
own process, stopped by its PID.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import run_cli, write
from tests.helpers import free_port, wait_for_port

SECRET = "s3cr3t-Web-Value-77"

WORKSPACE = """
name: {name}
blocks:
  - name: sh
workflows:
  - name: nightly
    description: backup, then an update that fails
    launch: {{extra_vars: admins}}
    steps:
      - {{name: backup, block: sh, action: ok}}
      - {{name: update, block: sh, action: disk}}
  - name: green
    description: always passes
    schedule: "*-*-* 02:00:00"
    steps:
      - {{name: hello, block: sh, action: ok}}
      - {{name: again, block: sh, action: ok}}
  - name: slow
    description: prints a line, waits for a gate file, prints more
    steps:
      - {{name: wait, block: sh, action: gated}}
  - name: guarded
    prompt: {{message: "really touch production?"}}
    steps:
      - {{name: hello, block: sh, action: ok}}
  - name: stale
    schedule: "*-*-* 03:00:00"
    steps:
      - {{name: hello, block: sh, action: ok}}
  - name: big
    description: a 3 MB log
    steps:
      - {{name: print, block: sh, action: big}}
  - name: echo
    description: prints the launch values it is given (a real ansible-playbook on localhost)
    launch:
      extra_vars: admins
      tags: true
      variables:
        - {{name: note, type: string, description: a note the play prints}}
        - {{name: password, type: secret, description: "printed too, masked"}}
        - {{name: count, type: integer, min: 1, max: 5, default: 1}}
        - {{name: loud, type: boolean, default: false}}
        - {{name: target, type: choice, choices: [staging, production], default: staging}}
    steps:
      - {{name: echo, block: sh, action: echo}}
"""

BLOCK = """
name: sh
version: 1.2.3
actions:
  - name: ok
    script:
      - echo "hello from $POLYCRATE_STEP"
      - echo "the token is $(grep -o 's3cr3t-W[a-zA-Z-]*[0-9][0-9]' "$POLYCRATE_WORKSPACE_SNAPSHOT_YAML" | head -1)"
  - name: disk
    playbook: disk.yml
  - name: echo
    playbook: echo.yml
  - name: big
    script:
      - echo "the first line"
      - 'head -c 3000000 /dev/zero | tr "\\0" x | fold -w 99'
      - echo "the last line"
  - name: gated
    script:
      - echo "first line of the slow step"
      - 'while [ ! -e "$POLYCRATE_WORKSPACE/gate" ]; do sleep 0.1; done'
      - echo "second line after the gate"
      - 'while [ ! -e "$POLYCRATE_WORKSPACE/gate2" ]; do sleep 0.1; done'
      - echo "done"
"""

DISK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: check free disk space
      ansible.builtin.fail:
        msg: "disk /var is full on purpose"
"""


ECHO = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: show the note
      ansible.builtin.debug:
        msg: >-
          note=[{{ note | default('none') }}] password=[{{ password | default('none') }}]
          count=[{{ count | default('-') }}] loud=[{{ loud | default('-') }}] target=[{{ target | default('-') }}]
          extra=[{{ extra | default('-') }}]
"""


def make_workspace(root: Path, name: str = "ops") -> Path:
    write(root / "workspace.poly", WORKSPACE.format(name=name, secret=SECRET))
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    write(root / "blocks" / "sh" / "block.poly", BLOCK)
    write(root / "blocks" / "sh" / "disk.yml", DISK)
    write(root / "blocks" / "sh" / "echo.yml", ECHO)
    write(root / "secrets.poly", f"blocks:\n  - name: sh\n    config:\n      token: \"{SECRET}\"\n")
    return root


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    wait_for_port(port, proc=proc, timeout=timeout, name="polycrate serve")


@dataclass
class Server:
    url: str
    state: Path
    workspaces: list[Path]
    proc: subprocess.Popen
    argv: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, input: str | None = None):
        return run_cli(*args, "--state", str(self.state), input=input)

    def restart(self) -> None:
        """A new server process on the same port and state (users, tokens and sessions kept)."""
        self.stop()
        self.proc = _spawn(self.argv)
        wait_port(int(self.url.rsplit(":", 1)[1]), self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("POLYCRATE_WORKFLOW", None)
    env.update(env_extra or {})
    # stderr to an unlinked temporary file, not a pipe: nobody reads a pipe while the server runs, and a
    # server that logs (uvicorn warns of each malformed request) would block on a full one
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env, text=True)
    proc.stderr = _Rewound(log)  # type: ignore[assignment]  # wait_for_port reads it if the server exits early
    return proc


class _Rewound:
    """The server's stderr file, read from its start."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def read(self) -> str:
        self.handle.seek(0)
        return self.handle.read()

    def close(self) -> None:
        self.handle.close()


def start_server(tmp: Path, workspaces: list[Path], *, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> Server:
    state = tmp / "server-state"
    port = free_port()
    args = [sys.executable, "-m", "polycrate", "serve", "--listen", f"127.0.0.1:{port}", "--state", str(state),
            *extra_args]
    for ws in workspaces:
        args += ["-w", str(ws)]
    proc = _spawn(args, env)
    server = Server(f"http://127.0.0.1:{port}", state, workspaces, proc, args)
    wait_port(port, proc)
    for role in ("viewer", "operator", "admin"):
        password = f"{role}-password-123"
        r = server.cli("server", "user", "add", role, "--role", role, "--password-stdin", input=password + "\n")
        assert r.returncode == 0, r.output
        server.passwords[role] = password
        r = server.cli("server", "token", "add", f"{role}-token", "--role", role)
        assert r.returncode == 0, r.output
        server.tokens[role] = r.stdout.strip().splitlines()[-1]
    return server


def serve_ops_and_lab(tmp: Path, *, env: dict[str, str] | None = None) -> Server:
    """The usual pair: `ops` with seeded runs and `lab` with one green run, served together."""
    ops = make_workspace(tmp / "ops", "ops")
    lab = make_workspace(tmp / "lab", "lab")
    seed_runs(ops)
    assert run_cli("-w", str(lab), "workflows", "run", "green").returncode == 0
    return start_server(tmp, [ops, lab], env=env)


def apply_schedules(root: Path, dest: Path) -> Path:
    """`polycrate schedules apply --dest DEST` (the real command; systemd units into a folder of the test's)."""
    dest.mkdir(parents=True, exist_ok=True)
    r = run_cli("-w", str(root), "schedules", "apply", "--dest", str(dest))
    assert r.returncode == 0, r.output
    return dest


def seed_runs(root: Path) -> None:
    """A succeeded and a failed run, made by the real CLI."""
    # --here: with a backend (tests/team/), run on this host rather than launched for a worker
    r = run_cli("-w", str(root), "workflows", "run", "green", "--here")
    assert r.returncode == 0, r.output
    r = run_cli("-w", str(root), "workflows", "run", "nightly", "--here")
    assert r.returncode == 1, r.output


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    """Poll until predicate() is truthy; the timeout only bounds a hang, it asserts nothing about speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
