"""One run, from a request to its result: the single entry point every caller uses.

    request = RunRequest(root, workflow="nightly-maintenance", options=RunOptions(check=True))
    result = pipeline.run(request, confirm=..., reporter=...)

``prepare`` does what must happen before the first step, in this order, each once:

1. read the workspace's files (workspace.poly and every block.poly, each parsed once);
2. install the `from:` blocks that are missing or at another version, after asking the
   caller's ``confirm`` (``auto_pull`` installs without asking, except a downgrade);
3. build the one immutable Workspace from what was read;
4. decide the runtime (local, or a container engine and image, built when needed).

``run`` then hands the prepared run to the engine: lock, prompts, secrets, run record,
steps, finish (engine.py). The CLI calls this module and nothing else of it; so will
``polycrate serve``. Nothing here prints: the reporter hears everything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polycrate.run.request import Confirm, Reporter, RunOptions, RunRequest, RunResult
from polycrate.errors import EXIT_ACTION_FAILED, PolycrateError
from polycrate.config.model import Workspace
from polycrate.run.request import RunPrompt
from polycrate.config.workspace import Sources, block_changes, load_workspace, read_sources, template_refusal
from polycrate.config.record import Record, record

if TYPE_CHECKING:
    from pathlib import Path

    from polycrate.config.schema import WorkspaceFile
    from polycrate.runtime.toolchain import Runtime


class BlocksDeclined(PolycrateError):
    exit_code = EXIT_ACTION_FAILED


@record(frozen=True, eq=False, repr=False)
class PreparedRun(Record):
    request: RunRequest
    workspace: Workspace
    runtime: Runtime
    options: RunOptions  # the request's, with what prepare resolved (the workspace's SSH key)


def _checked_options(request: RunRequest, sources: Sources) -> RunOptions:
    """The global flags' paths checked before anything is installed or run; the SSH key resolved; what
    workspace.poly sets in Polycrate's fields (events, extramounts, config.sshprivatekey) under the flags."""
    import os
    from dataclasses import replace

    from polycrate.config.action_env import workspace_key

    options = workspace_defaults(request.options, request.root, sources.document)
    for mount in options.mounts:
        mount.check()
    given = options.ssh_private_key or (sources.document.go["layout"].ssh_private_key if sources.document.go
                                        else None)
    key = workspace_key(request.root, given)
    # the user's own ANSIBLE_PRIVATE_KEY_FILE (Ansible's setting, read as Ansible would) wins over the default id_rsa
    if not given and "ANSIBLE_PRIVATE_KEY_FILE" in os.environ:
        key = None
    if options.auto_commit:
        from polycrate.config import gitrepo as gitcli

        if not gitcli.is_repo(request.root):
            raise PolycrateError(f"--auto-commit: {request.root} is not in a git repository "
                                 "(git init, or run without --auto-commit)")
    return replace(options, ssh_key=key)


def workspace_defaults(options: RunOptions, root: Path, document: WorkspaceFile | None) -> RunOptions:
    """workspace.poly's `events:` as the default of --event-handler/--event-endpoint, and its
    `extramounts:` (relative host paths from the workspace root) before the -m mounts."""
    from dataclasses import replace

    go = document.go if document is not None else {}
    if not go:
        return options
    events = go["events"]
    if options.event_handler is None and events.handler is not None:
        options = replace(options, event_handler=events.handler, event_endpoint=events.endpoint)
    if go["extra_mounts"]:
        import os

        from polycrate.config.schema import WORKSPACE_FILE
        from polycrate.runtime.container import parse_mount

        file = os.path.join(root, WORKSPACE_FILE)
        extra = tuple(parse_mount(text if text.startswith(("/", "~")) else os.path.join(root, text), file)
                      for text in go["extra_mounts"])
        options = replace(options, mounts=extra + tuple(options.mounts))
    return options


def prepare(request: RunRequest, *, confirm: Confirm, reporter: Reporter) -> PreparedRun:
    sources = read_sources(request.root)
    options = _checked_options(request, sources)
    sources = _install_blocks(sources, request, confirm, reporter)
    ws = load_workspace(request.root, sources)
    for warning in ws.warnings:  # Polycrate's fields that have no effect here: one line each
        reporter.preparing(f"warning: {warning}")
    refuse_templates(ws, request)
    from polycrate.runtime import toolchain

    runtime = toolchain.decide_runtime(ws, options.runtime, reporter.toolchain, pull=options.pull,
                                       build=options.build)
    if not runtime.container:
        ignored = [flag for flag, given in (("-m/--mount", request.options.mounts), ("-p/--pull", options.pull),
                                            ("-b/--build", options.build)) if given]
        if ignored:
            reporter.preparing(f"{', '.join(ignored)}: ignored with the local runtime (they apply to the container)")
    if options.auto_commit:
        from polycrate.notify import polycrate_event as runevents

        what = f"workflow {request.workflow}" if request.workflow else f"action {request.block} {request.action}"
        runevents.auto_commit(request.root, f"[polycrate] Auto-Commit before running {what}", options.ssh_key,
                              reporter.preparing)
    return PreparedRun(request, ws, runtime, options)


def snapshot(request: RunRequest) -> dict[str, Any]:
    """`--snapshot`: what the run's (first) action would get, printed instead of running anything.
    Nothing is installed, built, locked, recorded or run."""
    from polycrate.notify import polycrate_event as runevents
    from polycrate.runtime import toolchain

    sources = read_sources(request.root)
    options = _checked_options(request, sources)
    ws = load_workspace(request.root, sources)
    return runevents.run_snapshot(ws, options, toolchain.runtime_of(ws, options.runtime), workflow=request.workflow,
                                  block=request.block, action=request.action, only_step=request.only_step)


def run(request: RunRequest | PreparedRun, *, confirm: Confirm, reporter: Reporter | None = None) -> RunResult:
    """Prepare (unless done) and run; the result says how it ended (interrupts re-raise)."""
    from polycrate.run import engine

    reporter = reporter or Reporter()
    prepared = request if isinstance(request, PreparedRun) else prepare(request, confirm=confirm,
                                                                        reporter=reporter)
    req = prepared.request
    if req.workflow is not None:
        return engine.run_workflow(prepared.workspace, req.workflow, only_step=req.only_step, confirm=confirm,
                                   reporter=reporter, options=prepared.options, runtime=prepared.runtime,
                                   early_zygote=req.early_zygote)
    assert req.block is not None and req.action is not None
    return engine.run_action(prepared.workspace, req.block, req.action, confirm=confirm, reporter=reporter,
                             options=prepared.options, runtime=prepared.runtime, early_zygote=req.early_zygote)


def refuse_templates(ws: Workspace, request: RunRequest) -> None:
    """Nothing of a template block runs: its actions alone, or any step of a workflow (on_failure steps included)."""
    if request.block is not None:
        error = template_refusal(ws, request.block)
        if error is not None:
            raise error
        return
    workflow = ws.workflows.get(request.workflow or "")
    for step in (*workflow.steps, *workflow.on_failure) if workflow is not None else ():
        error = template_refusal(ws, step.block, workflow, step)
        if error is not None:
            raise error


def _install_blocks(sources: Sources, request: RunRequest, confirm: Confirm, reporter: Reporter) -> Sources:
    """Pull the `from:` blocks that are missing or at another version; return the sources after."""
    changes = block_changes(sources)
    if not changes:
        return sources
    downgrade = any(c.kind == "downgrade" for c in changes)
    if not (request.auto_pull and not downgrade):
        prompt = RunPrompt(f"pull {len(changes)} block(s) now?", pulls=tuple(changes))
        if not confirm(prompt):
            raise BlocksDeclined("blocks: not confirmed, nothing was installed or run")
    from polycrate.blocks.registry import parse_reference, pull_block, transport_settings

    transport = transport_settings(sources.document.registries)
    for change in changes:
        if change.kind == "downgrade":
            reporter.preparing(f"downgrading {change.describe()}")
        result = pull_block(request.root, parse_reference(change.reference), transport, update_lock=False,
                            blocks_root=sources.document.go["layout"].blocks_root)
        reporter.preparing(result.describe())
    return read_sources(request.root, sources)


__all__ = ["BlocksDeclined", "PreparedRun", "RunRequest", "prepare", "refuse_templates", "run"]
