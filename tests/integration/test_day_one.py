"""What a user meets on day one (issue 27): bad input that used to get through, and small answers."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_cli_inprocess, write
from tests.helpers import cli_environment

WORKSPACE = """
name: day
blocks:
  - name: diskcheck
workflows:
  - name: w
    steps:
      - {name: first, block: diskcheck, action: check}
      - {name: nap, block: diskcheck, action: nap}
"""
BLOCK = """
name: diskcheck
version: 1.0.0
actions:
  - name: check
    script: ["echo checked"]
  - name: report
    playbook: report.yml
  - name: nap
    script: ["echo napping; exec sleep 60"]
"""
PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug: {msg: hi}
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", WORKSPACE)
    write(root / "blocks/diskcheck/block.poly", BLOCK)
    write(root / "blocks/diskcheck/report.yml", PLAY)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    return root


def validate_quickly(root):
    """`workspace validate` with a bound that only guards against a hang (the old ones ran for minutes)."""
    return run_cli("workspace", "validate", cwd=root, timeout=120)


@pytest.mark.parametrize("inventory, said", [
    # an alias bomb: 9 levels of 9
    ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)) + "all: {hosts: {}}\n",
     "more than 250,000 values"),
    ("all:\n  vars:\n    big:\n" + "      - x\n" * 300_000, "more than 250,000 values"),
])
def test_an_inventory_beyond_our_yaml_limits_is_one_line(ws, inventory, said):
    (ws / "inventory.yml").write_text(inventory)
    assert_one_line_error(validate_quickly(ws), "inventory.yml:", said)
    run = run_cli("run", "diskcheck", "report", cwd=ws, timeout=120)
    assert_one_line_error(run, "inventory.yml:", said)


def test_a_long_inheritance_chain_is_refused_at_its_line(ws):
    text = WORKSPACE.replace("  - name: diskcheck\n", "  - name: diskcheck\n  - name: b0\n")
    write(ws / "workspace.poly", text)
    for i in range(300):
        parent = f"from: b{i + 1}\n" if i < 299 else ""
        write(ws / f"blocks/b{i}/block.poly", f"name: b{i}\n{parent}actions:\n  - {{name: a, script: [echo]}}\n")
    result = validate_quickly(ws)
    assert_one_line_error(result, "block.poly:2:", "more than 16 levels of `from:`")


def test_a_huge_schedule_delay_is_one_line_for_every_command(ws):
    text = WORKSPACE.replace("  - name: w\n", "  - name: w\n    schedule: {cron: '0 2 * * *', randomized_delay: '"
                             + "9" * 400 + "y'}\n")
    write(ws / "workspace.poly", text)
    for argv in (("workflows", "list"), ("schedules", "plan", "--dest", str(ws)), ("workspace", "validate")):
        assert_one_line_error(run_cli_inprocess(*argv, cwd=ws), "workspace.poly:6:", "is longer than 366 days")


def test_a_lone_surrogate_is_refused_at_its_line(ws):
    write(ws / "blocks/diskcheck/block.poly", BLOCK.replace("version: 1.0.0\n", 'version: 1.0.0\ndescription: "x\\ud83d"\n'))
    assert_one_line_error(run_cli_inprocess("blocks", "list", cwd=ws), "blocks/diskcheck/block.poly:3:",
                          "lone surrogate (\\ud83d)")


def test_run_with_a_block_name_alone_names_its_actions(ws):
    assert_one_line_error(run_cli_inprocess("run", "diskcheck", cwd=ws), "'diskcheck' is a block, not a workflow",
                          "polycrate run diskcheck check", "its actions: check, report, nap")


def test_keygen_output_is_the_format_and_the_file_is_identity(ws, tmp_path):
    key = tmp_path / "key.txt"
    made = run_cli_inprocess("workspace", "keygen", "--identity", str(key), "-o", "json", cwd=ws)
    assert made.returncode == 0 and json.loads(made.stdout)["identity_file"] == str(key)
    assert key.read_text().count("AGE-SECRET-KEY-1") == 1
    assert_one_line_error(run_cli_inprocess("workspace", "keygen", "--output", str(tmp_path / "k2"), cwd=ws),
                          "-o/--output is the output format, the identity file is --identity FILE")
    assert not (tmp_path / "k2").exists()


def test_each_help_lists_only_the_options_its_command_takes(ws):
    encrypt = run_cli_inprocess("workspace", "encrypt", "--help", cwd=ws)
    assert encrypt.returncode == 0 and "--rekey" in encrypt.stdout
    for flag in ("--mount", "--event-endpoint", "--auto-commit", "--snapshot", "--local"):
        assert flag not in encrypt.stdout, flag
    run = run_cli_inprocess("run", "--help", cwd=ws)
    for flag in ("--mount", "--event-endpoint", "--snapshot", "--local", "--resume"):
        assert flag in run.stdout, flag
    assert_one_line_error(run_cli_inprocess("workspace", "encrypt", "--mount", "/a:/b", cwd=ws),
                          "only for commands that run actions")  # still refused, not silently taken


def test_ctrl_c_prints_the_resume_hint_and_attempts_are_filled(ws):
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "w"], cwd=ws,
                            env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        for line in proc.stdout:  # until the second step runs
            if "napping" in line:
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["status"] == "interrupted" and run["exit_code"] == 130
    assert f"polycrate: run {run['run_id']} interrupted; recorded as interrupted" in out
    assert "next: continue it:  polycrate workflows run w --resume" in out
    first, nap = run["steps"]
    assert first["attempts"] == 1 and nap["attempts"] == 1 and nap["message"] == "interrupted (SIGINT)"
    shown = run_cli("runs", "show", "latest", cwd=ws).stdout
    assert [line.split()[5] for line in shown.splitlines() if line.startswith(("1 ", "2 "))] == ["1", "1"], shown
