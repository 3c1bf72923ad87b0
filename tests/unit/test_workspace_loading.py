from pathlib import Path

import pytest

from polycrate.errors import ConfigError
from polycrate.config.refs import split_reference
from polycrate.config.workspace import find_root, load_workspace
from tests.conftest import EXAMPLE, write


def make(root: Path, workspace: str, blocks: dict[str, str]) -> Path:
    write(root / "workspace.poly", workspace)
    for rel, text in blocks.items():
        write(root / "blocks" / rel / "block.poly", text)
    return root


BLOCK = """
name: {name}
version: {version}
config:
  a: 1
actions:
  - name: hello
    script: ["echo hi"]
"""


def test_split_reference():
    assert split_reference("registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0") == (
        "registry.acme-corp.com/acme/infra/linux-maintenance",
        "0.1.0",
    )
    assert split_reference("localhost:5000/acme/x") == ("localhost:5000/acme/x", None)
    assert split_reference("localhost:5000/acme/x:1.2") == ("localhost:5000/acme/x", "1.2")


def test_article_example_loads_with_merged_config():
    ws = load_workspace(EXAMPLE)
    block = ws.blocks["linux-maintenance"]
    assert block.definition.relpath == "registry.acme-corp.com/acme/infra/linux-maintenance"
    assert block.config["hosts"] == "db_servers" and block.config["web_hosts"] == "web_servers"
    assert [s.action for s in ws.workflows["nightly-maintenance"].steps] == ["backup", "update", "verify"]


def test_discovery_under_registry_paths_and_by_name(tmp_path):
    root = make(
        tmp_path,
        """
        name: ws
        blocks:
          - name: tool
            from: reg.example.com/team/deep/path/tool:2.0.0
            config: {a: 5}
          - name: second-instance
            from: reg.example.com/team/deep/path/tool:2.0.0
          - name: local
        """,
        {
            "reg.example.com/team/deep/path/tool": BLOCK.format(name="tool", version="2.0.0"),
            "local": BLOCK.format(name="local", version="0.1"),
            "unreferenced": BLOCK.format(name="unreferenced", version="1"),
        },
    )
    ws = load_workspace(root)
    assert ws.blocks["tool"].config == {"a": 5}
    assert ws.blocks["second-instance"].config == {"a": 1}
    assert ws.blocks["second-instance"].folder == ws.blocks["tool"].folder
    assert ws.blocks["local"].version == "0.1"
    assert "unreferenced" in ws.blocks


def test_version_mismatch_is_an_error(tmp_path):
    root = make(
        tmp_path,
        """
        name: ws
        blocks:
          - name: tool
            from: reg.example.com/tool:3.0.0
        """,
        {"reg.example.com/tool": BLOCK.format(name="tool", version="2.0.0")},
    )
    with pytest.raises(ConfigError) as err:
        load_workspace(root)
    assert "version 2.0.0" in str(err.value) and "workspace.poly:3" in str(err.value)


def test_find_root_searches_upward(tmp_path):
    make(tmp_path, "name: ws\n", {})
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()
    with pytest.raises(ConfigError):
        find_root(deep, explicit=True)


def test_unknown_keys_are_reported_with_line(tmp_path):
    make(tmp_path, "name: ws\nworkflows:\n  - name: w\n    stpes: []\n", {})
    with pytest.raises(ConfigError) as err:
        load_workspace(tmp_path)
    assert "workspace.poly:4" in str(err.value) and "stpes" in str(err.value)
