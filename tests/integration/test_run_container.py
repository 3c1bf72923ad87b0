"""One container per run (runtime/run_container.py), on podman and on a Docker engine of the test's own:
every step runs inside it, warm where it can; each step keeps its own environment, working
directory and timeout, leaves no process into the next; the container is gone however the run ends."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import cli_environment, run_cli
from tests.integration.container_engines import EngineUnderTest

pytestmark = pytest.mark.container

WORKSPACE = """
name: {name}
workflows:
  - name: three
    steps:
      - name: first
        block: alpha
        action: mark
      - name: play
        block: alpha
        action: play
      - name: replay
        block: alpha
        action: play
      - name: second
        block: beta
        action: look
  - name: daemon
    steps:
      - name: start
        block: alpha
        action: daemon
      - name: check
        block: beta
        action: look
  - name: slow
    steps:
      - name: sleep
        block: alpha
        action: sleep
        timeout: 2
    on_failure:
      - name: after
        block: beta
        action: look
  - name: long
    steps:
      - name: sleep
        block: alpha
        action: sleep
  - name: failing
    steps:
      - name: mark
        block: alpha
        action: mark
      - name: fail
        block: beta
        action: fail
"""

ALPHA = """
name: alpha
version: 1.0.0
kind: generic
actions:
  - name: mark
    script:
      - echo one >> /tmp/run-marker
      - echo "marker=$(wc -l < /tmp/run-marker) cwd=$(pwd) block=$POLYCRATE_BLOCK step=$POLYCRATE_STEP"
      - export LEAKED=from-alpha
      - echo "secret=$(cat "$POLYCRATE_SECRETS/token.txt")"
  - name: play
    playbook: play.yml
  - name: daemon
    script:
      - setsid nohup sleep 301 > /dev/null 2>&1 &
      - ( sleep 302 & )
      - echo "started"
  - name: sleep
    script:
      - echo sleeping
      - sleep 300
"""

BETA = """
name: beta
version: 1.0.0
kind: generic
actions:
  - name: look
    script:
      - echo one >> /tmp/run-marker
      - echo "marker=$(wc -l < /tmp/run-marker) cwd=$(pwd) block=$POLYCRATE_BLOCK leaked=${LEAKED:-unset}"
      - python3 sleepers.py
  - name: fail
    script:
      - echo "failing"
      - exit 4
"""

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
    - ansible.builtin.debug:
        msg: "process={{ lookup('file', '/proc/self/cmdline') | replace('\\u0000', ' ') }} cwd={{ lookup('pipe', 'pwd') }}"
"""

SLEEPERS = """
import os

left = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/cmdline", "rb").read().startswith(b"sleep")]
print("sleeping", len(left))
"""

INVENTORY = """
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""


def make_workspace(tmp_path: Path, engine: EngineUnderTest) -> tuple[Path, str]:
    name = f"percontainer-{secrets.token_hex(3)}"
    root = tmp_path / name
    write(root / "workspace.poly", WORKSPACE.format(name=name))
    write(root / "blocks" / "alpha" / "block.poly", ALPHA)
    write(root / "blocks" / "alpha" / "play.yml", PLAY)
    write(root / "blocks" / "beta" / "block.poly", BETA)
    write(root / "blocks" / "beta" / "sleepers.py", SLEEPERS)
    write(root / "inventory.yml", INVENTORY)
    write(root / "artifacts" / "secrets" / "token.txt", "s3cr3t-token-value\n")
    engine.choose(root)
    return root, name


def run_folders() -> list[str]:
    """The run folders of container runs on this machine (/dev/shm/polycrate-container-*)."""
    shm = "/dev/shm"
    names = os.listdir(shm) if os.path.isdir(shm) else []
    return [os.path.join(shm, n) for n in names if n.startswith("polycrate-container-")]


def lines_with(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


def test_one_container_runs_every_step_warm_with_each_steps_own_environment(engine, tmp_path):
    root, name = make_workspace(tmp_path, engine)
    result = run_cli("workflows", "run", "three", cwd=root, env=engine.env)
    assert result.returncode == 0, result.output
    marks = lines_with(result.stdout, "marker=")
    # the file one step wrote in the container's /tmp is there for the last: one container
    assert marks[0] == "marker=1 cwd=/workspace/blocks/alpha block=alpha step=first", marks
    assert marks[1] == "marker=2 cwd=/workspace/blocks/beta block=beta leaked=unset", marks
    # both Ansible steps forked from the warm zygote inside the container, in their block folder
    plays = [line for line in result.stdout.splitlines() if '"msg": "process=' in line]
    assert len(plays) == 2, result.stdout
    for line in plays:
        assert "polycrate.runtime.zygote --container" in line, line
        assert "cwd=/workspace/blocks/alpha" in line, line
    assert "secret=********" in result.stdout  # the run's secrets folder is in the container, masked
    assert "s3cr3t-token-value" not in result.output
    assert engine.containers(name) == []


def test_a_step_leaves_no_process_running_into_the_next(engine, tmp_path):
    root, name = make_workspace(tmp_path, engine)
    result = run_cli("workflows", "run", "daemon", cwd=root, env=engine.env)
    assert result.returncode == 0, result.output
    assert "started" in result.stdout
    assert "sleeping 0" in result.stdout, result.stdout  # the daemon and the double fork are gone
    assert engine.containers(name) == []


def test_a_steps_timeout_stops_it_inside_the_container_and_a_failed_run_leaves_none(engine, tmp_path):
    root, name = make_workspace(tmp_path, engine)
    result = run_cli("workflows", "run", "slow", cwd=root, env=engine.env)
    assert result.returncode == 1, result.output
    assert "timed out after 2s" in result.output
    assert "sleeping 0" in result.stdout  # the on_failure step ran in the same container, nothing left
    assert engine.containers(name) == []

    failed = run_cli("workflows", "run", "failing", cwd=root, env=engine.env)
    assert failed.returncode == 1, failed.output
    assert "failing" in failed.stdout and "exit 4" in failed.output
    assert engine.containers(name) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_the_container_ends_with_the_run_however_polycrate_ends(engine, tmp_path, sig):
    root, name = make_workspace(tmp_path, engine)
    before = set(run_folders())
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "long"], cwd=root,
                            env=cli_environment(engine.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the step runs in the container
            seen.append(line)
            if line.strip() == "sleeping":
                break
        assert engine.containers(name), "".join(seen)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        # polycrate could clean nothing up: the container's zygote saw its connection close
        deadline = time.monotonic() + 60
        while engine.containers(name) and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        assert proc.returncode == 130, "".join(seen) + rest
    assert engine.containers(name) == [], "a container was left behind"
    left = [folder for folder in run_folders() if folder not in before]
    if sig == signal.SIGKILL:  # polycrate could not remove its run folder; the container's zygote emptied it
        assert all(os.listdir(folder) == [] for folder in left), {f: os.listdir(f) for f in left}
    else:
        assert left == []  # with the run's decrypted secrets in it


def test_the_run_folder_is_removed_with_the_container(engine, tmp_path):
    root, name = make_workspace(tmp_path, engine)
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    result = run_cli("workflows", "run", "three", "-o", "json", cwd=root, env=engine.env)
    assert result.returncode == 0, result.output
    assert [s["status"] for s in json.loads(result.stdout)["steps"]] == ["succeeded"] * 4
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not [f for f in after - before if f.startswith("polycrate-container-")]  # with the secrets inside


def test_the_preflight_runs_in_the_container_and_names_this_machines_files(engine, tmp_path):
    root, name = make_workspace(tmp_path, engine)
    # only Ansible itself knows this module does not exist: its check ran, in the container
    write(root / "blocks" / "alpha" / "play.yml",
          "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.no_such_module: {}\n")
    result = run_cli("workflows", "run", "three", cwd=root, env=engine.env)
    assert result.returncode == 2, result.output
    assert "marker=" not in result.stdout  # nothing ran
    last = result.stderr.strip().splitlines()[-1]
    # the file as this machine names it (relative to the workspace), not as the container does
    assert last.startswith("polycrate: error: blocks/alpha/play.yml:"), last
    assert "no_such_module" in last and "/workspace" not in last and "Traceback" not in result.output
    assert engine.containers(name) == []
