"""A first workspace that runs: `workspace init` then its workflow, with real ansible-playbook on
localhost (local connection); `block create NAME` adds a block that runs as it is."""
from __future__ import annotations

import json

import yaml

from tests.helpers import assert_one_line_error, run_cli, tree_digest, write


def test_init_then_its_workflow_runs_without_an_edit(tmp_path):
    root = tmp_path / "ops"
    init = run_cli("workspace", "init", str(root))
    assert init.returncode == 0, init.output
    assert "polycrate workflows run hello" in init.stdout  # it says what to run next
    # the runtime is written out, so the sample runs here whatever the default runtime is
    assert yaml.safe_load((root / "workspace.poly").read_text())["config"]["runtime"] == "local"
    inventory = yaml.safe_load((root / "inventory.yml").read_text())
    assert inventory["all"]["hosts"]["localhost"]["ansible_connection"] == "local"

    assert run_cli("workspace", "validate", cwd=root).returncode == 0
    run = run_cli("workflows", "run", "hello", cwd=root)
    assert run.returncode == 0, run.output
    assert "block hello, action greet" in run.stdout  # the script action ran, in the block folder
    # the Ansible action ran on localhost, with the workspace's config over the block's default
    assert '"msg": "Hello from the workspace ops (workspace ops, host localhost)"' in run.stdout
    shown = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=root).stdout)
    assert shown["status"] == "succeeded"
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [("greet", "succeeded"), ("ping", "succeeded")]


def test_init_alias_bare_and_refusals(tmp_path):
    bare = tmp_path / "bare"
    assert run_cli("init", "--bare", str(bare)).returncode == 0
    assert not (bare / "blocks" / "hello").exists()
    assert yaml.safe_load((bare / "workspace.poly").read_text())["workflows"] == []
    assert run_cli("workspace", "validate", cwd=bare).returncode == 0

    # a folder with an inventory of its own keeps it; one with a blocks/hello refuses, changing nothing
    kept = tmp_path / "kept"
    write(kept / "inventory.yml", """
        all:
          hosts:
            localhost: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
            db01: {}
        """)
    result = run_cli("workspace", "init", str(kept))
    assert result.returncode == 0 and "inventory.yml" in result.stdout and "kept" in result.stdout
    assert "db01" in (kept / "inventory.yml").read_text()
    assert run_cli("workflows", "run", "hello", cwd=kept).returncode == 0

    taken = tmp_path / "taken"
    write(taken / "blocks/hello/notes.txt", "mine\n")
    before = tree_digest(taken)
    assert_one_line_error(run_cli("workspace", "init", str(taken)), "blocks/hello", "already exists", "--bare")
    assert tree_digest(taken) == before and not (taken / "workspace.poly").exists()


def test_block_create_adds_a_block_that_runs(tmp_path):
    root = tmp_path / "ops"
    assert run_cli("workspace", "init", str(root)).returncode == 0
    created = run_cli("block", "create", "disk-report", cwd=root)
    assert created.returncode == 0, created.output
    assert "blocks/disk-report" in created.stdout and "polycrate run disk-report run" in created.stdout
    # a skeleton named for the block (issue 27), not the hello sample under a new name
    assert sorted(p.name for p in (root / "blocks/disk-report").iterdir()) == ["block.poly", "disk-report.yml"]
    assert "hello" not in (root / "blocks/disk-report/block.poly").read_text().lower()
    listed = json.loads(run_cli("blocks", "list", "-o", "json", cwd=root).stdout)["blocks"]
    assert {b["name"] for b in listed} == {"hello", "disk-report"}
    script = run_cli("run", "disk-report", "run", cwd=root)
    assert script.returncode == 0 and "disk-report: replace this line with the work of the block" in script.stdout
    play = run_cli("run", "disk-report", "apply", cwd=root)
    assert play.returncode == 0, play.output
    assert "disk-report on localhost" in play.stdout  # the playbook names its block
    assert run_cli("workspace", "validate", cwd=root).returncode == 0


def test_block_create_refuses_with_one_line_and_changes_nothing(tmp_path):
    root = tmp_path / "ops"
    assert run_cli("workspace", "init", str(root)).returncode == 0
    write(root / "blocks/registry.example.com/team/backup/block.poly", "name: backup\nactions: []\n")
    before = tree_digest(root)
    assert_one_line_error(run_cli("block", "create", "hello", cwd=root), "blocks/hello", "already exists")
    assert_one_line_error(run_cli("blocks", "create", "backup", cwd=root),
                          "a block named 'backup' already exists in blocks/registry.example.com/team/backup")
    assert_one_line_error(run_cli("block", "create", "bad name", cwd=root), "invalid block name 'bad name'")
    assert_one_line_error(run_cli("block", "create", "../escape", cwd=root), "invalid block name")
    assert tree_digest(root) == before
    elsewhere = tmp_path / "nowhere"
    elsewhere.mkdir()
    assert_one_line_error(run_cli("block", "create", "x", cwd=elsewhere), "no workspace.poly")
    assert list(elsewhere.iterdir()) == []
