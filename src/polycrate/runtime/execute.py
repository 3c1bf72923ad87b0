"""Executing one action: build its command (``ansible.py`` or ``script.py``), wrap it for the container
when the run uses one (``container.py``), and stream it (``process.py``), forking from the run's
zygote where there is one (``zygote.py``). ``run_action_process`` is the engine's single entry point."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

from polycrate.runtime import ansible, container, script
from polycrate.runtime.action import ActionRequest, event_environment
from polycrate.runtime.process import stream

if TYPE_CHECKING:
    from polycrate.runtime.zygote import EarlyZygote, Zygote


def run_action_process(request: ActionRequest, output: Callable[[str], None],
                       alive: Callable[[], None] | None = None) -> int:
    """Run the action to completion, streaming its output lines; return its exit status (``alive``: called
    while it runs silently, process.stream).

    Raises ``ActionTimedOut`` (after stopping the process group) when ``request.timeout`` passes.
    """
    request.ws.artifacts_dir(request.block.name).mkdir(parents=True, exist_ok=True)
    run_container = request.container
    # mode 0700; in the run's container folder when there is one (the container sees it)
    private = Path(tempfile.mkdtemp(prefix="polycrate-run-", dir=run_container.folder if run_container else None))
    try:
        builder = ansible.build_command if request.action.type == "ansible" else script.build_command
        argv, env = builder(request, private)
        if request.action.type == "ansible" and request.events_file is not None:
            env = event_environment(env, request.events_file)
        if run_container is not None:  # forked or exec'd by the zygote inside the run's container
            argv, env, cwd = run_container.command(request, argv, env, private)
            return stream(argv, env, cwd, output, request.timeout, request.keep_fds, run_container.connected(), alive)
        # the container runtime runs the same command in the workspace's image, and removes it however it ends
        with container.command_for(request, argv, env, private) as (wrapped, env, cwd):
            # a local ansible step forks from the run's warm zygote (runtime/zygote.py) when there is one
            zygote = request.zygote if request.action.type == "ansible" and wrapped is argv else None
            return stream(wrapped, env, cwd, output, request.timeout, request.keep_fds, zygote, alive)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def start_zygote(request: ActionRequest, early: EarlyZygote | None = None) -> Zygote | None:
    """The warm process the ansible steps of a workflow run fork from (runtime/zygote.py), started with
    the environment of `request`, the run's first ansible step; None where it does not apply (the
    container runtime). `early`: a zygote the caller started before the workspace was read, which takes
    this environment. Whatever it cannot serve runs as a plain process."""
    from polycrate.runtime.zygote import Zygote

    if request.action.type != "ansible" or (request.runtime is not None and request.runtime.container):
        return None
    env = ansible.ansible_environment(request)
    env = event_environment(env, request.events_file or Path(tempfile.gettempdir()) / "polycrate-events.jsonl")
    try:
        return Zygote(env, request.block.folder, early)
    except OSError:
        return None


