"""Hub names, as the real Polycrate has them: a block named `ayedo/k8s/tool` (a `/` in the name, Go's
ValidateBlockNameRegex), and short references (`ayedo/k8s/tool:1.0.0`) in `from:`, `dependencies:` and
`block pull`, resolved against the default registry that workspace.poly (`registries: {default: HOST}`)
or the host (~/.polycrate/polycrate.yml, `registry: {url: HOST}`) sets, and shown in full. Against a real
OCI registry on loopback (Debian's docker-registry)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fleet.registry import LocalRegistry
from tests.helpers import assert_one_line_error, run_cli, write

pytestmark = pytest.mark.registry

HUB_BLOCK = """\
name: ayedo/k8s/tool
version: {version}
actions:
  - name: show
    script:
      - echo "{{{{ .block.name }}}} {version} runs"
"""


@pytest.fixture(scope="module")
def registry():
    reg = LocalRegistry()
    yield reg
    reg.stop()


def publish(registry, tmp_path: Path, version: str) -> None:
    src = tmp_path / f"src-{version}"
    write(src / "workspace.poly", "name: src\n")
    write(src / "blocks" / registry.host / "ayedo" / "k8s" / "tool" / "block.poly", HUB_BLOCK.format(version=version))
    # the block's name has a `/`: it loads, is listed and pushed by that name
    listed = json.loads(run_cli("block", "list", "-o", "json", cwd=src).stdout)["blocks"]
    assert [b["name"] for b in listed] == ["ayedo/k8s/tool"]
    pushed = run_cli("block", "push", "ayedo/k8s/tool", "--force", cwd=src)
    assert pushed.returncode == 0, pushed.output


def test_a_hub_named_block_from_a_short_reference_against_the_workspaces_default_registry(registry, tmp_path):
    publish(registry, tmp_path, "1.0.0")
    full = f"{registry.host}/ayedo/k8s/tool:1.0.0"
    root = tmp_path / "ws"
    write(root / "workspace.poly", f"""\
name: hub
registries:
  default: {registry.host}
dependencies:
  - ayedo/k8s/tool:1.0.0
blocks:
  - name: tool
    from: ayedo/k8s/tool:1.0.0
""")
    update = run_cli("workspace", "update", cwd=root)
    assert update.returncode == 0, update.output
    assert f"pulled {full} " in update.stdout, update.stdout  # shown in full
    listed = json.loads(run_cli("block", "list", "-o", "json", cwd=root).stdout)["blocks"]
    assert {(b["name"], b["origin"]) for b in listed} >= {("tool", full)}, listed
    run = run_cli("run", "tool", "show", "--runtime", "local", cwd=root)
    assert run.returncode == 0, run.output
    assert "tool 1.0.0 runs" in run.stdout.splitlines(), run.stdout

    # the block pulled under its own (hub) name: run by that name
    publish(registry, tmp_path, "1.1.0")
    pulled = run_cli("pull", "ayedo/k8s/tool:1.1.0", cwd=root)  # Polycrate's top-level pull
    assert pulled.returncode == 0, pulled.output
    assert pulled.stdout.startswith(f"pulled {registry.host}/ayedo/k8s/tool:1.1.0 "), pulled.stdout


def test_the_hosts_default_registry_and_no_default_at_all(registry, tmp_path):
    publish(registry, tmp_path, "2.0.0")
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: hosted\n")
    home = tmp_path / "home"
    write(home / ".polycrate" / "polycrate.yml", f"registry:\n  url: http://{registry.host}\n")
    pulled = run_cli("block", "pull", "ayedo/k8s/tool:2.0.0", cwd=root, env={"HOME": str(home)})
    assert pulled.returncode == 0, pulled.output
    assert (root / "blocks" / registry.host / "ayedo" / "k8s" / "tool" / "block.poly").is_file()
    run = run_cli("run", "ayedo/k8s/tool", "show", "--runtime", "local", cwd=root, env={"HOME": str(home)})
    assert run.returncode == 0, run.output
    assert "ayedo/k8s/tool 2.0.0 runs" in run.stdout.splitlines(), run.stdout

    # config.blocksroot: pulled there, found there
    moved = tmp_path / "moved"
    write(moved / "workspace.poly", f"name: moved\nconfig:\n  blocksroot: mods\nregistries:\n  default: {registry.host}\n")
    pulled = run_cli("block", "pull", "ayedo/k8s/tool:2.0.0", cwd=moved)
    assert pulled.returncode == 0, pulled.output
    assert f"into mods/{registry.host}/ayedo/k8s/tool" in pulled.stdout, pulled.stdout
    assert not (moved / "blocks").exists()
    run = run_cli("run", "ayedo/k8s/tool", "show", "--runtime", "local", cwd=moved)
    assert run.returncode == 0 and "ayedo/k8s/tool 2.0.0 runs" in run.stdout, run.output

    # no default anywhere: refused, saying how to set one; nothing fetched
    empty_home = tmp_path / "nohome"
    empty_home.mkdir()
    other = tmp_path / "other"
    write(other / "workspace.poly", "name: other\ndependencies:\n  - ayedo/k8s/tool:2.0.0\n")
    assert_one_line_error(run_cli("block", "pull", "ayedo/k8s/tool:2.0.0", cwd=other, env={"HOME": str(empty_home)}),
                          "no default registry is set", "registries: {default:")
    assert_one_line_error(run_cli("workspace", "update", cwd=other, env={"HOME": str(empty_home)}),
                          "workspace.poly:3", "dependencies: 'ayedo/k8s/tool:2.0.0' names no registry host")
    assert not (other / "blocks").exists()


def test_block_names_follow_gos_rule(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: names\n")
    write(root / "blocks" / "x" / "block.poly", "name: ayedo/../escape\n")
    assert_one_line_error(run_cli("workspace", "validate", cwd=root), "invalid block name 'ayedo/../escape'")
    write(root / "blocks" / "x" / "block.poly", "name: ayedo/k8s/harbor\nactions:\n  - {name: a, script: [echo ok]}\n")
    assert run_cli("workspace", "validate", cwd=root).returncode == 0
