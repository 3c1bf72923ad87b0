"""How one action executes: the environment it gets and the process that runs it.

``run_action_process`` is the single entry point; ``ansible.py`` and
``script.py`` build the command for their action type.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from polycrate.errors import Interrupted
from polycrate.model import Action, Block, Workspace

# How long a child gets to end after SIGINT/SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ActionRequest:
    ws: Workspace
    block: Block
    action: Action
    workflow: str | None = None
    step: str | None = None
    check: bool = False
    diff: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def action_environment(request: ActionRequest) -> dict[str, str]:
    """The variables every action gets, whatever its type or runtime."""
    ws, block = request.ws, request.block
    env = dict(os.environ)
    env.update(
        {
            "POLYCRATE_WORKSPACE": str(ws.root),
            "POLYCRATE_WORKSPACE_NAME": ws.name,
            "POLYCRATE_BLOCK": block.name,
            "POLYCRATE_BLOCK_PATH": str(block.folder),
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
    if ws.inventory.is_file():
        env["ANSIBLE_INVENTORY"] = str(ws.inventory)
    env.update(request.extra_env)
    return env


def run_action_process(request: ActionRequest, output: Callable[[str], None]) -> int:
    """Run the action to completion, streaming its output lines; return its exit status."""
    from polycrate.runtime import ansible, script

    request.ws.artifacts_dir(request.block.name).mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="polycrate-run-"))  # mode 0700
    try:
        builder = ansible.build_command if request.action.type == "ansible" else script.build_command
        argv, env = builder(request, private)
        return _stream(argv, env, request.block.folder, output)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _stream(argv: list[str], env: dict[str, str], cwd: Path, output: Callable[[str], None]) -> int:
    # Own process group: a stop reaches the whole tree (ansible forks, ssh, scripts' children).
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            output(raw.decode("utf-8", "replace").rstrip("\n"))
        return proc.wait()
    except BaseException:
        stop_process_group(proc)
        raise


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGINT the group (Ansible cleans up on it), then SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, STOP_GRACE_SECONDS / 2), (signal.SIGTERM, STOP_GRACE_SECONDS / 2)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        pass
    proc.wait()


__all__ = ["ActionRequest", "action_environment", "run_action_process", "stop_process_group", "Interrupted"]
