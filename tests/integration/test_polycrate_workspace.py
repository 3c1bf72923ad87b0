"""A workspace written for the real Polycrate loads and runs unchanged: the `.workspace/` folder of its
repository (tests/data/polycrate-workspace, see ORIGIN.md there), copied byte for byte."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import run_cli_inprocess, tree

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "polycrate-workspace"


def test_the_real_polycrates_example_workspace_loads_and_runs_unchanged(tmp_path, cli):
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root)
    (root / "ORIGIN.md").unlink()
    written = tree(root)

    validate = run_cli_inprocess("workspace", "validate", cwd=root)
    assert validate.returncode == 0, validate.output
    blocks = {b["name"]: b for b in json.loads(run_cli_inprocess("block", "list", "-o", "json", cwd=root).stdout)["blocks"]}
    assert sorted(blocks) == ["camelcase", "default-false", "default-true"]
    # two block.poly files declare the name default-false; the entries' `from:` name their folders
    assert blocks["default-false"]["path"] == "blocks/default-false"
    assert blocks["default-true"]["path"] == "blocks/default-true"
    assert blocks["default-true"]["config"] == {"foo": False, "count": 0}
    # our merge rule: the workspace's false, 0 and "" win over the block's defaults (see ORIGIN.md)
    assert blocks["camelcase"]["config"] == {
        "camelCase": "willBeIgnored", "fooBar": False, "barFoo": True, "nocamel": False, "integer": 0,
        "string": "", "camelcase": "shouldbeTHERE"}
    actions = json.loads(run_cli_inprocess("action", "list", "-o", "json", cwd=root).stdout)["actions"]
    assert [(a["block"], a["name"]) for a in actions] == [("camelcase", "install")], actions

    run = cli("run", "camelcase", "install", "--runtime", "local", cwd=root)
    assert run.returncode == 0, run.output
    assert "INSTALL" in run.stdout.splitlines(), run.stdout
    shown = json.loads(cli("runs", "show", "latest", "-o", "json", cwd=root).stdout)
    assert shown["status"] == "succeeded" and shown["name"] == "camelcase install", shown

    # nothing of the workspace's own files changed (the run added .polycrate/ and artifacts/ only)
    after = tree(root)
    assert {k: v for k, v in after.items() if not k.startswith((".polycrate/", "artifacts/"))} == written
