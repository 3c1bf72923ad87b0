"""New workspaces and blocks that run at once: `workspace init` and `block create NAME`.

A new workspace has an inventory with localhost (local connection), the sample block ``hello`` with a
script action and an Ansible action, and the workflow ``hello`` running both; the runtime is written
out (``config.runtime: local``), so the sample runs on this machine whatever the default is. A new
block is the same shape. Nothing existing is ever overwritten: every target is checked before the
first file is written, and files are created exclusively.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from polycrate.errors import PolycrateError
from polycrate.config.validate import validate_name
from polycrate.config.schema_export import schema_file

SAMPLE_BLOCK = "hello"
SAMPLE_WORKFLOW = "hello"
SCRIPT_ACTION, ANSIBLE_ACTION, PLAYBOOK = "greet", "ping", "ping.yml"
# `block create NAME`: a skeleton of its own, not the sample under another name
BLOCK_SCRIPT_ACTION, BLOCK_ANSIBLE_ACTION = "run", "apply"

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}


def scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as the same string (plain when that is safe)."""
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS and not re.fullmatch(r"[0-9._eE+-]+|\.inf|\.nan", text):
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML string


def modeline(file: str) -> str:
    """The first line of a new workspace.poly or block.poly: editors with the YAML language server
    (VS Code's YAML extension, Neovim, Helix, ...) complete and check its keys with our JSON Schema.

    The schema is named by a file URI of the one shipped in this installation, not by a URL: it is
    the schema of the polycrate that will read the file (a URL would be another version's unless
    it were versioned and hosted, and no such site exists), and it works on the hosts without
    internet access that run operations. The cost: the path is this machine's; where it does not
    exist (a colleague's checkout), the editor finds no schema and nothing else changes, because
    the line is a YAML comment.
    """
    return f"# yaml-language-server: $schema={schema_file(file).as_uri()}\n"


def block_files(name: str, description: str | None = None) -> dict[str, str]:
    """The files of a new block, by path relative to its folder."""
    description = description or "A script action and an Ansible action to start from"
    return {
        "block.poly": modeline("block.poly") + f"""\
# The block {name}: its default config and its actions (polycrate docs: reference/files.md).
name: {scalar(name)}
version: 0.1.0
kind: generic
description: {scalar(description)}

config:                          # defaults; workspace.poly's `blocks:` entry overrides them
  hosts: localhost               # the hosts pattern of {PLAYBOOK} (inventory.yml)
  message: Hello from {name}

actions:
  - name: {SCRIPT_ACTION}
    description: a script action (shell lines, run in this folder under set -euo pipefail)
    type: script
    script:
      - echo "block $POLYCRATE_BLOCK, action $POLYCRATE_ACTION, in $PWD"
      - test -f "$POLYCRATE_WORKSPACE/workspace.poly"

  - name: {ANSIBLE_ACTION}
    description: an Ansible action ({PLAYBOOK} against the workspace's inventory.yml)
    type: ansible
    playbook: {PLAYBOOK}
""",
        PLAYBOOK: """\
# An Ansible playbook. polycrate passes two variables: `block` (name, version, config, path, ...)
# and `workspace` (name, root, config, ...); see polycrate docs: reference/action-environment.md.
- name: Reach the hosts of {{ block.name }}
  hosts: "{{ block.config.hosts }}"
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:

    - name: Say the message
      ansible.builtin.debug:
        msg: "{{ block.config.message }} (workspace {{ workspace.name }}, host {{ inventory_hostname }})"
""",
    }


def workspace_files(name: str, organization: str, sample: bool) -> dict[str, str]:
    """The files of a new workspace, by path relative to its root."""
    workflows = f"""
workflows:
  - name: {SAMPLE_WORKFLOW}
    description: the sample block's script action, then its Ansible action
    steps:
      - name: {SCRIPT_ACTION}
        block: {SAMPLE_BLOCK}
        action: {SCRIPT_ACTION}
      - name: {ANSIBLE_ACTION}
        block: {SAMPLE_BLOCK}
        action: {ANSIBLE_ACTION}
""" if sample else "\nworkflows: []\n"
    blocks = f"""
blocks:                          # blocks/ holds them; an entry's config overrides the block's defaults
  - name: {SAMPLE_BLOCK}
    config:
      message: {scalar(f"Hello from the workspace {name}")}
""" if sample else "\nblocks: []\n"
    files = {
        "workspace.poly": modeline("workspace.poly") + f"""\
# The workspace {name} (polycrate docs: reference/files.md). Keep this folder in git.
name: {scalar(name)}
organization: {scalar(organization)}

config:
  runtime: local                 # actions run on this machine; container: in the toolchain image
{blocks}{workflows}""",
        "inventory.yml": """\
# Ansible's inventory for every action of this workspace.
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
""",
        ".gitignore": ".polycrate/\nartifacts/blocks/\n",
    }
    if sample:
        files.update({f"blocks/{SAMPLE_BLOCK}/{rel}": text for rel, text in block_files(SAMPLE_BLOCK).items()})
    return files


@dataclass(frozen=True)
class Created:
    folder: Path
    written: tuple[str, ...]  # relative paths
    kept: tuple[str, ...]  # files that existed and were left alone


def _write_new(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # exclusive: never over a file that appeared meanwhile
            fh.write(text)


def init_workspace(folder: Path, name: str | None, organization: str = "", sample: bool = True) -> Created:
    """A new workspace in ``folder`` (created if missing). An existing inventory.yml or .gitignore is
    kept; an existing workspace.poly or sample block folder refuses, and nothing is written."""
    from polycrate.config.schema import WORKSPACE_FILE

    folder = folder.resolve()
    file = folder / WORKSPACE_FILE
    if folder.exists() and not folder.is_dir():
        raise PolycrateError("is a file, not a folder: a workspace is a folder; nothing changed", folder)
    if file.exists() or file.is_symlink():
        raise PolycrateError("a workspace already exists here; nothing changed", file)
    name = name or folder.name
    validate_name(name, "workspace", file, None)
    files = workspace_files(name, organization, sample)
    if sample:
        _check_free(folder, SAMPLE_BLOCK, " (the sample block's name; --bare makes a workspace without it)")
    kept = tuple(rel for rel in ("inventory.yml", ".gitignore") if (folder / rel).exists() or (folder / rel).is_symlink())
    for rel in kept:
        del files[rel]
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("blocks", "artifacts/secrets"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    _write_new(folder, files)
    return Created(folder, tuple(files), kept)


def _check_free(root: Path, name: str, why: str = "") -> Path:
    """blocks/NAME, when neither that folder nor a block of that name exists."""
    from polycrate.config.workspace import BLOCKS_DIR, discover_blocks

    folder = root / BLOCKS_DIR / name
    if folder.exists() or folder.is_symlink():
        raise PolycrateError(f"already exists{why}; nothing changed", folder)
    taken = next((b for b in discover_blocks(root) if b.name == name), None)
    if taken is not None:
        raise PolycrateError(f"a block named '{name}' already exists in {BLOCKS_DIR}/{taken.relpath}{why}; "
                             "nothing changed", taken.folder / "block.poly")
    return folder


def skeleton_files(name: str, description: str | None = None) -> dict[str, str]:
    """The files of `block create NAME`: a block named for its job, with a script action and an Ansible
    action (playbook NAME.yml) that run as they are and say where the block's own work goes."""
    description = description or f"{name}: say here what the block does"
    playbook = f"{name}.yml"
    return {
        "block.poly": modeline("block.poly") + f"""\
# The block {name}: its default config and its actions (polycrate docs: reference/files.md).
name: {scalar(name)}
version: 0.1.0
kind: generic
description: {scalar(description)}

config:                          # defaults; workspace.poly's `blocks:` entry overrides them
  hosts: localhost               # the hosts pattern of {playbook} (inventory.yml)

actions:
  - name: {BLOCK_SCRIPT_ACTION}
    description: the shell lines of {name} (run in this folder under set -euo pipefail)
    type: script
    script:
      - {scalar(f'echo "{name}: replace this line with the work of the block (in $PWD)"')}

  - name: {BLOCK_ANSIBLE_ACTION}
    description: {playbook} against the workspace's inventory.yml
    type: ansible
    playbook: {playbook}
""",
        playbook: f"""\
# The playbook of {name}. polycrate passes two variables: `block` (name, version, config, path, ...)
# and `workspace` (name, root, config, ...); see README: "What an action gets".
- name: {scalar(name)}
  hosts: "{{{{ block.config.hosts }}}}"
  gather_facts: false
  tasks:
    - name: Replace this task with the work of {name}
      ansible.builtin.debug:
        msg: "{{{{ block.name }}}} on {{{{ inventory_hostname }}}} (workspace {{{{ workspace.name }}}})"
""",
    }


def create_block(root: Path, name: str, description: str | None = None) -> Created:
    """A new block ``blocks/NAME/`` in the workspace at ``root``, usable at once with its defaults
    (`polycrate run NAME run`); workspace.poly is not touched."""
    validate_name(name, "block", "", None)
    folder = _check_free(root, name)
    files = skeleton_files(name, description)
    _write_new(folder, files)
    return Created(folder, tuple(files), ())
