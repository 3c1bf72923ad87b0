"""Shared fixtures: run the real CLI, build real workspaces in temporary folders, start SSH hosts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

# The CLI runners and shared helpers live in tests/helpers.py; imported here for the modules that
# take them from conftest.
from tests.helpers import (  # noqa: F401
    Result,
    assert_one_line_error,
    run_cli,
    run_cli_inprocess,
    run_cli_tty,
    write,
)

# The container is polycrate's default runtime (toolchain.DEFAULT_RUNTIME). Tests that are not about
# containers run their actions on this machine, said here once for every test and every polycrate
# they start (in-process or a subprocess: both inherit it). A test of the container runtime says
# `--runtime container` or `config.runtime: container` (both win over this); a test of the default
# itself removes the variable (env={"POLYCRATE_RUNTIME": ""}).
os.environ["POLYCRATE_RUNTIME"] = "local"

# Each folder of tests/ is a marker of the same name: `pytest -m "not e2e"` skips tests/e2e/.
FOLDER_MARKERS = ("unit", "integration", "e2e", "browser")


def pytest_collection_modifyitems(config, items):
    base = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = Path(str(item.fspath)).resolve().relative_to(base).parts[0]
        except ValueError:
            continue
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "acme-corp-automation"
ARTICLE_BLOCK = "blocks/registry.acme-corp.com/acme/infra/linux-maintenance"
# The article's own files, verbatim: workspace.poly, inventory.yml, block.poly and its sample playbooks.
# The example workspace ships the same workspace.poly and inventory.yml, and a block that keeps the
# article's block.poly keys and actions but adds its own (see the block's README).
ARTICLE_FILES = REPO / "tests" / "data" / "article"


@pytest.fixture
def hook_server():
    """A real HTTP server on loopback that records every request (method, path, headers, body): the
    receiving end of webhooks, event webhooks and chat notifications (tests/integration/notify_servers.py)."""
    from tests.integration.notify_servers import HttpRecorder

    server = HttpRecorder().start()
    yield server
    server.stop()


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def fleet():
    from tests.fleet.sshd import SSHFleet

    f = SSHFleet(2, names=["db01.acme-corp.com", "app01.acme-corp.com"])
    yield f
    f.stop()


def article_inventory(fleet) -> dict:
    """The article's inventory.yml, with each host's connection pointed at its SSH test host."""
    inv = yaml.safe_load((EXAMPLE / "inventory.yml").read_text())
    for host in fleet.hosts:
        hv = host.host_vars()
        hv["ansible_ssh_port"] = hv["ansible_port"]
        inv["all"]["hosts"][host.name] = hv
    return inv


RECORDER_PLAY = """
- name: record {action}
  hosts: "{{{{ block.config.{hosts_key} }}}}"
  gather_facts: false
  tasks:
    - name: record what this play was given
      ansible.builtin.shell: >-
        printf '%s\\n' {{{{ {{'action': '{action}', 'host': inventory_hostname, 'config': block.config,
        'block': block.name, 'version': block.version, 'workspace': workspace.name,
        'step': lookup('env', 'POLYCRATE_STEP'), 'workflow': lookup('env', 'POLYCRATE_WORKFLOW')}}
        | to_json | quote }}}} >> {{{{ workspace.root }}}}/records.jsonl
"""


@pytest.fixture
def article_workspace(tmp_path, fleet):
    """The article's workspace.poly and block.poly unchanged, with recorder plays in place of the real ones."""
    root = tmp_path / "acme-corp-automation"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", ".polycrate"))
    block = root / ARTICLE_BLOCK
    shutil.rmtree(block)
    block.mkdir()
    shutil.copy(ARTICLE_FILES / "block.poly", block / "block.poly")
    shutil.copy(ARTICLE_FILES / "workspace.poly", root / "workspace.poly")
    for action, key in (("backup", "hosts"), ("update", "web_hosts"), ("verify", "web_hosts")):
        (block / f"{action}.yml").write_text(RECORDER_PLAY.format(action=action, hosts_key=key))
    (root / "inventory.yml").write_text(yaml.safe_dump(article_inventory(fleet), sort_keys=False))
    return root


def records(root: Path) -> list[dict]:
    import json

    path = root / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
