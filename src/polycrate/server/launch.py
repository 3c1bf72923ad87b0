"""Launching and stopping runs from the server.

A launch is a child `polycrate workflows run` process: the same pipeline as at the terminal, the
same lock (a second launch of a running workflow gets the CLI's exit 3 and the server answers 409),
the same run store. The child runs in its own session (``start_new_session``), so stopping or
restarting the server never stops a run. The server names the run id in advance and who launched
it (the child's ``--run-id`` and ``--launched-by``, which go into its run request), and the prompts the
operator confirmed in the browser become the child's ``--force``.

Stopping sends SIGTERM to the run's own polycrate process (checked against the workflow's lock
holder first), which stops its step and records the run as interrupted, as Ctrl-C does.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from polycrate.errors import EXIT_BAD_INPUT, EXIT_LOCKED, PolycrateError
from polycrate.history import RunRecord, new_run_id
from polycrate.history.locking import is_held, lock_path, pid_alive, read_holder
from polycrate.states import RunState


class LaunchRefused(PolycrateError):
    """The run did not start; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LaunchOptions:
    check: bool = False
    step: str | None = None
    resume: bool = False
    limit: str | None = None
    extra_vars: tuple[str, ...] = field(default=())

    def audit(self) -> dict:
        """What the audit log keeps: the options, but only the names of extra vars (values may be secret)."""
        names = []
        for item in self.extra_vars:
            names.append(item.split("=", 1)[0] if "=" in item and not item.lstrip().startswith(("{", "@")) else "(json)")
        return {"check": self.check, "step": self.step, "resume": self.resume, "limit": self.limit,
                "extra_vars": names}


def run_options_supported() -> set[str]:
    """The options `polycrate workflows run` of this install accepts (--limit and --extra-vars are newer)."""
    from polycrate.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions:  # noqa: SLF001 (argparse has no public walk)
        workflows = action.choices.get("workflows")
        if workflows is None:
            continue
        for sub in workflows._subparsers._group_actions:  # noqa: SLF001
            run = sub.choices.get("run")
            if run is not None:
                return {o for a in run._actions for o in a.option_strings}  # noqa: SLF001
    return set()


def prompts_of(ws, workflow, step: str | None = None) -> list[dict]:
    """Every prompt the run would ask, by the engine's own rule (the workflow's, then each planned step's)."""
    from polycrate.run import engine

    planned = engine.plan_workflow(ws, workflow, step)
    return [{"who": p.asker, "message": p.message} for p in engine.plan_prompts(ws, workflow, planned, set())]


def command(root: Path, workflow: str, options: LaunchOptions, supported: set[str]) -> list[str]:
    argv = [sys.executable, "-m", "polycrate", "-w", str(root), "workflows", "run", workflow, "--force"]
    if options.check:
        argv.append("--check")
    if options.step:
        argv += ["--step", options.step]
    if options.resume:
        argv.append("--resume")
    # `@file` would have the server's user read a file named by the operator: not over the web
    if options.limit and options.limit.lstrip().startswith("@"):
        raise LaunchRefused("limit: a host pattern, not @file, over the web")
    if any(item.lstrip().startswith("@") for item in options.extra_vars):
        raise LaunchRefused("extra vars: key=value or a JSON object, not @file, over the web")
    for flag, value in (("--limit", options.limit),):
        if value:
            if flag not in supported:
                raise LaunchRefused(f"this polycrate's `workflows run` has no {flag}")
            argv += [flag, value]
    for item in options.extra_vars:
        if "--extra-vars" not in supported:
            raise LaunchRefused("this polycrate's `workflows run` has no --extra-vars")
        argv += ["--extra-vars", item]
    return argv


@dataclass
class Launched:
    run_id: str
    pid: int
    output: Path


def launch(root: Path, workflow: str, options: LaunchOptions, *, launched_by: str, output_dir: Path,
           supported: set[str], wait_seconds: float = 20.0, backend: str | None = None,
           workspace: str | None = None) -> Launched:
    """Start the run; return once it is recorded in the store (or raise why it did not start)."""
    if options.resume and options.step:
        raise LaunchRefused("resume and one step do not combine: resume picks the steps itself")
    lock = lock_path(root, f"workflow-{workflow}")
    if is_held(lock) and _finishing(root, read_holder(lock), backend, workspace):
        deadline = time.monotonic() + 10  # its run is recorded as ended: the process is closing, give it a moment
        while is_held(lock) and time.monotonic() < deadline:
            time.sleep(0.1)
    if is_held(lock):
        holder = read_holder(lock)
        raise LaunchRefused(
            f"workflow '{workflow}' is already running ({holder.describe() if holder else 'holder unknown'})", 409)
    run_id = new_run_id()
    argv = command(root, workflow, options, supported) + ["--run-id", run_id, "--launched-by", launched_by]
    output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    output = output_dir / f"{run_id}.out"
    env = dict(os.environ)
    for key in ("POLYCRATE_WORKFLOW", "POLYCRATE_STEP"):
        env.pop(key, None)
    with open(output, "wb") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()  # no zombie while we live
    deadline = time.monotonic() + wait_seconds
    from polycrate.history import open_store

    while time.monotonic() < deadline:
        store = open_store(root, backend=backend, workspace=workspace, reconcile=False)
        try:
            row = store.find_run(run_id)
        finally:
            store.close()
        if row is not None:
            return Launched(run_id, proc.pid, output)
        code = proc.poll()
        if code is not None:
            text = output.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            reason = next((line for line in reversed(text) if line.startswith("polycrate: error: ")), None)
            reason = (reason or (text[-1] if text else f"exit {code}")).removeprefix("polycrate: error: ")
            status = {EXIT_LOCKED: 409, EXIT_BAD_INPUT: 400}.get(code, 500 if code != 1 else 409)
            raise LaunchRefused(f"the run did not start: {reason}", status)
        time.sleep(0.1)
    return Launched(run_id, proc.pid, output)  # started but slow to record (a big block pull): 202 all the same


def _finishing(root: Path, holder, backend: str | None, workspace: str | None) -> bool:
    """Whether the lock's holder has already recorded its run as ended (retention, metrics, webhooks follow)."""
    if holder is None or not holder.run_id:
        return False
    from polycrate.history import open_store

    store = open_store(root, backend=backend, workspace=workspace, reconcile=False)
    try:
        row = store.find_run(holder.run_id)
    finally:
        store.close()
    return row is not None and row.status != RunState.RUNNING


def stop(root: Path, run: RunRecord) -> None:
    """SIGTERM to the run's polycrate process, after checking that it is the one holding the run's lock."""
    if run.status != RunState.RUNNING:
        raise LaunchRefused(f"run {run.id} is not running (it {run.status})", 409)
    if run.host != socket.gethostname():
        raise LaunchRefused(f"run {run.id} runs on {run.host}, not on this host", 409)
    pid = run.pid
    holder = read_holder(lock_path(root, run.lock_key)) if run.lock_key else None
    if pid is None or not pid_alive(pid) or holder is None or holder.pid != pid or holder.run_id not in (None, run.id):
        raise LaunchRefused(f"run {run.id}: its process is gone or no longer holds the lock", 409)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise LaunchRefused(f"run {run.id}: its process has just ended", 409) from None
