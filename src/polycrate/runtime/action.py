"""One action as a request (``ActionRequest``): the variables its playbook or script gets and the
environment its process gets. ``execute.py`` runs it."""
from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polycrate.runtime.events import EVENTS_CALLBACK, EVENTS_FILE_ENV
from polycrate.config.record import Record, record

if TYPE_CHECKING:  # only annotations: the step process (ansible_playbook, zygote) imports this package
    from polycrate.config.model import Action, Block, Workspace
    from polycrate.runtime.toolchain import Runtime

# Our Ansible callback plugin (runtime/plugins/callback/polycrate_events.py); its events: polycrate.runtime.events.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins" / "callback"
VARS_PLUGIN_DIR = Path(__file__).resolve().parent / "plugins" / "vars"
VARS_PLUGIN = "polycrate_vars"


def vars_plugin_environment(env: dict[str, str]) -> dict[str, str]:
    """Our polycrate_vars plugin enabled beside the ones configured (Ansible's default: host_group_vars),
    so an ansible-playbook a script line starts reads the snapshot as a playbook action gets it."""
    env = dict(env)
    paths = [str(VARS_PLUGIN_DIR)] + [p for p in env.get("ANSIBLE_VARS_PLUGINS", "").split(os.pathsep) if p]
    env["ANSIBLE_VARS_PLUGINS"] = os.pathsep.join(paths)
    enabled = [v.strip() for v in env.get("ANSIBLE_VARS_ENABLED", "host_group_vars").split(",") if v.strip()]
    if VARS_PLUGIN not in enabled:
        enabled.append(VARS_PLUGIN)
    env["ANSIBLE_VARS_ENABLED"] = ",".join(enabled)
    env.setdefault("ANSIBLE_RUN_VARS_PLUGINS", "start")  # as Polycrate: once per run, not per task
    return env


@record(frozen=True, eq=False, repr=False)
class ActionRequest(Record):
    ws: Workspace
    block: Block
    action: Action
    workflow: str | None = None
    step: str | None = None
    check: bool = False
    diff: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds; the process group is stopped when it runs longer
    events_file: Path | None = None  # ansible actions write their JSON-lines event stream here
    keep_fds: tuple[int, ...] = ()  # descriptors the action inherits: the run's lock lives as long as the play
    runtime: Runtime | None = None  # toolchain.Runtime the run decided (pipeline.prepare); None: local
    secrets: Any = None  # polycrate.secrets.RuntimeSecrets of the run, when the workspace has secrets
    zygote: Any = None  # runtime.zygote.Zygote of a workflow run: local ansible steps fork from it
    ansible_options: Any = None  # polycrate.runtime.ansible_options.AnsibleOptions of the run
    script: tuple[str, ...] | None = None  # a script action's lines rendered (runtime.script.rendered_script)
    env: tuple[tuple[str, str], ...] = ()  # -e KEY=value of the run: applied last, both runtimes
    mounts: tuple[Any, ...] = ()  # -m: container.Mount of the run (container runtime)
    ssh_key: Path | None = None  # the workspace's SSH private key (action_env.workspace_key)
    force: bool = False  # -f: POLYCRATE_FORCE=1
    ssh_sharing: Any = None  # runtime.sshshare.SSHSharing of the run: its ControlPersist masters' folder
    hosts: int | None = None  # the most hosts one play of this action targets (the preflight's count)
    container: Any = None  # runtime.run_container.RunContainer of a container run: every step runs in it


def action_variables(request: ActionRequest) -> dict[str, Any]:
    """What playbooks and scripts see, in Polycrate's snapshot shapes: `workspace` (with its blocks and
    workflows), `block`, `action`, and in a workflow `workflow` and `step`; `env` and `mounts` (what this
    action's environment and container add); with the paths of this run's secrets."""
    from polycrate.config.action_view import (
        action_vars,
        block_vars,
        snapshot,
        step_vars,
        workflow_vars,
    )

    ws = request.ws
    data = snapshot(ws)
    block = block_vars(ws, request.block)
    secrets = request.secrets
    block["secrets"] = secrets.block_files(request.block.name) if secrets is not None else {}
    data["workspace"]["secrets"] = secrets.workspace_files if secrets is not None else {}
    data["block"] = block
    data["action"] = action_vars(request.block, request.action)
    workflow = ws.workflows.get(request.workflow) if request.workflow else None
    if workflow is not None:
        data["workflow"] = workflow_vars(workflow)
        step = next((s for s in (*workflow.steps, *workflow.on_failure) if s.name == request.step), None)
        if step is not None:
            data["step"] = step_vars(workflow, step)
    full = action_environment(request)
    given = {k for k, _ in request.env}
    data["env"] = {k: v for k, v in sorted(full.items()) if k in given or os.environ.get(k) != v}
    mounts = {m.host: m.container for m in request.mounts}
    if request.runtime is not None and getattr(request.runtime, "container", False):
        from polycrate.config.action_view import CONTAINER_ROOT

        mounts = {str(ws.root): CONTAINER_ROOT} | mounts
    data["mounts"] = mounts
    return data


def action_environment(request: ActionRequest) -> dict[str, str]:
    """The variables every action gets, whatever its type or runtime (the list: action_env.py)."""
    from polycrate.config.action_env import polycrate_variables

    ws, block = request.ws, request.block
    env = dict(os.environ)
    env.update(polycrate_variables(runtime=request.runtime, force=request.force, ssh_key=request.ssh_key))
    env.update(
        {
            "POLYCRATE_WORKSPACE": str(ws.root),
            "POLYCRATE_WORKSPACE_NAME": ws.name,
            "POLYCRATE_BLOCK": block.name,
            "POLYCRATE_BLOCK_PATH": str(block.folder),
            "POLYCRATE_BLOCK_WORKDIR": str(block.folder),
            "POLYCRATE_ACTION": request.action.name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key in ("POLYCRATE_WORKFLOW", "POLYCRATE_STEP"):
        env.pop(key, None)
    if request.workflow:
        env["POLYCRATE_WORKFLOW"] = request.workflow
    if request.step:
        env["POLYCRATE_STEP"] = request.step
    from polycrate.config.action_view import block_inventory, block_kubeconfig

    inventory, kubeconfig = block_inventory(ws, block), block_kubeconfig(ws, block)
    if inventory is not None:  # the block's own (artifacts/blocks/BLOCK/inventory.yml), else the workspace's
        env["ANSIBLE_INVENTORY"] = str(inventory)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    env.pop("POLYCRATE_SECRETS", None)
    if request.secrets is not None and request.secrets.dir is not None:
        env["POLYCRATE_SECRETS"] = str(request.secrets.dir)  # the private folder of decrypted files
    if request.ansible_options is not None:
        env.update(request.ansible_options.environment())  # documented in ansible_options.py
    env.update(dict(ws.extra_env))  # workspace.poly `extraenv:` (Polycrate's), under -e
    env.update(request.extra_env)
    env.update(dict(request.env))  # -e KEY=value: last, so it can change any of the above
    return env


def event_environment(env: dict[str, str], events_file: Path) -> dict[str, str]:
    """Enable our callback next to whatever stdout callback and callbacks are configured."""
    env = dict(env)
    paths = [str(PLUGIN_DIR)] + [p for p in env.get("ANSIBLE_CALLBACK_PLUGINS", "").split(os.pathsep) if p]
    env["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join(paths)
    enabled = [c.strip() for c in env.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c.strip()]
    if EVENTS_CALLBACK not in enabled:
        enabled.append(EVENTS_CALLBACK)
    env["ANSIBLE_CALLBACKS_ENABLED"] = ",".join(enabled)
    env[EVENTS_FILE_ENV] = str(events_file)
    return env
