"""Workflow order, failure policy, --step, prompts and script actions, through the real CLI."""
import json
import re

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_cli_tty, write

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.shell: echo {name} >> {{{{ workspace.root }}}}/order.txt
    - ansible.builtin.fail:
        msg: "{name} failed on purpose"
      when: {fail}
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(
        root / "workspace.poly",
        """
        name: flow
        blocks:
          - name: b
            config:
              greeting: from-workspace
        workflows:
          - name: three
            steps:
              - {name: one, block: b, action: one}
              - {name: two, block: b, action: two}
              - {name: three, block: b, action: three}
          - name: tolerant
            steps:
              - {name: one, block: b, action: one}
              - {name: two, block: b, action: two, allow_failure: true}
              - {name: three, block: b, action: three}
          - name: guarded
            prompt:
              message: "Really run the guarded workflow?"
            steps:
              - {name: one, block: b, action: one}
        """,
    )
    write(
        root / "blocks/b/block.poly",
        """
        name: b
        version: 1.0.0
        config:
          greeting: from-block
          nested: {keep: yes}
        actions:
          - {name: one, playbook: one.yml}
          - {name: two, playbook: two.yml}
          - {name: three, playbook: three.yml}
          - name: lines
            script:
              - echo "first $POLYCRATE_BLOCK $POLYCRATE_ACTION" >> "$POLYCRATE_WORKSPACE/script.txt"
              - echo "second $(pwd)" >> "$POLYCRATE_WORKSPACE/script.txt"
              - cp "$POLYCRATE_WORKSPACE_SNAPSHOT_YAML" "$POLYCRATE_WORKSPACE/snapshot-copy.yml"
          - name: stops
            script:
              - echo before >> "$POLYCRATE_WORKSPACE/script.txt"
              - "false"
              - echo after >> "$POLYCRATE_WORKSPACE/script.txt"
          - name: pipe
            script:
              - "false | true"
              - echo unreachable >> "$POLYCRATE_WORKSPACE/script.txt"
          - name: dangerous
            prompt:
              message: "This wipes the staging database. Continue?"
            script:
              - echo ran >> "$POLYCRATE_WORKSPACE/script.txt"
        """,
    )
    write(root / "blocks/b/one.yml", PLAY.format(name="one", fail="false"))
    write(root / "blocks/b/two.yml", PLAY.format(name="two", fail="true"))
    write(root / "blocks/b/three.yml", PLAY.format(name="three", fail="false"))
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: /usr/bin/python3\n")
    return root


def order(root):
    path = root / "order.txt"
    return path.read_text().split() if path.exists() else []


def test_failing_second_step_stops_the_third(ws):
    result = run_cli("workflows", "run", "three", cwd=ws)
    assert result.returncode == 1, result.output
    assert order(ws) == ["one", "two"]
    assert "failed: step two" in result.stdout and re.search(r"^  three +skipped", result.stdout, re.M)
    assert "two failed on purpose" in result.stdout  # ansible's own output streams through


def test_failing_action_names_task_and_message(ws):
    result = run_cli("run", "b", "two", cwd=ws)
    assert result.returncode == 1
    assert "failed: step two, task 'ansible.builtin.fail' on localhost" in result.stdout
    assert "\n  two failed on purpose\n" in result.stdout  # the message, under the failing step


def test_failing_workflow_json_summary(ws):
    result = run_cli("workflows", "run", "three", "--output", "json", cwd=ws)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed" and summary["failed_step"] == "two"
    assert [s["status"] for s in summary["steps"]] == ["succeeded", "failed", "skipped"]


def test_allow_failure_goes_on(ws):
    result = run_cli("workflows", "run", "tolerant", cwd=ws)
    assert result.returncode == 0, result.output
    assert order(ws) == ["one", "two", "three"]
    assert "failed (allowed)" in result.stdout


def test_step_runs_one_step(ws):
    result = run_cli("workflows", "run", "three", "--step", "three", cwd=ws)
    assert result.returncode == 0, result.output
    assert order(ws) == ["three"]


def test_unknown_step_suggests(ws):
    result = run_cli("workflows", "run", "three", "--step", "thre", cwd=ws)
    assert_one_line_error(result, "workspace.poly", "no step 'thre'", "did you mean 'three'")
    assert order(ws) == []


def test_script_lines_run_in_order_in_the_block_folder(ws):
    result = run_cli("run", "b", "lines", cwd=ws)
    assert result.returncode == 0, result.output
    lines = (ws / "script.txt").read_text().splitlines()
    assert lines == ["first b lines", f"second {ws / 'blocks' / 'b'}"]
    import yaml

    snap = yaml.safe_load((ws / "snapshot-copy.yml").read_text())
    assert snap["block"]["config"] == {"greeting": "from-workspace", "nested": {"keep": True}}
    assert snap["workspace"]["name"] == "flow"


def test_script_stops_at_the_first_failing_line(ws):
    result = run_cli("run", "b", "stops", cwd=ws)
    assert result.returncode == 1
    assert (ws / "script.txt").read_text().split() == ["before"]


def test_script_pipefail(ws):
    result = run_cli("run", "b", "pipe", cwd=ws)
    assert result.returncode == 1
    assert not (ws / "script.txt").exists()


def test_prompt_without_terminal_refuses(ws):
    result = run_cli("run", "b", "dangerous", cwd=ws)
    assert_one_line_error(result, "no terminal", "--force")
    assert not (ws / "script.txt").exists()
    result = run_cli("workflows", "run", "guarded", cwd=ws)
    assert_one_line_error(result, "Really run the guarded workflow?", "--force")
    assert order(ws) == []


def test_prompt_force_answers_yes(ws):
    assert run_cli("run", "b", "dangerous", "--force", cwd=ws).returncode == 0
    assert run_cli("-f", "workflows", "run", "guarded", cwd=ws).returncode == 0
    assert (ws / "script.txt").read_text().split() == ["ran"]
    assert order(ws) == ["one"]


def test_prompt_on_terminal_yes_and_no(ws):
    no = run_cli_tty("run", "b", "dangerous", cwd=ws, answer="n")
    assert no.returncode == 1 and "wipes the staging database" in no.stdout
    assert not (ws / "script.txt").exists()
    yes = run_cli_tty("run", "b", "dangerous", cwd=ws, answer="y")
    assert yes.returncode == 0, yes.stdout
    assert (ws / "script.txt").read_text().split() == ["ran"]


def test_environment_for_workflow_steps(ws):
    write(
        ws / "blocks/b/block.poly",
        (ws / "blocks/b/block.poly").read_text()
        + "  - name: env\n    script:\n      - env | grep ^POLYCRATE_ | sort > \"$POLYCRATE_WORKSPACE/env.txt\"\n",
    )
    write(
        ws / "workspace.poly",
        (ws / "workspace.poly").read_text() + "  - name: envflow\n    steps:\n      - {name: show, block: b, action: env}\n",
    )
    assert run_cli("workflows", "run", "envflow", cwd=ws, env={"POLYCRATE_STEP": "stale"}).returncode == 0
    env = dict(line.split("=", 1) for line in (ws / "env.txt").read_text().splitlines())
    assert env["POLYCRATE_WORKSPACE"] == str(ws)
    assert env["POLYCRATE_BLOCK"] == "b" and env["POLYCRATE_ACTION"] == "env"
    assert env["POLYCRATE_WORKFLOW"] == "envflow" and env["POLYCRATE_STEP"] == "show"


def test_runs_from_a_subfolder_and_with_w(ws, tmp_path):
    sub = ws / "blocks" / "b"
    assert run_cli("workflows", "run", "three", "--step", "one", cwd=sub).returncode == 0
    assert run_cli("-w", str(ws), "workflows", "run", "three", "--step", "one", cwd=tmp_path).returncode == 0
    assert order(ws) == ["one", "one"]


def test_list_and_inspect_json(ws):
    data = json.loads(run_cli("workflows", "list", "-o", "json", cwd=ws).stdout)["workflows"]
    assert [w["name"] for w in data] == ["three", "tolerant", "guarded"]
    data = json.loads(run_cli("workflows", "inspect", "tolerant", "-o", "json", cwd=ws).stdout)
    assert data["steps"][1] == {"name": "two", "block": "b", "action": "two", "allow_failure": True,
                                "allow_no_hosts": False, "timeout": None, "retries": 0, "retry_delay": 0.0,
                                "slices": 1, "prompt": None, "labels": {}}
    actions = json.loads(run_cli("actions", "list", "-o", "json", cwd=ws).stdout)["actions"]
    assert {a["name"] for a in actions} >= {"one", "two", "three", "lines", "dangerous"}
    lines = next(a for a in actions if a["name"] == "lines")
    assert lines["type"] == "script" and lines["playbook"] is None and len(lines["script"]) >= 1  # its lines, not prose
    block = json.loads(run_cli("blocks", "inspect", "b", "-o", "json", cwd=ws).stdout)
    assert block["config"]["greeting"] == "from-workspace" and block["version"] == "1.0.0"
    snap = json.loads(run_cli("workspace", "snapshot", "-o", "json", cwd=ws).stdout)
    assert snap["workspace"]["blocks"][0]["config"]["nested"] == {"keep": True}
    inspect = json.loads(run_cli("workspace", "inspect", "-o", "json", cwd=ws).stdout)
    assert inspect["name"] == "flow" and inspect["blocks"] == {"b": "1.0.0"}


def test_version_and_init(tmp_path):
    assert run_cli("--version").stdout.startswith("polycrate ")
    target = tmp_path / "new-ws"
    assert run_cli("workspace", "init", str(target)).returncode == 0
    assert run_cli("workspace", "validate", cwd=target).returncode == 0
    again = run_cli("workspace", "init", str(target))
    assert_one_line_error(again, "already exists")


def test_a_failed_command_says_its_return_code_and_output(tmp_path):
    """The command modules' own msg is only "non-zero return code": the summary adds the code, and the
    command's last stdout line when it printed nothing on stderr."""
    write(tmp_path / "workspace.poly", "name: rc\nconfig: {runtime: local}\n")
    write(tmp_path / "blocks/c/block.poly", "name: c\nactions:\n  - {name: check, playbook: check.yml}\n")
    write(tmp_path / "blocks/c/check.yml", """
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: Check the disk
              ansible.builtin.command: sh -c 'echo disk 97% full; exit 3'
        """)
    result = run_cli("run", "c", "check", cwd=tmp_path)
    assert result.returncode == 1, result.output
    assert "failed: step check, task 'Check the disk' on localhost" in result.stdout
    assert "\n  non-zero return code 3\n  disk 97% full\n" in result.stdout, result.stdout


def test_inspect_says_the_schedule_queue_and_launch_values(ws):
    """`workflows inspect` showed the steps only: not when the workflow runs, on which queue, nor what a web or API
    launch may set."""
    poly = ws / "workspace.poly"
    poly.write_text(poly.read_text() + """
  - name: rotate
    schedule: {cron: "15 4 * * 1"}
    queue: db-segment
    launch:
      variables:
        - {name: note, type: string, required: true}
        - {name: size, type: choice, choices: [small, large], default: small}
        - {name: db_password, type: secret}
    steps:
      - {name: one, block: b, action: one}
""")
    shown = run_cli("workflows", "inspect", "rotate", cwd=ws)
    assert shown.returncode == 0, shown.output
    assert "schedule: cron 15 4 * * 1\nqueue: db-segment\n" in shown.stdout, shown.stdout
    assert ("launch values: note (string, required), size (choice, default small, one of small|large), "
            "db_password (secret)\n") in shown.stdout, shown.stdout
    data = json.loads(run_cli("workflows", "inspect", "rotate", "-o", "json", cwd=ws).stdout)
    from tests.helpers import validate_document

    validate_document(data, "workflow")
    assert data["queue"] == "db-segment" and data["schedule"]["expression"] == "15 4 * * 1"
    secret = data["launch_variables"][2]
    assert secret == {"name": "db_password", "type": "secret", "required": False, "default": None,
                      "description": None, "choices": None}
    listed = json.loads(run_cli("workflows", "list", "-o", "json", cwd=ws).stdout)["workflows"]
    assert next(w for w in listed if w["name"] == "rotate")["launch_variables"][1]["choices"] == ["small", "large"]
    plain = run_cli("workflows", "inspect", "three", cwd=ws).stdout  # none of it: none of those lines
    assert "schedule:" not in plain and "queue:" not in plain and "launch values:" not in plain, plain
