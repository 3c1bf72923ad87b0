"""Running an action or a workflow, once prepared (run/pipeline.py): the run's phases in order.

The path of one run, a module per phase:

1. plan (run/plan.py): the steps, their controls, the prompts;
2. open (run/opening.py): lock, SSH sharing, zygote, --resume, prompts, secrets, preflight, the record;
3. drive (run/drive.py): the steps in order with the failure policy, each one (run/step.py) with its
   timeout and retries; on_failure steps after a failure;
4. finish (run/finish.py): the outcome recorded, then the after-run phases that must never change it:
   retention, metrics, the Polycrate event, auto-commit, webhooks, mail and chat;
5. close (run/context.py): every resource of the run given back, also after a failure or an interrupt.

The engine never prints: it reports through a ``Reporter`` that the caller supplies, and every line,
message and notice passes through one masking function (``RunContext.mask``) first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from polycrate.config.action_view import playbook_path
from polycrate.config.workspace import get_action, get_block, get_workflow
from polycrate.errors import PolycrateError
from polycrate.history.locking import run_lock_key
from polycrate.run.context import RunContext
from polycrate.run.drive import drive
from polycrate.run.opening import NothingToResume, PromptDeclined, RunTarget, open_run
from polycrate.run.plan import plan_workflow, resume_point
from polycrate.run.request import Confirm, PlannedStep, Reporter, RunOptions, RunPrompt, RunResult, StepResult
from polycrate.runtime.events import read_events
from polycrate.states import RunKind

if TYPE_CHECKING:
    from polycrate.config.model import Workspace
    from polycrate.runtime.toolchain import Runtime
    from polycrate.runtime.zygote import EarlyZygote


def run_action(
    ws: Workspace,
    block_name: str,
    action_name: str,
    *,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
    runtime: Runtime | None = None,
    early_zygote: EarlyZygote | None = None,
) -> RunResult:
    """One run, once prepared: call it through pipeline.run, which decides `runtime` (None: local)."""
    block = get_block(ws, block_name)
    action = get_action(block, action_name)
    if action.type == "ansible":
        playbook_path(block, action)
    if options.resume:
        raise PolycrateError("--resume applies to workflows only")
    prompt = RunPrompt(action.prompt.message, block=block.name, action=action.name) if action.prompt else None
    target = RunTarget(RunKind.ACTION, f"{block.name} {action.name}", [PlannedStep(action.name, block.name, action.name)],
                       lock_key=run_lock_key(block.name, action.name), lock_what=f"action {block.name} {action.name}",
                       prompts=(prompt,) if prompt else (), record={"block": block.name, "action": action.name})
    return _run(target, confirm, RunContext(ws, reporter or Reporter(), options, runtime, early_zygote))


def run_workflow(
    ws: Workspace,
    name: str,
    *,
    only_step: str | None = None,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
    runtime: Runtime | None = None,
    early_zygote: EarlyZygote | None = None,
) -> RunResult:
    """One run, once prepared: call it through pipeline.run, which decides `runtime` (None: local)."""
    workflow = get_workflow(ws, name)
    if options.resume and only_step:
        raise PolycrateError("--resume and --step do not combine: --resume picks the steps itself")
    target = RunTarget(RunKind.WORKFLOW, workflow.name, plan_workflow(ws, workflow, only_step),
                       lock_key=run_lock_key(workflow.name), lock_what=f"workflow '{workflow.name}'",
                       workflow=workflow, record={"workflow": workflow.name, "only_step": only_step})
    return _run(target, confirm, RunContext(ws, reporter or Reporter(), options, runtime, early_zygote))


def _run(target: RunTarget, confirm: Confirm, run: RunContext) -> RunResult:
    """Open, drive (which finishes), and close whatever happened."""
    try:
        try:
            opened = open_run(run, target, confirm)
        except PolycrateError as exc:  # a timer's or cron's run refused before it started: recorded, and told
            from polycrate.run.finish import record_not_started
            from polycrate.schedule.render import launched_by_schedule

            if run.run_id is None and target.workflow is not None and launched_by_schedule(run.options.launched_by):
                record_not_started(run, RunResult(target.kind, target.name, [StepResult(p) for p in target.planned]),
                                   target.record.get("only_step"), exc)
            raise
        return drive(run, opened.result, opened.skip)
    finally:
        run.close()


__all__ = [
    "NothingToResume",
    "PromptDeclined",
    "Reporter",
    "RunOptions",
    "RunResult",
    "StepResult",
    "run_action",
    "run_workflow",
    "plan_workflow",
    "read_events",
    "resume_point",
]
