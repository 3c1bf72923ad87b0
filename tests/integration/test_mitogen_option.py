"""Mitogen's strategy as a documented option (docs/explanation/performance.md): a user who installed
`mitogen` sets ANSIBLE_STRATEGY_PLUGINS and ANSIBLE_STRATEGY=mitogen_linear, and a workflow over real sshd
test hosts runs through it, with the run recorded as usual. Evidence that Mitogen ran the tasks: the two
module tasks of one step on one host run in the same remote Python process (Mitogen keeps one interpreter
per host and connection), where Ansible's own strategies start a new one per task."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli, write

ansible_mitogen = pytest.importorskip("ansible_mitogen")

# each task records the PID of the Python that runs its module (the shell's parent) on the host, which is
# this machine: the file lands in the workspace
PLAY = """
- hosts: fleet
  gather_facts: false
  tasks:
    - name: first task
      ansible.builtin.shell: echo "{{ step }} {{ inventory_hostname }} first $PPID" >> {{ workspace.root }}/pids.txt
    - name: second task
      ansible.builtin.shell: echo "{{ step }} {{ inventory_hostname }} second $PPID" >> {{ workspace.root }}/pids.txt
"""


@pytest.fixture(scope="module")
def hosts():
    from tests.fleet.sshd import SSHFleet

    fleet = SSHFleet(2, first=44)
    yield fleet
    fleet.stop()


@pytest.fixture
def ws(tmp_path: Path, hosts) -> Path:
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: mitogen
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
    write(root / "blocks/fleet/one.yml", PLAY.replace("{{ step }}", "one"))
    write(root / "blocks/fleet/two.yml", PLAY.replace("{{ step }}", "two"))
    inventory = hosts.inventory({"fleet": [h.name for h in hosts.hosts]}, sharing=True)
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory))
    return root


def pids(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    found: dict[tuple[str, str], dict[str, str]] = {}
    for line in (root / "pids.txt").read_text().splitlines():
        step, host, task, pid = line.split()
        found.setdefault((step, host), {})[task] = pid
    return found


def mitogen_env() -> dict[str, str]:
    strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    # Mitogen checks host keys itself (the test hosts' keys are in no known_hosts file)
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            # its connect timeout (10 s) includes starting the remote interpreter, slow on a busy machine
            "ANSIBLE_TIMEOUT": "300"}


def test_a_workflow_runs_through_mitogens_strategy_and_is_recorded(ws: Path, hosts) -> None:
    result = run_cli("workflows", "run", "two", cwd=ws, env=mitogen_env())
    assert result.returncode == 0, result.output
    found = pids(ws)
    assert sorted(found) == [(s, h.name) for s in ("one", "two") for h in hosts.hosts]
    for key, tasks in found.items():
        assert tasks["first"] == tasks["second"], f"{key}: two remote interpreters, Mitogen did not run it"
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "succeeded"], shown
    # our callback's events came through: two tasks ok on each host, each step
    expected = {h.name: 2 for h in hosts.hosts}
    assert [{h: c["ok"] for h, c in s["hosts"].items()} for s in shown["steps"]] == [expected, expected], shown


def test_without_the_option_each_task_starts_its_own_remote_python(ws: Path, hosts) -> None:
    """The control: the evidence above tells the two apart."""
    result = run_cli("workflows", "run", "two", cwd=ws)
    assert result.returncode == 0, result.output
    for key, tasks in pids(ws).items():
        assert tasks["first"] != tasks["second"], key
