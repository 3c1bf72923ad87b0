"""The preflight (`workspace validate`, and the check before step 1 of every run), zero-host plays,
failure reports and the one definition of a workflow's success: real ansible-playbook, real bash,
local connections."""
import json
import time

import pytest

from tests.helpers import assert_one_line_error, free_port, run_cli, tree, write
from tests.integration.test_runs_alerts import _metric, parse_prometheus_text

PLAY = """
- name: {name} play
  hosts: "{{{{ block.config.hosts }}}}"
  gather_facts: false
  tasks:
    - name: record {name}
      ansible.builtin.shell: echo {name} >> {{{{ workspace.root }}}}/order.txt
"""


@pytest.fixture
def ws(tmp_path):
    """Ansible and script actions; hosts from block config, as the article's playbooks have them."""
    root = tmp_path / "ws"
    write(
        root / "workspace.poly",
        """
        name: pre
        blocks:
          - name: b
            config:
              hosts: web_servers
        workflows:
          - name: w
            steps:
              - {name: one, block: b, action: one}
              - {name: two, block: b, action: two}
              - {name: three, block: b, action: sh}
        """,
    )
    write(
        root / "blocks/b/block.poly",
        """
        name: b
        config:
          hosts: all
        actions:
          - {name: one, playbook: one.yml}
          - {name: two, playbook: two.yml}
          - name: sh
            script:
              - echo script-start
              - test -d "$POLYCRATE_WORKSPACE"
        """,
    )
    write(
        root / "inventory.yml",
        """
        all:
          vars:
            ansible_connection: local
            ansible_python_interpreter: "{{ ansible_playbook_python }}"
          hosts:
            web01: {}
            db01: {}
          children:
            web_servers:
              hosts:
                web01:
            db_servers:
              hosts:
                db01:
        """,
    )
    for name in ("one", "two"):
        write(root / f"blocks/b/{name}.yml", PLAY.format(name=name))
    return root


def test_validate_passes_on_script_and_ansible_actions_and_writes_nothing(ws):
    before = tree(ws)
    result = run_cli("workspace", "validate", cwd=ws)
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    assert "workspace pre is valid: 1 blocks, 3 actions, 1 workflows, 2 plays, 2 hosts" in result.stdout
    assert json.loads(run_cli("workspace", "validate", "-o", "json", cwd=ws).stdout)["findings"] == []
    assert tree(ws) == before and not (ws / ".polycrate").exists()


@pytest.mark.parametrize(
    "case, playbook, fragments",
    [
        ("invalid YAML", "- name: x\n  hosts: all\n  tasks:\n   - debug: msg=1\n    foo: bar\n",
         ["blocks/b/two.yml:5:", "invalid YAML"]),
        ("unknown module", "- name: x\n  hosts: all\n  tasks:\n    - name: typo\n      debugg:\n        msg: hi\n",
         ["blocks/b/two.yml:4:", "couldn't resolve module/action 'debugg'"]),
        ("hosts matching nothing", "- name: patch\n  hosts: web_servrs\n  tasks: []\n",
         ["blocks/b/two.yml:1:", "play 'patch' matched no hosts (pattern 'web_servrs')"]),
        ("templated hosts matching nothing", PLAY.format(name="two").replace("block.config.hosts", "block.config.nope"),
         ["blocks/b/two.yml:3:", "Error processing keyword 'hosts'", "'nope'"]),
    ],
)
def test_validate_names_the_playbook(ws, case, playbook, fragments):
    (ws / "blocks/b/two.yml").write_text(playbook)
    before = tree(ws)
    result = run_cli("workspace", "validate", cwd=ws)
    assert_one_line_error(result, *fragments, "(block 'b', action 'two')")
    data = json.loads(run_cli("workspace", "validate", "-o", "json", cwd=ws).stdout)["findings"]
    assert [f["severity"] for f in data] == ["error"] and data[0]["file"].endswith("blocks/b/two.yml")
    assert data[0]["block"] == "b" and data[0]["action"] == "two" and data[0]["line"]
    assert tree(ws) == before


def test_hosts_resolve_with_the_actions_variables(ws):
    """The workspace's config (web_servers) wins over the block's default (all): one host, not two."""
    write(ws / "blocks/b/two.yml", PLAY.format(name="two").replace("block.config.hosts", "block.config.hosts ~ ':&db_servers'"))
    result = run_cli("workspace", "validate", cwd=ws)
    assert_one_line_error(result, "play 'two play' matched no hosts (pattern 'web_servers:&db_servers')")


def test_validate_checks_scripts_with_bash_n(ws):
    text = (ws / "blocks/b/block.poly").read_text().replace('test -d "$POLYCRATE_WORKSPACE"', "fi")
    (ws / "blocks/b/block.poly").write_text(text)
    result = run_cli("workspace", "validate", cwd=ws)
    assert_one_line_error(result, "blocks/b/block.poly:7:", "script line 2 `fi`: bash: syntax error near unexpected token",
                          "(block 'b', action 'sh')")


def test_validate_reports_every_finding_one_line_each(ws):
    (ws / "blocks/b/one.yml").write_text("- hosts: nowhere\n  tasks: []\n")
    (ws / "blocks/b/two.yml").write_text("- hosts: all\n  tasks:\n    - debugg: {}\n")
    result = run_cli("workspace", "validate", cwd=ws)
    assert result.returncode == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("polycrate: error: blocks/b/") for line in lines), lines


def test_a_bad_inventory_is_a_finding(ws):
    write(ws / "inventory.yml", "all:\n  hosts:\n    a: [\n")
    assert_one_line_error(run_cli("workspace", "validate", cwd=ws), "inventory.yml:", "invalid YAML")


def test_the_run_checks_before_step_1(ws):
    """Step two's play matches nothing: the run stops before step one, as bad input: one line naming
    the playbook and the step, exit 2, no step run, no run recorded."""
    (ws / "blocks/b/two.yml").write_text("- name: patch\n  hosts: web_servrs\n  tasks: []\n")
    result = run_cli("workflows", "run", "w", cwd=ws)
    assert_one_line_error(result, "blocks/b/two.yml:1:", "play 'patch' matched no hosts (pattern 'web_servrs')",
                          "step two would fail, nothing was run")
    assert not (ws / "order.txt").exists()
    assert not (ws / ".polycrate" / "runs.db").exists()
    assert_one_line_error(run_cli("run", "b", "two", cwd=ws), "blocks/b/two.yml:1:", "matched no hosts")
    # --extra-vars and --limit apply to the check as to the run
    fixed = run_cli("workflows", "run", "w", "--step", "one", "--extra-vars", '{"block": {"config": {"hosts": "db_servers"}}}',
                    cwd=ws)
    assert fixed.returncode == 0, fixed.output
    limited = run_cli("workflows", "run", "w", "--step", "one", "--limit", "db01", cwd=ws)
    assert_one_line_error(limited, "play 'one play' matched no hosts (pattern 'web_servers') with --limit 'db01'")
    # the escape hatch: without the preflight, step one runs and step two fails on its own
    result = run_cli("workflows", "run", "w", "--no-preflight", cwd=ws)
    assert result.returncode == 1, result.output
    assert (ws / "order.txt").read_text().split() == ["one", "one"]
    assert "play 'patch' matched no hosts (pattern 'web_servrs')" in result.stdout  # the summary


DYNAMIC = """
- name: sort hosts
  hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.group_by:
        key: "kind_{{ 'web' if inventory_hostname.startswith('web') else 'db' }}"
- name: patch the mail servers
  hosts: kind_mail
  gather_facts: false
  tasks:
    - ansible.builtin.shell: echo patched >> {{ workspace.root }}/order.txt
"""


def test_a_play_that_matches_no_host_at_run_time_fails_the_step(ws):
    """The preflight cannot know groups made by group_by (a warning); the run fails the step."""
    (ws / "blocks/b/two.yml").write_text(DYNAMIC)
    validate = run_cli("workspace", "validate", cwd=ws)
    assert validate.returncode == 0, validate.output
    assert "polycrate: warning: blocks/b/two.yml:8: play 'patch the mail servers' matched no hosts" in validate.stderr
    result = run_cli("workflows", "run", "w", cwd=ws)
    assert result.returncode == 1, result.output
    assert "play 'patch the mail servers' matched no hosts (pattern 'kind_mail')" in result.stdout
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["failed_step"] == "two"
    assert run["message"] == "play 'patch the mail servers' matched no hosts (pattern 'kind_mail')"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "failed", "skipped"]


def test_allow_no_hosts_opts_a_step_out(ws):
    text = (ws / "workspace.poly").read_text().replace(
        "{name: two, block: b, action: two}", "{name: two, block: b, action: two, allow_no_hosts: true}")
    (ws / "workspace.poly").write_text(text)
    (ws / "blocks/b/two.yml").write_text("- name: patch\n  hosts: web_servrs\n  tasks: []\n")
    assert run_cli("workspace", "validate", cwd=ws).returncode == 0
    result = run_cli("workflows", "run", "w", cwd=ws)
    assert result.returncode == 0, result.output
    assert (ws / "order.txt").read_text().split() == ["one"]


def test_a_failing_script_names_its_line(ws):
    text = (ws / "blocks/b/block.poly").read_text().replace(
        'test -d "$POLYCRATE_WORKSPACE"', 'echo before\n      - test -f /nonexistent\n      - echo after')
    (ws / "blocks/b/block.poly").write_text(text)
    result = run_cli("workflows", "run", "w", cwd=ws)
    assert result.returncode == 1, result.output
    # each line shown as it starts, as written; the line after the failure never starts
    assert "+ echo before\nbefore\n+ test -f /nonexistent\n" in result.stdout
    assert "+ echo after" not in result.stdout and "__polycrate" not in result.stdout
    wanted = "script line 3 `test -f /nonexistent` failed with exit status 1"
    assert f"\n  {wanted}\n" in result.stdout  # the summary, under the failing step
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["message"] == wanted and run["steps"][2]["message"] == wanted
    shown = run_cli("runs", "show", "latest", cwd=ws).stdout
    assert wanted in shown


def test_unreachable_hosts_are_named_as_unreachable(ws):
    port = free_port("127.0.0.1")  # nothing listens there
    write(ws / "inventory.yml", f"""
        all:
          hosts:
            web01:
              ansible_host: 127.0.0.1
              ansible_port: {port}
              ansible_connection: ssh
              ansible_ssh_common_args: "-o ConnectTimeout=5 -o StrictHostKeyChecking=no"
          children:
            web_servers:
              hosts:
                web01:
        """)
    result = run_cli("workflows", "run", "w", cwd=ws)
    assert result.returncode == 1, result.output
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["failed_step"] == "one" and run["failed_host"] == "web01"
    assert run["message"].startswith("unreachable: web01"), run["message"]


def test_a_step_run_is_no_workflow_success(ws):
    """After failed full runs, a succeeding --step run leaves last_success at 0; metrics, runs list,
    --resume and webhooks share the one rule."""
    prom = ws / ".polycrate" / "metrics" / "polycrate.prom"
    broken = ws / "blocks/b/two.yml"
    good = broken.read_text()
    broken.write_text(good + "    - ansible.builtin.fail: {msg: broken on purpose}\n")
    for _ in range(2):
        assert run_cli("workflows", "run", "w", cwd=ws).returncode == 1
    assert run_cli("workflows", "run", "w", "--step", "one", cwd=ws).returncode == 0
    samples = parse_prometheus_text(prom.read_text())
    assert _metric(samples, "polycrate_workflow_last_success_timestamp_seconds", "w") == 0
    assert _metric(samples, "polycrate_workflow_last_status", "w", status="failed") == 1
    runs = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    assert [r["workflow_success"] for r in runs] == [False, False, False]
    assert "succeeded (partial)" in run_cli("runs", "list", cwd=ws).stdout
    # --resume continues the failed full run, not the --step run; finishing it is a success
    broken.write_text(good)
    resumed = run_cli("workflows", "run", "w", "--resume", cwd=ws)
    assert resumed.returncode == 0, resumed.output
    samples = parse_prometheus_text(prom.read_text())
    success = _metric(samples, "polycrate_workflow_last_success_timestamp_seconds", "w")
    assert abs(success - time.time()) < 300
    latest = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert latest["resumed_from"] and latest["workflow_success"] is True
    assert json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"][0]["workflow_success"] is True


def fleet_inventory(path, hosts=100_000):
    """A fleet inventory: every host in `all`, one in ten a web server."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("all:\n  vars:\n    ansible_connection: local\n  hosts:\n")
        out.writelines(f"    host{i:06d}.fleet.example: {{}}\n" for i in range(hosts))
        out.write("  children:\n    web_servers:\n      hosts:\n")
        out.writelines(f"        host{i:06d}.fleet.example:\n" for i in range(0, hosts, 10))


AUDIT = """
import os, sys
inventory = os.path.realpath(sys.argv[1])
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.path.realpath(os.fsdecode(args[0])) == inventory:
            opened.append(args[0])
sys.addaudithook(hook)
from polycrate.cli import main
code = main(sys.argv[2:])
print("OPENED", len(opened), file=sys.stderr)
sys.exit(code)
"""


def test_a_fleet_inventory_is_not_read_where_no_host_is_needed(ws):
    """100,000 hosts: `workflows list` never opens inventory.yml (an audit hook counts opens);
    `workspace validate` resolves the patterns against it with Ansible's inventory code."""
    import subprocess
    import sys

    fleet_inventory(ws / "inventory.yml")
    for argv in (["workflows", "list"], ["workflows", "inspect", "w"], ["workspace", "inspect"]):
        proc = subprocess.run([sys.executable, "-c", AUDIT, str(ws / "inventory.yml"), "-w", str(ws), *argv],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "OPENED 0" in proc.stderr, (argv, proc.stderr)
    # and the audit hook does see a read: validate opens it (through Ansible)
    proc = subprocess.run([sys.executable, "-c", AUDIT, str(ws / "inventory.yml"), "-w", str(ws), "workspace",
                           "validate"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "2 plays, 100000 hosts" in proc.stdout
