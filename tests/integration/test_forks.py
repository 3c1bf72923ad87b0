"""Forks for the fleet's size (runtime/ansible.py fleet_forks): a play over more hosts than Ansible's
default 5 gets one fork per host up to the cap; the user's forks setting wins; without the preflight's
host count Ansible's default stays."""
import json

import pytest

from polycrate.runtime.ansible import fleet_forks
from tests.conftest import run_cli, write

HOSTS = 8


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: forks\nblocks:\n  - name: b\n")
    write(root / "blocks/b/block.poly", "name: b\nactions:\n  - {name: go, playbook: go.yml}\n")
    write(root / "blocks/b/go.yml", """
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.copy:
                dest: "{{ workspace.root }}/forks.json"
                content: "{{ {'forks': ansible_forks} | to_json }}"
              delegate_to: localhost
              run_once: true
        """)
    hosts = "".join(f"    h{i}: {{ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}}\n"
                    for i in range(HOSTS))
    write(root / "inventory.yml", "all:\n  hosts:\n" + hosts)
    return root


def forks_of(ws, *args, env=None):
    result = run_cli("run", "b", "go", *args, cwd=ws, env=env)
    assert result.returncode == 0, result.output
    return json.loads((ws / "forks.json").read_text())["forks"]


def test_one_fork_per_host_and_the_users_setting_wins(ws):
    assert forks_of(ws) == HOSTS
    assert forks_of(ws, env={"ANSIBLE_FORKS": "3"}) == 3
    write(ws / "blocks/b/ansible.cfg", "[defaults]\nforks = 2\n")
    assert forks_of(ws) == 2


def test_without_the_preflight_ansibles_default_stays(ws):
    assert forks_of(ws, "--no-preflight") == 5


def test_the_rule(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    env = {"HOME": str(tmp_path)}
    assert fleet_forks(None, env, tmp_path) is None and fleet_forks(5, env, tmp_path) is None
    assert fleet_forks(12, env, tmp_path) == 12
    assert fleet_forks(100, env, tmp_path) == 20  # 10 per core
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert fleet_forks(1000, env, tmp_path) == 50
    assert fleet_forks(100, {**env, "ANSIBLE_FORKS": "7"}, tmp_path) is None
