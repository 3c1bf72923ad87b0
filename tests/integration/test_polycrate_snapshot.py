"""What an action receives, in the real Polycrate's shapes: our `--snapshot` of `run camelcase install` in
the real Polycrate's example workspace, field by field against the snapshot Go recorded for that command
(tests/data/polycrate-workspace/go-snapshot.yml, see ORIGIN.md there), with our documented differences
only; and a playbook, and an ansible-playbook started from a script line, seeing the same variables."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import run_cli_inprocess, write

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "polycrate-workspace"

# Where ours differs from Go's recorded snapshot, and why (the README's "Coming from Polycrate"): paths from
# the snapshot's top, and paths inside any block or the workspace. Every other field of Go's must be ours, equal.
DIFFERENCES = {
    ".workspace.config.image": "the toolchain's image: unset in this workspace, so ours is empty (Go names its own)",
    ".env.ANSIBLE_": "Go's Ansible display settings are not adopted (config/action_env.py lists them)",
    ".env.DEFAULT_VARS_PLUGIN_PATH": "Go's vars-plugin setting: ours is set for script actions only",
    ".env.IN_CI": "not adopted (config/action_env.py)",
    ".env.TERM": "not adopted (config/action_env.py)",
    ".env.KUBECONFIG": "no kubeconfig here (below)",
    ".env.POLYCRATE_CLI_VERSION": "our version",
    ".env.POLYCRATE_VERSION": "our version",
    ".env.POLYCRATE_IMAGE_VERSION": "the toolchain's image (above)",
    ".env.POLYCRATE_WORKSPACE": "Go records an empty value; ours is the workspace's path",
    ".env.POLYCRATE_RUNTIME_SCRIPT_PATH": "written when the action runs; --snapshot writes nothing",
    ".env.POLYCRATE_WORKSPACE_SNAPSHOT_YAML": "written when the action runs; --snapshot writes nothing",
    ".mounts.<RUNDIR>": "the run's files are mounted under /run/polycrate when the action runs",
    ".mounts./var/run/docker.sock": "the Docker socket is not mounted (-m /var/run/docker.sock:... mounts it)",
}
ANYWHERE = {
    ".checksum": "Go's md5 of the block's folder; ours is blocks.lock's digest of a pulled block (none here)",
    ".labels.blocks.polycrate.io/kind": "a block without `kind:` is `generic` here (Go leaves it empty)",
    ".config.fooBar": "config merge: a workspace's false, 0 or \"\" overrides the block's default here",
    ".config.integer": "config merge (as above)",
    ".config.nocamel": "config merge (as above)",
    ".config.string": "config merge (as above)",
    ".inventory.": "no inventory here: Go falls back to /etc/ansible/hosts, ours gives none",
    ".kubeconfig.": "no kubeconfig here: Go falls back to ~/.kube/config, ours leaves kubectl's own rules",
}


def _documented(path: str) -> bool:
    return any(path.startswith(key) for key in DIFFERENCES) or any(key in path + "." for key in ANYWHERE)


def compare(go: Any, ours: Any, path: str, root: str, found: list[str]) -> None:
    """Every field of `go` in `ours` with the same value (<WORKSPACE> is our root), unless documented."""
    if _documented(path):
        return
    if isinstance(go, dict):
        if not isinstance(ours, dict):
            found.append(f"{path}: {type(ours).__name__} instead of a mapping")
            return
        for key, value in go.items():
            key = key.replace("<WORKSPACE>", root)
            if _documented(f"{path}.{key}"):
                continue
            if key not in ours:
                found.append(f"{path}.{key}: missing (Go: {value!r})")
                continue
            compare(value, ours[key], f"{path}.{key}", root, found)
    elif isinstance(go, list) and go and all(isinstance(x, dict) and "name" in x for x in go):
        by_name = {x.get("name"): x for x in ours or ()}
        for item in go:
            compare(item, by_name.get(item["name"]), f"{path}[{item['name']}]", root, found)
    else:
        expected = go.replace("<WORKSPACE>", root) if isinstance(go, str) else go
        if expected != ours:
            found.append(f"{path}: {ours!r}, Go: {expected!r}")


def test_our_snapshot_has_every_field_of_the_one_polycrate_recorded(tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root)
    go = yaml.safe_load((FIXTURE / "go-snapshot.yml").read_text())
    shown = run_cli_inprocess("run", "camelcase", "install", "--snapshot", "--runtime", "container", "-o", "json",
                              cwd=root)
    assert shown.returncode == 0, shown.output
    ours = json.loads(shown.stdout)
    found: list[str] = []
    compare(go, ours, "", str(root), found)
    assert found == [], "\n".join(found)
    # the documented differences are real ones: without them, exactly those fields differ
    everything: list[str] = []
    saved = dict(DIFFERENCES), dict(ANYWHERE)
    DIFFERENCES.clear()
    ANYWHERE.clear()
    try:
        compare(go, ours, "", str(root), everything)
    finally:
        DIFFERENCES.update(saved[0])
        ANYWHERE.update(saved[1])
    for key in (*saved[0], *saved[1]):
        assert any(key in line.replace(str(root), "<WORKSPACE>") for line in everything), key
    # and the shapes: an action's script list, the block it belongs to; the paths of the container
    assert ours["action"] == {**ours["action"], "name": "install", "script": ['echo "INSTALL"'], "block": "camelcase"}
    assert ours["block"]["workdir"] == {"path": "/workspace/blocks/camelcase",
                                        "localpath": str(root / "blocks" / "camelcase"),
                                        "containerpath": "/workspace/blocks/camelcase"}
    assert ours["mounts"][str(root)] == "/workspace"


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ workspace.localpath }}/seen-{{ action.name }}.json"
        content: "{{ {'workspace': workspace.name, 'block': block.name, 'action': action.name,
                      'workflow': workflow.name | default(None), 'step': step.name | default(None),
                      'env': env.POLYCRATE_ACTION, 'mounts': mounts, 'workdir': block.workdir.path,
                      'steps': workflow.steps | default([]) | map(attribute='name') | list} | to_json }}"
"""


def test_a_playbook_and_a_script_started_playbook_see_workspace_block_action_workflow_step_env_mounts(tmp_path, cli):
    root = tmp_path / "ws"
    write(root / "workspace.poly", """\
name: snap
workflows:
  - name: both
    steps:
      - {name: direct, block: probe, action: play}
      - {name: scripted, block: probe, action: script-play}
""")
    write(root / "inventory.yml",
          "all:\n  hosts:\n    localhost: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}\n")
    write(root / "blocks" / "probe" / "block.poly", f"""\
name: probe
actions:
  - name: play
    playbook: probe.yml
  - name: script-play
    script:
      - {Path(sys.executable).parent / "ansible-playbook"} probe.yml
""")
    write(root / "blocks" / "probe" / "probe.yml", PLAYBOOK)
    run = cli("run", "both", "--runtime", "local", cwd=root)
    assert run.returncode == 0, run.output
    direct = json.loads((root / "seen-play.json").read_text())
    scripted = json.loads((root / "seen-script-play.json").read_text())
    for seen, action, step in ((direct, "play", "direct"), (scripted, "script-play", "scripted")):
        assert seen == {"workspace": "snap", "block": "probe", "action": action, "workflow": "both", "step": step,
                        "env": action, "mounts": {}, "workdir": str(root / "blocks" / "probe"),
                        "steps": ["direct", "scripted"]}, seen


def test_the_workspace_of_gos_snapshot_written_back_as_workspace_poly_loads(tmp_path):
    """Every field Go put in its snapshot's `workspace` (computed paths, checksums, system labels, each
    action's `block`) loads; the ones without effect here are warned about, once each, and nothing else."""
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE / "blocks", root / "blocks")
    workspace = yaml.safe_load((FIXTURE / "go-snapshot.yml").read_text())["workspace"]
    write(root / "workspace.poly", yaml.safe_dump(workspace, sort_keys=False))
    validate = run_cli_inprocess("workspace", "validate", cwd=root)
    assert validate.returncode == 0, validate.output
    warned = [line for line in validate.stderr.splitlines() if line.startswith("polycrate: warning: ")]
    assert len(warned) == 20 and all("has no effect here" in line for line in warned), validate.stderr
    assert not any("'config." in line for line in warned)  # Go's WorkspaceConfig defaults: nothing to say
