"""Every bad input: one line naming the file (and line), exit 2, no traceback, nothing run."""
import pytest

from tests.conftest import assert_one_line_error, run_cli, write

GOOD_BLOCK = """
name: b
version: 1.0.0
actions:
  - name: go
    playbook: go.yml
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(
        root / "workspace.poly",
        """
        name: w
        blocks:
          - name: b
        workflows:
          - name: nightly
            steps:
              - {name: s1, block: b, action: go}
        """,
    )
    write(root / "blocks/b/block.poly", GOOD_BLOCK)
    write(root / "blocks/b/go.yml", "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks: []\n")
    return root


def test_malformed_workspace_yaml_names_file_and_line(ws):
    write(ws / "workspace.poly", "name: w\nblocks:\n  - name: b\n    config: {a: 1\n")
    result = run_cli("workflows", "list", cwd=ws)
    assert_one_line_error(result, "workspace.poly:", "invalid YAML")


def test_malformed_block_yaml(ws):
    write(ws / "blocks/b/block.poly", "name: b\nactions:\n  - name: go\n   playbook: go.yml\n")
    result = run_cli("run", "b", "go", cwd=ws)
    assert_one_line_error(result, "blocks/b/block.poly:4", "invalid YAML")


def test_malformed_inventory(ws):
    write(ws / "inventory.yml", "all:\n  hosts:\n    a: [\n")
    assert_one_line_error(run_cli("run", "b", "go", cwd=ws), "inventory.yml:", "invalid YAML")


def test_unknown_block_action_workflow_suggest(ws):
    assert_one_line_error(run_cli("run", "bb", "go", cwd=ws), "workspace.poly", "unknown block 'bb'", "did you mean 'b'")
    assert_one_line_error(run_cli("run", "b", "goo", cwd=ws), "block.poly", "no action 'goo'", "did you mean 'go'")
    assert_one_line_error(
        run_cli("workflows", "run", "nightlly", cwd=ws), "workspace.poly", "unknown workflow", "did you mean 'nightly'"
    )
    assert_one_line_error(run_cli("workflows", "inspect", "x", cwd=ws), "unknown workflow 'x'")


def test_step_referencing_unknown_action(ws):
    text = (ws / "workspace.poly").read_text().replace("action: go", "action: og")
    write(ws / "workspace.poly", text)
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "workspace.poly:7", "no action 'og'")


def test_missing_playbook(ws):
    (ws / "blocks/b/go.yml").unlink()
    assert_one_line_error(run_cli("run", "b", "go", cwd=ws), "blocks/b/block.poly:4", "playbook 'go.yml' not found")
    assert_one_line_error(run_cli("workflows", "run", "nightly", cwd=ws), "playbook 'go.yml' not found")
    assert_one_line_error(run_cli("workspace", "validate", cwd=ws), "playbook 'go.yml' not found")


@pytest.mark.parametrize("bad, said", [("bad name", "invalid action name"), ("-dash", "invalid action name"),
                                       ("x/y", "invalid action name"), ("ä", "invalid action name"),
                                       ("", "the action has no name")])
def test_invalid_names(ws, bad, said):
    write(ws / "blocks/b/block.poly", GOOD_BLOCK.replace("name: go", f"name: '{bad}'"))
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "blocks/b/block.poly:4", said)


def test_from_matching_no_installed_block(ws):
    text = (ws / "workspace.poly").read_text().replace("- name: b\n", "- name: b\n    from: reg.example.com/x/b:1.0.0\n")
    write(ws / "workspace.poly", text)
    assert_one_line_error(
        run_cli("run", "b", "go", cwd=ws), "workspace.poly:3", "matches no installed block", "polycrate blocks pull"
    )


def test_no_workspace(tmp_path):
    assert_one_line_error(run_cli("workflows", "list", cwd=tmp_path), "no workspace.poly")


def test_wrong_types(ws):
    write(ws / "workspace.poly", "name: w\nworkflows: {a: 1}\n")
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "workspace.poly:2", "must be a list")
    write(ws / "workspace.poly", "name: w\nworkflows:\n  - name: x\n    steps:\n      - {name: a, block: b, action: go, allow_failure: maybe}\n")
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "workspace.poly:5", "allow_failure")


def test_duplicate_names(ws):
    write(ws / "blocks/b/block.poly", GOOD_BLOCK + "  - name: go\n    playbook: go.yml\n")
    assert_one_line_error(run_cli("workflows", "list", cwd=ws), "block.poly:6", "duplicate action 'go'")


def test_usage_errors_are_one_line(ws):
    # one argument is a workflow (the real Polycrate's `run WORKFLOW`): an unknown one is a one-line error
    assert_one_line_error(run_cli("run", "b", cwd=ws), "'b' is a block, not a workflow", "polycrate run b go")
    assert_one_line_error(run_cli("run", cwd=ws), "required")
    assert_one_line_error(run_cli("nosuchcommand", cwd=ws), "invalid choice")
