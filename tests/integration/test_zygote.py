"""The warm Ansible process a workflow's steps fork from (runtime/zygote.py): it is really used, it gives
the same results as cold processes, and a step whose Ansible configuration differs (its own ansible.cfg)
gets that configuration, not the zygote's."""
import json
import sys
from pathlib import Path

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


def test_a_single_action_forks_its_preflight_and_its_step_from_one_warm_process(ws):
    (ws / "records.jsonl").unlink(missing_ok=True)
    result = run_cli("run", "b", "go", cwd=ws)
    assert result.returncode == 0, result.output
    [record] = [json.loads(line) for line in (ws / "records.jsonl").read_text().splitlines()]
    assert "polycrate.runtime.zygote" in record["chain"]
    assert {k: v for k, v in record.items() if k != "chain"} == {"step": "", "timeout": 42, "greeting": "hello-b"}
    cold = run_cli("run", "b", "go", "--no-preflight", cwd=ws)  # one Ansible process: no zygote
    assert cold.returncode == 0, cold.output
    last = json.loads((ws / "records.jsonl").read_text().splitlines()[-1])
    assert "polycrate.runtime.zygote" not in last["chain"]


def test_the_zygote_is_gone_after_the_run(ws):
    import subprocess

    run(ws, zygote=True)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    # Only this checkout's zygotes: other checkouts on the machine may be running their own tests.
    ours = str(Path(sys.executable).parent)
    assert not [line for line in procs if "polycrate.runtime.zygote" in line and line.startswith(ours)]


# The hosts pattern is templated by the preflight (before step 1) and again by the step: the lookup
# records the command line of the process that templates it, nearest first.
PATTERN_PLAY = r"""
- hosts: "{{ lookup('ansible.builtin.pipe', record_cmd) }}"
  connection: local
  gather_facts: false
  vars:
    record_cmd: >-
      tr '\0' ' ' < /proc/$PPID/cmdline >> {{ workspace.root }}/templated-by.txt; echo >> {{ workspace.root }}/templated-by.txt;
      echo localhost
  tasks:
    - ansible.builtin.debug: {msg: templated}
"""


def test_the_preflight_forks_from_the_warm_process(ws):
    # with the run's display environment (colour off: not a terminal) the preflight's Ansible
    # configuration is the steps', so it is a warm child, not a cold ansible-playbook
    write(ws / "blocks/a/go.yml", PATTERN_PLAY)
    result = run_cli("workflows", "run", "three", "--step", "first", cwd=ws, env={"POLYCRATE_ZYGOTE": "1"})
    assert result.returncode == 0, result.output
    lines = [line for line in (ws / "templated-by.txt").read_text().splitlines() if line.strip()]
    assert len(lines) >= 2  # the preflight's, then the step's
    assert all("polycrate.runtime.zygote" in line for line in lines), lines
    assert not any("--polycrate-preflight" in line for line in lines), lines


MODULE_PLAY = r"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
    - name: the AnsiballZ cache of this step's Ansible (the one ansible-local folder with a link to one)
      ansible.builtin.shell: >-
        for link in {{ lookup('ansible.builtin.env', 'ANSIBLE_LOCAL_TEMP') }}/*/ansiballz_cache; do
        printf '%s\n' "$(readlink "$link")" "$(ls "$link" | grep -v lock | sort | tr '\n' ' ')"; done
      register: cache
    - ansible.builtin.shell: "printf '%s\\n' {{ (cache.stdout_lines | to_json) | quote }} >> {{ workspace.root }}/caches.jsonl"
"""


def test_module_payloads_are_shared_between_the_steps_of_one_block_only(ws, tmp_path):
    for name in ("a", "b"):
        write(ws / f"blocks/{name}/go.yml", MODULE_PLAY)
    (ws / "blocks/b/ansible.cfg").unlink()  # block b forks warm too
    local_temp = tmp_path / "ansible-tmp"
    result = run_cli("workflows", "run", "three", cwd=ws,
                     env={"POLYCRATE_ZYGOTE": "1", "ANSIBLE_LOCAL_TEMP": str(local_temp)})
    assert result.returncode == 0, result.output
    records = [json.loads(line) for line in (ws / "caches.jsonl").read_text().splitlines()]
    assert [len(r) for r in records] == [2, 2, 2], records  # one linked cache per step
    (first_dir, first), (second_dir, second), (third_dir, third) = records
    assert "ansible.modules.command" in first  # built by step first, into the zygote's folder
    assert first_dir == second_dir  # steps first and second (block a) use one cache
    assert third_dir != first_dir  # block b's steps have their own: its library/ could differ
    assert "ansible.modules.command" in third
    # the shared caches lived in the zygote's temporary folder, which went with it
    assert not Path(first_dir).exists() and not Path(third_dir).exists()
    assert list(local_temp.iterdir()) == []


def _zygotes_in(folder: Path) -> list[str]:
    """Command lines of the zygotes working in `folder` (an early one works in the workspace root)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "polycrate.runtime.zygote" in args and cwd.startswith(str(folder)):
            found.append(args)
    return found


def test_an_early_zygote_a_run_does_not_take_ends_with_it(ws):
    # started before the workspace is read; this workflow has no ansible step, so nothing takes it
    write(ws / "blocks/a/block.poly", "name: a\nactions:\n  - {name: go, playbook: go.yml}\n"
          "  - {name: say, script: ['echo said']}\n")
    write(ws / "workspace.poly", (ws / "workspace.poly").read_text() + "  - name: scripts\n    steps:\n"
          "      - {name: one, block: a, action: say}\n")
    result = run_cli("workflows", "run", "scripts", cwd=ws, env={"POLYCRATE_ZYGOTE": "1"})
    assert result.returncode == 0, result.output
    assert "said" in result.output
    assert _zygotes_in(ws) == []


def test_a_step_environment_the_interpreter_reads_at_start_gets_a_fresh_zygote(ws):
    # -e LC_ALL=C.UTF-8 reaches every step: the early zygote (started without it) begins again with
    # it, and the steps still fork from a warm process that has it
    result = run_cli("-e", "LC_ALL=C.UTF-8", "workflows", "run", "three", cwd=ws, env={"POLYCRATE_ZYGOTE": "1"})
    assert result.returncode == 0, result.output
    records = [json.loads(line) for line in (ws / "records.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == ["first", "second", "third"]
    assert all("polycrate.runtime.zygote" in r["chain"] and "--early" not in r["chain"] for r in records[:2])
    assert _zygotes_in(ws) == []


def test_ansible_s_log_file_is_written_by_warm_steps(ws, tmp_path):
    """ANSIBLE_LOG_PATH: ansible-core opens its log file while importing, in the zygote; a forked step writes
    to it (its own line per task) instead of printing 'Logging error ... Bad file descriptor'."""
    log = tmp_path / "ansible.log"
    result = run_cli("workflows", "run", "three", cwd=ws,
                     env={"POLYCRATE_ZYGOTE": "1", "ANSIBLE_LOG_PATH": str(log)})
    assert result.returncode == 0, result.output
    assert "Logging error" not in result.output and "Bad file descriptor" not in result.output
    text = log.read_text()
    assert text.count("TASK [record the step, its configuration and the processes it runs under]") == 3
    pids = {line.split(" p=")[1].split()[0] for line in text.splitlines() if " p=" in line and "TASK [" in line}
    assert len(pids) == 3  # three steps, three processes, one log
    records = [json.loads(line) for line in (ws / "records.jsonl").read_text().splitlines()]
    assert all("polycrate.runtime.zygote" in r["chain"] for r in records)  # they were forked, warm
