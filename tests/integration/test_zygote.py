"""The warm Ansible process a workflow's steps fork from (runtime/zygote.py): it is really used, it gives
the same results as cold processes, and a step whose Ansible configuration differs (its own ansible.cfg)
gets that configuration, not the zygote's."""
import json

import pytest

from tests.conftest import run_cli, write

PLAY = r"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: record the step, its configuration and the processes it runs under
      ansible.builtin.shell: >-
        printf '%s\n' {{ {'step': lookup('ansible.builtin.env', 'POLYCRATE_STEP'),
                 'timeout': lookup('ansible.builtin.config', 'DEFAULT_TIMEOUT'),
                 'greeting': block.config.greeting,
                 'chain': lookup('ansible.builtin.pipe', chain_cmd)} | to_json | quote }} >> {{ workspace.root }}/records.jsonl
      vars:
        # the command lines of the processes above this lookup, nearest first
        chain_cmd: >-
          p=$PPID; for i in 1 2 3 4 5 6; do [ "$p" -gt 1 ] || break;
          tr '\0' ' ' < /proc/$p/cmdline; printf ' | '; p=$(awk '/^PPid/{print $2}' /proc/$p/status); done
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(
        root / "workspace.poly",
        """
        name: zyg
        blocks:
          - name: a
            config: {greeting: hello-a}
          - name: b
            config: {greeting: hello-b}
        workflows:
          - name: three
            steps:
              - {name: first, block: a, action: go}
              - {name: second, block: a, action: go}
              - {name: third, block: b, action: go}
        """,
    )
    for name in ("a", "b"):
        write(root / f"blocks/{name}/block.poly", f"name: {name}\nactions:\n  - name: go\n    playbook: go.yml\n")
        write(root / f"blocks/{name}/go.yml", PLAY)
    write(root / "blocks/b/ansible.cfg", "[defaults]\ntimeout = 42\n")  # read only by block b's steps
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: /usr/bin/python3\n")
    return root


def run(ws, zygote: bool) -> list[dict]:
    (ws / "records.jsonl").unlink(missing_ok=True)
    result = run_cli("workflows", "run", "three", cwd=ws, env={"POLYCRATE_ZYGOTE": "1" if zygote else "0"})
    assert result.returncode == 0, result.output
    return [json.loads(line) for line in (ws / "records.jsonl").read_text().splitlines()]


def test_steps_fork_from_the_warm_process_and_match_cold_runs(ws):
    warm = run(ws, zygote=True)
    cold = run(ws, zygote=False)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "chain"} for r in recs]  # noqa: E731
    assert strip(warm) == strip(cold) == [
        {"step": "first", "timeout": 10, "greeting": "hello-a"},
        {"step": "second", "timeout": 10, "greeting": "hello-a"},
        {"step": "third", "timeout": 42, "greeting": "hello-b"},  # block b's own ansible.cfg applies
    ]
    assert all("polycrate.runtime.zygote" in r["chain"] for r in warm)
    assert not any("polycrate.runtime.zygote" in r["chain"] for r in cold)


def test_the_zygote_is_gone_after_the_run(ws):
    import subprocess

    run(ws, zygote=True)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    assert not [line for line in procs if "polycrate.runtime.zygote" in line]
