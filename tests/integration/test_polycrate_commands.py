"""The real Polycrate's command forms: singular names with plural aliases, `run WORKFLOW`,
install/uninstall/prune, version, checksum, ssh list / ssh HOST, git commit."""
from __future__ import annotations

import json
import subprocess

import yaml

from tests.conftest import write


def _workspace(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: poly-workspace
        organization: polycrate
        blocks:
          - name: hello
            config:
              greeting: hi
        workflows:
          - name: greet-all
            steps:
              - {name: greet, block: hello, action: greet}
              - {name: install, block: hello, action: install}
    """)
    write(root / "blocks" / "hello" / "block.poly", """
        name: hello
        version: 0.1.0
        config:
          greeting: hello
        actions:
          - name: greet
            script:
              - echo "GREET $POLYCRATE_BLOCK"
          - name: install
            script:
              - echo "INSTALL" >> "$POLYCRATE_WORKSPACE/installed.txt"
    """)
    return root


def test_singular_commands_and_plural_aliases(tmp_path, cli):
    root = _workspace(tmp_path)
    for singular, plural in (("workflow", "workflows"), ("block", "blocks"), ("action", "actions")):
        one = cli(singular, "list", "-o", "json", cwd=root)
        other = cli(plural, "list", "-o", "json", cwd=root)
        assert one.returncode == 0, one.output
        assert json.loads(one.stdout) == json.loads(other.stdout)
    assert "greet-all" in cli("workflow", "list", cwd=root).stdout


def test_run_workflow_with_one_argument_is_recorded_as_a_workflow_run(tmp_path, cli):
    root = _workspace(tmp_path)
    result = cli("run", "greet-all", cwd=root)
    assert result.returncode == 0, result.output
    assert "GREET hello" in result.stdout
    shown = json.loads(cli("runs", "show", "latest", "-o", "json", cwd=root).stdout)
    assert shown["kind"] == "workflow" and shown["name"] == "greet-all", shown
    assert [s["name"] for s in shown["steps"]] == ["greet", "install"]


def test_install_runs_the_blocks_install_action(tmp_path, cli):
    root = _workspace(tmp_path)
    result = cli("install", "hello", cwd=root)
    assert result.returncode == 0, result.output
    assert (root / "installed.txt").read_text() == "INSTALL\n"
    missing = cli("prune", "hello", cwd=root)
    assert missing.returncode == 2 and "no action 'prune'" in missing.stderr


def test_version_and_checksum(tmp_path, cli):
    root = _workspace(tmp_path)
    assert cli("version").stdout.startswith("polycrate ")
    first = cli("checksum", "blocks", cwd=root)
    assert first.returncode == 0 and len(first.stdout.strip()) == 32
    (root / "blocks" / "hello" / "block.poly").write_text((root / "blocks" / "hello" / "block.poly").read_text() + "\n")
    assert cli("checksum", "blocks", cwd=root).stdout != first.stdout


def test_ssh_list_and_ssh_host_true(tmp_path, cli, fleet):
    root = _workspace(tmp_path)
    (root / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(), sort_keys=False))
    listed = cli("-o", "json", "ssh", "list", cwd=root)  # after HOST, everything is the command
    assert listed.returncode == 0, listed.output
    names = {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}
    assert set(names) == {h.name for h in fleet.hosts}
    host = fleet.hosts[0]
    assert names[host.name]["port"] == host.port and names[host.name]["user"] == "root"
    ran = cli("ssh", host.name, "--", "true", cwd=root)
    assert ran.returncode == 0, ran.output
    failed = cli("ssh", host.name, "--", "exit 7", cwd=root)
    assert failed.returncode == 7, failed.output
    unknown = cli("ssh", "nohost", cwd=root)
    assert unknown.returncode == 2 and "no host 'nohost'" in unknown.stderr


def test_create_ssh_keys_and_git_commit(tmp_path, cli):
    root = _workspace(tmp_path)
    made = cli("create", "ssh-keys", cwd=root)
    assert made.returncode == 0, made.output
    assert (root / "id_rsa").stat().st_mode & 0o777 == 0o600
    assert made.stdout.startswith("ssh-rsa ")
    again = cli("create", "ssh-keys", cwd=root)
    assert again.returncode == 2 and "exist already" in again.stderr
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "config", "user.email", "t@example.org"], check=True)
    subprocess.run(["git", "-C", str(root), "config", "user.name", "T"], check=True)
    committed = cli("git", "commit", "--message", "first", cwd=root)
    assert committed.returncode == 0, committed.output
    log = subprocess.run(["git", "-C", str(root), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert log.strip() == "first"
    assert "nothing to commit" in cli("git", "commit", cwd=root).stdout


def test_action_inspect_run_block_readme_and_yaml_output(tmp_path, cli):
    root = _workspace(tmp_path)
    (root / "blocks" / "hello" / "README.md").write_text("# hello\nsays hello\n")
    shown = cli("action", "inspect", "hello", "greet", "-o", "yaml", cwd=root)
    assert shown.returncode == 0, shown.output
    assert yaml.safe_load(shown.stdout)["script"] == ['echo "GREET $POLYCRATE_BLOCK"']
    ran = cli("action", "run", "hello", "greet", cwd=root)
    assert ran.returncode == 0 and "GREET hello" in ran.stdout, ran.output
    assert cli("block", "readme", "hello", cwd=root).stdout == "# hello\nsays hello\n"
    assert yaml.safe_load(cli("workflow", "list", "-o", "yaml", cwd=root).stdout)["workflows"][0]["name"] == "greet-all"


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c-{who}, cluster: {server: "https://127.0.0.1:6443"}}]
contexts: [{name: ctx-{who}, context: {cluster: c-{who}, user: u}}]
current-context: ctx-{who}
users: [{name: u, user: {}}]
"""


def test_k_runs_kubectl_with_the_workspace_or_block_kubeconfig(tmp_path, cli):
    root = _workspace(tmp_path)
    # none in the workspace: kubectl's own rules (as Polycrate), here KUBECONFIG naming an empty config
    empty = tmp_path / "empty-kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    none = cli("k", "config", "current-context", cwd=root, env={"KUBECONFIG": str(empty)})
    assert none.returncode == 1 and "current-context is not set" in none.stderr, none.output
    (root / "kubeconfig.yml").write_text(KUBECONFIG.replace("{who}", "workspace"))
    own = root / "artifacts" / "blocks" / "hello" / "kubeconfig.yml"
    own.parent.mkdir(parents=True)
    own.write_text(KUBECONFIG.replace("{who}", "hello"))
    assert cli("k", "config", "current-context", cwd=root).stdout.strip() == "ctx-workspace"
    assert cli("k", "--block", "hello", "config", "current-context", cwd=root).stdout.strip() == "ctx-hello"
