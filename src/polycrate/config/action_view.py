"""The workspace as one action sees it: its playbook, inventory and kubeconfig, the `workspace` and
`block` variables its playbook gets, and the snapshot. Pure functions over the frozen model: the
runtime asks here, and never loads or checks a file itself."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from polycrate.config.merge import merge_config
from polycrate.config.model import Action, Block, FileFrom, Step, Workflow, Workspace
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


CONTAINER_ROOT = "/workspace"  # Polycrate's config.containerroot: where the container runtime mounts the root
# Polycrate's WorkspaceConfig defaults, as its snapshot shows them (config.image is the toolchain's)
GO_CONFIG_DEFAULTS: dict[str, Any] = {
    "blocksconfig": "block.poly", "workspaceconfig": "workspace.poly", "workflowsroot": "workflows",
    "containerroot": CONTAINER_ROOT, "remoteroot": "/polycrate", "dockerfile": "Dockerfile.poly", "globals": {},
}


def _paths(ws: Workspace, path: Path | None) -> dict[str, Any]:
    """Polycrate's {path, localpath, containerpath} of a file or folder: `path` is the one the action
    sees (the runtime maps it), `localpath` this machine's, `containerpath` the container runtime's."""
    if path is None:
        return {"path": None, "localpath": None, "containerpath": None}
    try:
        relative = path.relative_to(ws.root).as_posix()
        inside = CONTAINER_ROOT if relative == "." else f"{CONTAINER_ROOT}/{relative}"
    except ValueError:
        inside = str(path)
    return {"path": str(path), "localpath": str(path), "containerpath": inside}


def action_vars(block: Block, action: Action) -> dict[str, Any]:
    """What a playbook sees as `action`: Polycrate's Action (its `script` or `playbook`, never both), and
    ours: `type`."""
    data: dict[str, Any] = {"name": action.name, "description": action.description, "labels": dict(action.labels),
                            "alias": list(action.alias), "interactive": action.interactive}
    if action.type == "script":
        data["script"] = list(action.script)
    else:
        data["playbook"] = action.playbook
    data.update({"prompt": {"message": action.prompt.message} if action.prompt else None, "block": block.name,
                 "config": plain(action.config), "type": action.type})
    return data


def step_vars(workflow: Workflow, step: Step) -> dict[str, Any]:
    """What a playbook sees as `step`: Polycrate's Step (with its `workflow`)."""
    return {"name": step.name, "description": step.description, "labels": dict(step.labels),
            "alias": list(step.alias), "block": step.block, "action": step.action,
            "prompt": {"message": step.prompt.message} if step.prompt else None, "workflow": workflow.name,
            "allow_failure": step.allow_failure}


def workflow_vars(workflow: Workflow) -> dict[str, Any]:
    """What a playbook sees as `workflow`: Polycrate's Workflow with its steps."""
    return {"name": workflow.name, "description": workflow.description, "labels": dict(workflow.labels),
            "alias": list(workflow.alias), "steps": [step_vars(workflow, s) for s in workflow.steps],
            "prompt": {"message": workflow.prompt.message} if workflow.prompt else None,
            "allow_failure": workflow.allow_failure}


def block_vars(ws: Workspace, block: Block) -> dict[str, Any]:
    """What a playbook sees as `block`: Polycrate's Block (its snapshot's fields), and ours: `path`."""
    inventory, kubeconfig = block_inventory(ws, block), block_kubeconfig(ws, block)
    definition = block.definition
    return {
        "name": block.name,
        "description": definition.description,
        "kind": block.kind,
        "type": definition.type,
        "flavor": definition.flavor,
        "labels": block_labels(ws, block),
        "alias": list(definition.alias),
        "actions": [action_vars(block, a) for a in block.actions.values()],
        "config": plain(block.config),
        "from": block.source,
        "template": block.template,
        "version": block.version,
        "workdir": _paths(ws, block.folder),
        "inventory": _paths(ws, inventory),
        "kubeconfig": _paths(ws, kubeconfig),
        "artifacts": _paths(ws, ws.artifacts_dir(block.name)),
        "path": str(block.folder),
    }


def workspace_config(ws: Workspace) -> dict[str, Any]:
    """`workspace.config` as Polycrate gives it: its WorkspaceConfig's keys (the effective roots and keys,
    its defaults for the others) under the workspace's own config."""
    image = ws.toolchain.image or ""
    reference, _, version = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    layout = ws.layout
    defaults = {"image": {"reference": reference, "version": version}, "blocksroot": layout.blocks_root,
                "logsroot": layout.logs_root, "artifactsroot": layout.artifacts_root,
                "sshprivatekey": layout.ssh_private_key or "id_rsa", "sshpublickey": layout.ssh_public_key or "id_rsa.pub",
                **GO_CONFIG_DEFAULTS}
    return merge_config(defaults, plain(ws.config))


def workspace_vars(ws: Workspace) -> dict[str, Any]:
    """What a playbook sees as `workspace`: Polycrate's Workspace (without its blocks and workflows:
    snapshot() adds them), and ours: `root`."""
    return {
        "name": ws.name,
        "description": ws.description,
        "labels": dict(ws.labels),
        "alias": list(ws.alias),
        "events": {"handler": ws.events.handler or "workspace", "endpoint": ws.events.endpoint},
        "dependencies": list(ws.dependencies),
        "config": workspace_config(ws),
        "extraenv": [f"{k}={v}" for k, v in ws.extra_env],
        "extramounts": list(ws.extra_mounts),
        "organization": ws.organization,
        **_paths(ws, ws.root),
        "version": ws.version,
        "meta": plain(ws.meta),
        "sync": {"remote": {"name": ws.sync.remote, "branch": {"name": ws.sync.branch}}},
        "inventory": _paths(ws, ws.inventory),
        "kubeconfig": _paths(ws, workspace_kubeconfig(ws)),
        "root": str(ws.root),
    }


def snapshot(ws: Workspace) -> dict[str, Any]:
    """The merged workspace, as `workspace snapshot` prints it (Polycrate's: the workspace with its blocks
    and workflows)."""
    return {
        "workspace": {
            **workspace_vars(ws),
            "blocks": [block_vars(ws, b) for b in ws.blocks.values()],
            "workflows": [workflow_vars(w) for w in ws.workflows.values()],
        }
    }
