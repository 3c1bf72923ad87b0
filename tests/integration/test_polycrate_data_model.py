"""The real Polycrate's whole data model loads: a workspace using every field of its Workspace,
WorkspaceConfig, Block, Action, Workflow and Step structs (listed below from its source) validates, and
each field shows its effect or its one warning line; the real documentation's workflow example
(tests/data/polycrate-reference-workflow) validates and runs with --local; Go's refusals where they
protect (script with playbook at load; a workflow without steps when used)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import assert_one_line_error, run_cli_inprocess, write

REFERENCE_WORKFLOW = Path(__file__).resolve().parent.parent / "data" / "polycrate-reference-workflow"

# The yaml names of the fields of Go's structs (polycrate/polycrate at 52adf160): cmd/workspace.go
# `type Workspace struct` and `type WorkspaceConfig struct`, cmd/blocks.go `type Block struct`,
# cmd/actions.go `type Action struct`, cmd/workflows.go `type Workflow struct` and `type Step struct`.
GO_STRUCTS = {
    "Workspace": ("name", "description", "labels", "alias", "events", "dependencies", "config", "blocks",
                  "workflows", "extraenv", "extramounts", "organization", "identifier", "path", "localpath",
                  "containerpath", "version", "meta", "sync", "inventory", "registry", "kubeconfig"),
    "WorkspaceConfig": ("image", "blocksroot", "logsroot", "blocksconfig", "workspaceconfig", "workflowsroot",
                        "artifactsroot", "containerroot", "sshprivatekey", "sshpublickey", "remoteroot",
                        "dockerfile", "globals"),
    "Block": ("name", "description", "kind", "type", "flavor", "labels", "alias", "actions", "changelog", "config",
              "from", "template", "version", "workdir", "inventory", "kubeconfig", "artifacts", "checksum"),
    "Action": ("name", "description", "labels", "alias", "interactive", "script", "playbook", "prompt", "block",
               "config"),
    "Workflow": ("name", "description", "labels", "alias", "steps", "prompt", "allow_failure"),
    "Step": ("name", "description", "labels", "alias", "block", "action", "prompt", "workflow"),
}

WORKSPACE = """\
name: every-field
description: every field of the real Polycrate's structs
labels: {team: ops}
alias: [ef]
events:
  handler: workspace
  commit: true
dependencies:
  - registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0
config:
  image: {reference: localhost/polycrate-base, version: latest}
  blocksroot: mods
  logsroot: logs
  blocksconfig: block.poly
  workspaceconfig: workspace.poly
  workflowsroot: flows
  artifactsroot: out
  containerroot: /workspace
  sshprivatekey: keys/ws_key
  sshpublickey: keys/ws_key.pub
  remoteroot: /srv/polycrate
  dockerfile: Dockerfile.poly
  globals: {region: eu}
  greeting: hello
blocks:
  - name: app
    description: the app, completed here
    kind: linuxapp
    type: db
    flavor: postgresql
    labels: {tier: data}
    alias: [application]
    actions:
      - name: extra
        script: ["echo extra-from-workspace"]
    changelog: [{version: 1.2.3, date: "2025-01-01"}]
    config: {port: 5433}
    template: false
    version: 1.2.3
    workdir: {path: /somewhere}
    inventory: {filename: hosts.yml, path: /etc/ansible/hosts}
    kubeconfig: {filename: kube.yml}
    artifacts: {path: /elsewhere}
    checksum: 0123456789abcdef
  - name: inline
    actions:
      - name: hello
        description: says hello
        labels: {kind: demo}
        alias: [hi]
        interactive: false
        script:
          - echo "{{ .action.config.word }} from {{ .block.name }} env=$FROM_EXTRAENV key=$ANSIBLE_PRIVATE_KEY_FILE"
        prompt: {message: "Say hello?"}
        block: inline
        config: {word: howdy}
      - name: fail
        script: ["exit 3"]
  - name: child
    from: app
workflows:
  - name: flow
    description: both steps, the first fails
    labels: {schedule: none}
    alias: [f]
    prompt: {message: "Run the flow?"}
    allow_failure: true
    steps:
      - name: breaks
        description: fails
        labels: {a: b}
        alias: [b1]
        block: inline
        action: fail
        prompt: {message: "Break?"}
        workflow: flow
      - {name: greets, block: inline, action: hello}
  - name: empty
extraenv:
  - FROM_EXTRAENV=yes
extramounts:
  - data:/data
organization: acme
identifier: 2f1e
path: /workspace
localpath: /home/someone/ws
containerpath: /workspace
version: 0.1.0
meta: {owner: ops}
sync:
  local: {branch: {name: main}}
  remote: {name: backup, branch: {name: main}}
  enabled: true
  auto: true
inventory: {filename: inventory.yml, path: /workspace/inventory.yml}
registry: {endpoint: cargo.ayedo.cloud, username: someone, password: not-read}
kubeconfig: {filename: kubeconfig.yml}
"""

BLOCK = """\
name: app
description: the app
kind: generic
type: generic
flavor: none
labels: {tier: app}
alias: [the-app]
actions:
  - name: install
    description: installs
    labels: {x: y}
    alias: [setup]
    interactive: false
    playbook: install.yml
    prompt: {message: "Install?"}
    block: app
    config: {retries: 2}
changelog:
  - {version: 1.0.0, date: "2024-01-01", type: minor, message: first}
config: {port: 5432, user: app}
template: false
version: 1.0.0
workdir: {path: /workspace/mods/app}
inventory: {from: inline}
kubeconfig: {filename: kubeconfig.yml}
artifacts: {path: /workspace/out/blocks/app}
checksum: f31524de0303e6c21613fd728f3369e4
"""

# the warning each field without an effect here gives: (file, the field as named in the line)
EXPECTED_WARNINGS = {
    ("workspace.poly", "identifier"), ("workspace.poly", "path"), ("workspace.poly", "localpath"),
    ("workspace.poly", "containerpath"), ("workspace.poly", "registry"), ("workspace.poly", "config.workflowsroot"),
    ("workspace.poly", "config.remoteroot"), ("workspace.poly", "config.globals"), ("workspace.poly", "events.commit"),
    ("workspace.poly", "sync.enabled"), ("workspace.poly", "sync.auto"), ("workspace.poly", "sync.local"),
    ("workspace.poly", "inventory.path"), ("workspace.poly", "block app: changelog"),
    ("workspace.poly", "block app: workdir"), ("workspace.poly", "block app: artifacts"),
    ("workspace.poly", "block app: checksum"), ("workspace.poly", "block app: inventory.path"),
    ("block.poly", "changelog"), ("block.poly", "workdir"), ("block.poly", "artifacts"), ("block.poly", "checksum"),
}


def _every_field_workspace(root: Path) -> None:
    write(root / "workspace.poly", WORKSPACE)
    write(root / "mods" / "app" / "block.poly", BLOCK)
    write(root / "mods" / "app" / "install.yml", "- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    write(root / "keys" / "ws_key", "not a real key\n")
    write(root / "out" / "blocks" / "app" / "hosts.yml", "all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    write(root / "kubeconfig.yml", "apiVersion: v1\nkind: Config\n")
    (root / "data").mkdir()


def test_the_test_workspace_uses_every_field_of_gos_structs():
    document = yaml.safe_load(WORKSPACE)
    block = yaml.safe_load(BLOCK)
    entries = {e["name"]: e for e in document["blocks"]}
    used = {
        "Workspace": set(document),
        "WorkspaceConfig": set(document["config"]),
        "Block": set().union(*entries.values()),
        "Action": set(block["actions"][0]) | set(entries["inline"]["actions"][0]),
        "Workflow": set(document["workflows"][0]),
        "Step": set(document["workflows"][0]["steps"][0]),
    }
    for struct, fields in GO_STRUCTS.items():
        assert set(fields) - used[struct] == set(), struct
    assert set(GO_STRUCTS["Block"]) - {"from"} <= set(block)  # block.poly, too (its `from:` is inheritance)


def test_every_field_loads_with_its_effect_or_one_warning(tmp_path, cli):
    root = tmp_path / "ws"
    _every_field_workspace(root)
    validate = run_cli_inprocess("workspace", "validate", cwd=root)
    assert validate.returncode == 0, validate.output
    warnings = [line for line in validate.stderr.splitlines() if line.startswith("polycrate: warning: ")]
    seen = set()
    for line in warnings:
        where, _, rest = line.removeprefix("polycrate: warning: ").partition(": ")
        field, _, reason = rest.partition("' has no effect here: ")
        assert reason, line  # each says why
        seen.add((Path(where.rsplit(":", 1)[0]).name, field.replace("'", "")))
        assert where.rsplit(":", 1)[1].isdigit(), line  # and where (file:line)
    assert seen == EXPECTED_WARNINGS, sorted(seen ^ EXPECTED_WARNINGS)
    assert len(warnings) == len(EXPECTED_WARNINGS)  # once each
    assert "not-read" not in validate.output  # registry.password is never shown

    snap = json.loads(run_cli_inprocess("workspace", "snapshot", "-o", "json", cwd=root).stdout)["workspace"]
    # Workspace: shown with Go's meaning
    assert (snap["name"], snap["description"], snap["organization"], snap["labels"], snap["alias"], snap["meta"]) == (
        "every-field", "every field of the real Polycrate's structs", "acme", {"team": "ops"}, ["ef"], {"owner": "ops"})
    assert snap["dependencies"] == ["registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0"]
    assert snap["version"] == "0.1.0" and snap["kubeconfig"]["localpath"] == str(root / "kubeconfig.yml")
    assert snap["events"]["handler"] == "workspace" and snap["extraenv"] == ["FROM_EXTRAENV=yes"]
    assert snap["extramounts"] == ["data:/data"] and snap["localpath"] == str(root)  # computed, not the written one
    assert snap["inventory"]["localpath"] == str(root / "inventory.yml")
    assert snap["sync"]["remote"] == {"name": "backup", "branch": {"name": "main"}}
    # WorkspaceConfig: the roots and keys in effect, the rest as written
    config = snap["config"]
    assert (config["blocksroot"], config["artifactsroot"], config["logsroot"], config["sshprivatekey"],
            config["sshpublickey"]) == ("mods", "out", "logs", "keys/ws_key", "keys/ws_key.pub")
    assert config["image"] == {"reference": "localhost/polycrate-base", "version": "latest"}
    assert config["greeting"] == "hello" and config["globals"] == {"region": "eu"}
    blocks = {b["name"]: b for b in snap["blocks"]}
    # Block: found under blocksroot, completed by its entry, artifacts under artifactsroot
    app = blocks["app"]
    assert app["workdir"]["localpath"] == str(root / "mods" / "app")
    assert app["artifacts"]["localpath"] == str(root / "out" / "blocks" / "app")
    assert (app["description"], app["kind"], app["type"], app["flavor"], app["version"], app["alias"]) == (
        "the app, completed here", "linuxapp", "db", "postgresql", "1.2.3", ["application"])
    assert app["labels"]["tier"] == "data" and app["config"] == {"port": 5433, "user": "app"}
    assert app["inventory"]["localpath"] == str(root / "out" / "blocks" / "app" / "hosts.yml")  # inventory.filename
    assert [a["name"] for a in app["actions"]] == ["install", "extra"]
    assert blocks["child"]["from"] == "app" and blocks["child"]["config"]["port"] == 5432
    # Action: every field in the snapshot
    install = app["actions"][0]
    assert {k: install[k] for k in GO_STRUCTS["Action"] if k != "script"} == {
        "name": "install", "description": "installs", "labels": {"x": "y"}, "alias": ["setup"],
        "interactive": False, "playbook": "install.yml", "prompt": {"message": "Install?"}, "block": "app",
        "config": {"retries": 2}}
    # Workflow and Step
    flow = next(w for w in snap["workflows"] if w["name"] == "flow")
    assert (flow["alias"], flow["labels"], flow["prompt"], flow["allow_failure"]) == (
        ["f"], {"schedule": "none"}, {"message": "Run the flow?"}, True)
    step = flow["steps"][0]
    assert {k: step[k] for k in GO_STRUCTS["Step"]} == {
        "name": "breaks", "description": "fails", "labels": {"a": "b"}, "alias": ["b1"], "block": "inline",
        "action": "fail", "prompt": {"message": "Break?"}, "workflow": "flow"}

    # running: allow_failure goes on past the failing step; the inline block's action templates its own
    # config; extraenv and config.sshprivatekey reach the action; the event lands under logsroot
    run = cli("run", "flow", "--runtime", "local", "--force", cwd=root)
    assert run.returncode == 0, run.output
    assert f"howdy from inline env=yes key={root / 'keys' / 'ws_key'}" in run.stdout.splitlines(), run.stdout
    assert list((root / "logs").rglob("*.yml")), "no event under config.logsroot"
    assert not (root / ".logs").exists()

    # extramounts: a mount of the container runtime, relative to the workspace
    shown = run_cli_inprocess("run", "inline", "hello", "--snapshot", "--runtime", "container", "-o", "json", cwd=root)
    assert shown.returncode == 0, shown.output
    assert json.loads(shown.stdout)["mounts"][str(root / "data")] == "/data"

    # config.sshpublickey: where `create ssh-keys` writes the pair
    (root / "keys" / "ws_key").unlink()
    created = cli("create", "ssh-keys", cwd=root)
    assert created.returncode == 0, created.output
    assert (root / "keys" / "ws_key.pub").read_text().startswith("ssh-rsa ")

    # sync.remote: `git sync` pulls from and pushes to that remote and branch
    remote = tmp_path / "backup.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    for argv in (["init", "-q", "-b", "main"], ["remote", "add", "backup", str(remote)],
                 ["-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True)
    subprocess.run(["git", "-C", str(root), "push", "-q", "backup", "main"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q",
                    "--allow-empty", "-m", "two"], check=True)
    synced = cli("git", "sync", cwd=root)
    assert synced.returncode == 0, synced.output
    log = subprocess.run(["git", "--git-dir", str(remote), "log", "--format=%s", "main"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert log == ["two", "one"]


def test_a_workflow_without_steps_is_refused_only_when_used(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: w\nblocks:\n  - name: b\n    actions:\n      - {name: a, script: [echo]}\n"
                                   "workflows:\n  - name: empty\n")
    listed = run_cli_inprocess("workflow", "list", "-o", "json", cwd=root)
    assert listed.returncode == 0 and "empty" in listed.stdout, listed.output
    assert run_cli_inprocess("run", "b", "a", "--runtime", "local", cwd=root).returncode == 0
    line = 7
    for argv in (("workflow", "inspect", "empty"), ("run", "empty", "--runtime", "local"),
                 ("run", "empty", "--snapshot")):
        assert_one_line_error(run_cli_inprocess(*argv, cwd=root), f"workspace.poly:{line}:",
                              "workflow 'empty' has no steps")


def test_an_action_with_script_and_playbook_is_refused_at_load_with_its_line(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: both\n")
    write(root / "blocks" / "b" / "block.poly",
          "name: b\nactions:\n  - name: a\n    script: [echo]\n    playbook: a.yml\n")
    assert_one_line_error(run_cli_inprocess("workspace", "validate", cwd=root), "block.poly:5:",
                          "action 'a' has both 'script' and 'playbook'")


def test_the_reference_documentations_workflow_example_validates_and_runs_locally(tmp_path, cli):
    root = tmp_path / "ws"
    shutil.copytree(REFERENCE_WORKFLOW, root)
    validate = run_cli_inprocess("workspace", "validate", cwd=root)
    assert validate.returncode == 0, validate.output
    assert "warning" not in validate.stderr
    run = cli("run", "workflow-1", "--local", "--force", cwd=root)
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert lines.index("block 1 action 1") < lines.index("block 2 action 1"), run.stdout
