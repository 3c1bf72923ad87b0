"""SSH connection sharing across a run's steps (runtime/sshshare.py), over real sshd test hosts with
Ansible's default SSH settings: step 2 reuses the masters step 1 opened (each sshd authenticates one
connection for the whole run), and when the run ends, succeeded, failed or interrupted, no master
process and no socket folder of it is left. The user's own ANSIBLE_SSH_ARGS wins."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import run_cli, write
from tests.helpers import cli_environment

# every step records the ssh masters (process title "ssh: <socket> [mux]") in the run's folder, seen from
# the controller while the step runs
PLAY = r"""
- hosts: fleet
  gather_facts: false
  tasks:
    - name: a command on the host
      ansible.builtin.command: /bin/true
      changed_when: false
    - name: record the run's ssh masters while this step runs
      delegate_to: localhost
      connection: local
      run_once: true
      vars:
        ansible_python_interpreter: /usr/bin/python3
        cpdir: "{{ lookup('ansible.builtin.env', 'ANSIBLE_SSH_CONTROL_PATH_DIR') }}"
      ansible.builtin.shell: |
        pids=$(for p in /proc/[0-9]*; do
          case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "ssh: {{ cpdir }}/"*) echo ${p#/proc/};; esac
        done | sort -n | tr '\n' ' ')
        socks=$(ls {{ cpdir }} 2>/dev/null | wc -l)
        printf '{"step": "%s", "dir": "%s", "masters": "%s", "sockets": %s}\n' \
          "$POLYCRATE_STEP" "{{ cpdir }}" "$pids" "$socks" >> {{ workspace.root }}/masters.jsonl
        {{ after | default('true') }}
"""


@pytest.fixture(scope="module")
def hosts():
    from tests.fleet.sshd import SSHFleet

    fleet = SSHFleet(2, first=40)
    yield fleet
    fleet.stop()


@pytest.fixture
def ws(tmp_path, hosts):
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: sharing
        blocks:
          - name: fleet
        workflows:
          - name: two
            steps:
              - {name: one, block: fleet, action: one}
              - {name: two, block: fleet, action: two}
        """)
    write(root / "blocks/fleet/block.poly", """
        name: fleet
        actions:
          - {name: one, playbook: one.yml}
          - {name: two, playbook: two.yml}
        """)
    write(root / "blocks/fleet/one.yml", PLAY)
    write(root / "blocks/fleet/two.yml", PLAY)
    inventory = hosts.inventory({"fleet": [h.name for h in hosts.hosts]}, sharing=True)
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory))
    return root


def records(root):
    path = root / "masters.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def masters_of(folder: str) -> list[int]:
    from polycrate.runtime.ssh_masters import _masters

    return _masters(folder)


def accepted(hosts) -> list[int]:
    return [h.accepted_connections() for h in hosts.hosts]


def assert_nothing_left(folder: str) -> None:
    assert folder.startswith(("/tmp/", "/var/tmp/")) and "/pcssh-" in folder, folder
    assert not os.path.exists(folder), f"{folder} left behind"
    assert masters_of(folder) == [], "ssh masters left behind"


def test_step_two_reuses_the_masters_of_step_one_and_none_is_left(ws, hosts):
    before = accepted(hosts)
    result = run_cli("workflows", "run", "two", cwd=ws)
    assert result.returncode == 0, result.output
    one, two = records(ws)
    assert (one["step"], two["step"]) == ("one", "two")
    assert one["dir"] == two["dir"]  # one folder for the run
    assert len(one["masters"].split()) == 2 and one["sockets"] == 2  # a master per host
    assert two["masters"] == one["masters"]  # the same processes serve step two
    # one authenticated connection per host for two steps of two SSH tasks each
    assert [a - b for a, b in zip(accepted(hosts), before, strict=False)] == [1, 1]
    assert_nothing_left(one["dir"])


def test_a_failed_step_leaves_no_master(ws, hosts):
    write(ws / "blocks/fleet/two.yml", PLAY.replace("{{ after | default('true') }}", "false"))
    result = run_cli("workflows", "run", "two", cwd=ws)
    assert result.returncode != 0, result.output
    one, two = records(ws)
    assert two["masters"] == one["masters"] and one["masters"]
    assert_nothing_left(one["dir"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_no_master(ws, hosts, sig):
    write(ws / "blocks/fleet/two.yml", PLAY.replace("{{ after | default('true') }}", "sleep 60"))
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "two"], cwd=ws,
                            env=cli_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(records(ws)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(records(ws)) == 2, proc.stdout.read().decode() if proc.poll() is not None else "step two not reached"
        folder = records(ws)[1]["dir"]
        assert masters_of(folder)  # the masters are up while step two sleeps
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out
    assert "interrupted" in out
    assert_nothing_left(folder)


def test_the_users_ssh_args_win(ws, hosts):
    before = accepted(hosts)
    result = run_cli("workflows", "run", "two", cwd=ws,
                     env={"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPersist=no"})
    assert result.returncode == 0, result.output
    one, two = records(ws)
    assert one["masters"] == two["masters"] == ""  # no master at all: the user said so
    # no sharing: every SSH task authenticates its own connection (one per host per step at least)
    assert all(a - b >= 2 for a, b in zip(accepted(hosts), before, strict=False)), (accepted(hosts), before)
    assert_nothing_left(one["dir"])
