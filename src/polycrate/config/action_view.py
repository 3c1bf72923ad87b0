"""The workspace as one action sees it: its playbook, inventory and kubeconfig, the `workspace` and
`block` variables its playbook gets, and the snapshot. Pure functions over the frozen model: the
runtime asks here, and never loads or checks a file itself."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from polycrate.config.model import Action, Block, FileFrom, Workspace
from polycrate.config.yamlfile import plain
from polycrate.errors import ConfigError


def playbook_path(block: Block, action: Action) -> Path:
    path = (block.folder / str(action.playbook)).resolve()
    if not path.is_file():
        raise ConfigError(
            f"action '{action.name}': playbook '{action.playbook}' not found in {block.folder}",
            block.definition.file,
            action.line,
        )
    return path


def block_inventory(ws: Workspace, block: Block) -> Path | None:
    """The inventory an action of `block` gets (ANSIBLE_INVENTORY), as Polycrate finds it: the block's
    artifacts/blocks/<block>/inventory.yml (or its `inventory.filename`), or that of the block its
    `inventory: {from: ...}` names; else the workspace's inventory; None when there is none."""
    return _block_file(ws, block, "inventory", "inventory.yml") or (ws.inventory if ws.inventory.is_file() else None)


def block_kubeconfig(ws: Workspace, block: Block | None) -> Path | None:
    """The kubeconfig an action of `block` gets (KUBECONFIG): the block's artifacts/blocks/<block>/kubeconfig.yml
    (or its `kubeconfig.filename`), or that of the block its `kubeconfig: {from: ...}` names; else the
    workspace's (workspace_kubeconfig); None when there is none."""
    own = _block_file(ws, block, "kubeconfig", "kubeconfig.yml") if block is not None else None
    return own or workspace_kubeconfig(ws)


def workspace_kubeconfig(ws: Workspace) -> Path | None:
    """`kubeconfig.filename` of workspace.poly; else kubeconfig.yml in the root (ours); else Polycrate's
    default artifacts/blocks/k8s/kubeconfig.yml; None when none exists."""
    candidates = [ws.root / ws.kubeconfig_file] if ws.kubeconfig_file else []
    candidates += [ws.root / "kubeconfig.yml", ws.artifacts_dir("k8s") / "kubeconfig.yml"]
    return next((p for p in candidates if p.is_file()), None)


def _block_file(ws: Workspace, block: Block, what: str, default: str) -> Path | None:
    ref: FileFrom | None = getattr(block, what)
    if ref is not None and ref.source is not None:  # another block's file (that block's own filename)
        block = ws.blocks[ref.source]
        ref = getattr(block, what)
    path = ws.artifacts_dir(block.name) / (ref.filename if ref is not None and ref.filename else default)
    return path if path.is_file() else None


def block_labels(ws: Workspace, block: Block) -> dict[str, str]:
    """The block's labels and, over them, the ones Polycrate adds to every block."""
    labels = dict(block.labels)
    labels.update({
        "workspaces.polycrate.io/name": ws.name,
        "blocks.polycrate.io/name": block.name,
        "blocks.polycrate.io/kind": block.kind,
        "polycrate.io/managed-by": "cli",
    })
    if ws.organization:
        labels["organizations.polycrate.io/name"] = ws.organization
    if block.kind == "k8sappinstance":
        labels["k8sappinstances.polycrate.io/name"] = block.name
        labels["logs.polycrate.io/source"] = "app"
    return labels


def block_vars(ws: Workspace, block: Block) -> dict[str, Any]:
    """What a playbook sees as `block` (Polycrate's snapshot fields where they exist there)."""
    inventory, kubeconfig = block_inventory(ws, block), block_kubeconfig(ws, block)
    return {
        "name": block.name,
        "version": block.version,
        "kind": block.kind,
        "labels": block_labels(ws, block),
        "template": block.template,
        "config": plain(block.config),
        "path": str(block.folder),
        "workdir": {"path": str(block.folder)},
        "artifacts": {"path": str(ws.artifacts_dir(block.name))},
        "inventory": {"path": str(inventory) if inventory else None},
        "kubeconfig": {"path": str(kubeconfig) if kubeconfig else None},
        "from": block.source,
    }


def workspace_vars(ws: Workspace) -> dict[str, Any]:
    """What a playbook sees as `workspace`."""
    return {
        "name": ws.name,
        "organization": ws.organization,
        "description": ws.description,
        "root": str(ws.root),
        "path": str(ws.root),
        "labels": dict(ws.labels),
        "dependencies": list(ws.dependencies),
        "config": plain(ws.config),
    }


def snapshot(ws: Workspace) -> dict[str, Any]:
    """The merged workspace, as `workspace snapshot` prints it and script actions read it."""
    return {
        "workspace": {
            **workspace_vars(ws),
            "blocks": [block_vars(ws, b) | {"actions": sorted(b.actions)} for b in ws.blocks.values()],
            "workflows": [
                {
                    "name": w.name,
                    "description": w.description,
                    "steps": [
                        {"name": s.name, "block": s.block, "action": s.action, "allow_failure": s.allow_failure}
                        for s in w.steps
                    ],
                }
                for w in ws.workflows.values()
            ],
        }
    }
