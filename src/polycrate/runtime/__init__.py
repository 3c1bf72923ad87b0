"""How one action executes: the environment it gets and the process that runs it.

``run_action_process`` is the single entry point; ``ansible.py`` and
``script.py`` build the command for their action type.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from polycrate.events import EVENTS_CALLBACK, EVENTS_FILE_ENV

if TYPE_CHECKING:  # only annotations: the step process (ansible_playbook, zygote) imports this package
    from polycrate.model import Action, Block, Workspace
    from polycrate.toolchain import Runtime

# How long a child gets to end after SIGINT/SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0

# Our Ansible callback plugin (runtime/plugins/callback/polycrate_events.py); its events: polycrate.events.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins" / "callback"


class ActionTimedOut(Exception):
    """The action ran longer than its step's timeout; its process group was stopped."""

    def __init__(self, seconds: float):
        super().__init__(f"timed out after {seconds:g}s")
        self.seconds = seconds


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
    timeout: float | None = None  # seconds; the process group is stopped when it runs longer
    events_file: Path | None = None  # ansible actions write their JSON-lines event stream here
    keep_fds: tuple[int, ...] = ()  # descriptors the action inherits: the run's lock lives as long as the play
    runtime: Runtime | None = None  # toolchain.Runtime the run decided (pipeline.prepare); None: local
    secrets: Any = None  # polycrate.secrets.RuntimeSecrets of the run, when the workspace has secrets
    zygote: Any = None  # runtime.zygote.Zygote of a workflow run: local ansible steps fork from it
    ansible_options: Any = None  # polycrate.ansible_options.AnsibleOptions of the run
    script: tuple[str, ...] | None = None  # a script action's lines rendered (runtime.script.rendered_script)
    env: tuple[tuple[str, str], ...] = ()  # -e KEY=value of the run: applied last, both runtimes
    mounts: tuple[Any, ...] = ()  # -m: container.Mount of the run (container runtime)
    ssh_key: Path | None = None  # the workspace's SSH private key (action_env.workspace_key)
    force: bool = False  # -f: POLYCRATE_FORCE=1
    ssh_sharing: Any = None  # runtime.sshshare.SSHSharing of the run: its ControlPersist masters' folder
    hosts: int | None = None  # the most hosts one play of this action targets (the preflight's count)


def action_variables(request: ActionRequest) -> dict[str, Any]:
    """`block` and `workspace` as playbooks and scripts see them, with the paths of this run's secrets."""
    from polycrate.workspace import block_vars, workspace_vars

    block = block_vars(request.ws, request.block)
    workspace = workspace_vars(request.ws)
    secrets = request.secrets
    block["secrets"] = secrets.block_files(request.block.name) if secrets is not None else {}
    workspace["secrets"] = secrets.workspace_files if secrets is not None else {}
    return {"block": block, "workspace": workspace}


def action_environment(request: ActionRequest) -> dict[str, str]:
    """The variables every action gets, whatever its type or runtime (the list: action_env.py)."""
    from polycrate.action_env import polycrate_variables

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
    from polycrate.workspace import block_inventory, block_kubeconfig

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


def run_action_process(request: ActionRequest, output: Callable[[str], None]) -> int:
    """Run the action to completion, streaming its output lines; return its exit status.

    Raises ``ActionTimedOut`` (after stopping the process group) when ``request.timeout`` passes.
    """
    from polycrate.runtime import ansible, container, script

    request.ws.artifacts_dir(request.block.name).mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="polycrate-run-"))  # mode 0700
    try:
        builder = ansible.build_command if request.action.type == "ansible" else script.build_command
        argv, env = builder(request, private)
        if request.action.type == "ansible" and request.events_file is not None:
            env = event_environment(env, request.events_file)
        # the container runtime runs the same command in the workspace's image, and removes it however it ends
        with container.command_for(request, argv, env, private) as (wrapped, env, cwd):
            # a local ansible step forks from the run's warm zygote (runtime/zygote.py) when there is one
            zygote = request.zygote if request.action.type == "ansible" and wrapped is argv else None
            return _stream(wrapped, env, cwd, output, request.timeout, request.keep_fds, zygote)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def start_zygote(request: ActionRequest):
    """The warm process the ansible steps of a workflow run fork from (runtime/zygote.py), started with
    the environment of `request`, the run's first ansible step; None where it does not apply (the
    container runtime, POLYCRATE_ZYGOTE=0). Whatever it cannot serve runs as a plain process."""
    from polycrate.runtime import ansible
    from polycrate.runtime.zygote import Zygote

    if os.environ.get("POLYCRATE_ZYGOTE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if request.action.type != "ansible" or (request.runtime is not None and request.runtime.container):
        return None
    env = ansible.ansible_environment(request)
    env = event_environment(env, request.events_file or Path(tempfile.gettempdir()) / "polycrate-events.jsonl")
    try:
        return Zygote(env, request.block.folder)
    except OSError:
        return None


SUPERVISOR = Path(__file__).with_name("supervise.py")


def supervised(argv: list[str]) -> list[str]:
    """``argv`` run under the step supervisor (runtime/supervise.py): isolated, no site-packages."""
    return [sys.executable, "-I", "-S", str(SUPERVISOR), *argv]


def _read_lines(pipe, lines: queue.SimpleQueue) -> None:
    try:
        for raw in pipe:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    finally:
        lines.put(None)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when polycrate dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG).

    Ansible ends its workers and their commands on SIGTERM, so a killed run leaves no play behind.
    """
    try:
        _libc().prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except Exception:
        pass


_LIBC: list = []


def _libc():
    """libc through ctypes, loaded on first use (not at import: the CLI's startup does not need it)."""
    if not _LIBC:
        try:
            import ctypes

            try:
                _LIBC.append(ctypes.CDLL("libc.so.6", use_errno=True))  # glibc; find_library runs ldconfig
            except OSError:
                import ctypes.util

                _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True))
        except Exception:
            _LIBC.append(None)
    return _LIBC[0]


def _stream(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    output: Callable[[str], None],
    timeout: float | None = None,
    keep_fds: tuple[int, ...] = (),
    zygote=None,
) -> int:
    proc = None
    if zygote is not None:
        from polycrate.runtime.zygote import ZygoteUnavailable

        try:
            proc = zygote.spawn(argv, env, cwd, keep_fds)  # the same contract, forked from a warm process
        except ZygoteUnavailable:
            proc = None
    if proc is None:
        # Own process group: a stop reaches the whole tree (ansible forks, ssh, scripts' children);
        # under a supervisor that ends every descendant when polycrate dies, however it dies.
        proc = subprocess.Popen(
            supervised(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=keep_fds,
            preexec_fn=_die_with_parent if _libc() is not None else None,
        )
    # A reader thread fills a queue; the main thread (the one that gets KeyboardInterrupt on
    # SIGINT/SIGTERM) hands lines to `output` and watches the deadline.
    # SimpleQueue: its get() waits in C. queue.Queue waits in threading.Condition, where a
    # KeyboardInterrupt between releasing and re-taking its lock ends in "release unlocked lock"
    lines: queue.SimpleQueue = queue.SimpleQueue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    try:
        reader.start()
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = ""
                if deadline is not None and time.monotonic() >= deadline:
                    stop_process_group(proc)
                    _drain(lines, output)
                    raise ActionTimedOut(timeout or 0) from None
                continue
            if line is None:
                break
            output(line)
        return proc.wait()
    except ActionTimedOut:
        raise
    except BaseException:
        stop_process_group(proc)
        raise


def _drain(lines: queue.SimpleQueue, output: Callable[[str], None]) -> None:
    """Hand over what the stopped process still printed (the reader ends at EOF)."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            return
        output(line)


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


__all__ = [
    "ActionRequest",
    "ActionTimedOut",
    "action_environment",
    "event_environment",
    "run_action_process",
    "stop_process_group",
]
