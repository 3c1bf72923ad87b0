"""Executing actions and workflows: order, prompts, failure policy.

The engine never prints: it reports through a ``Reporter`` that the CLI supplies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from polycrate.errors import PolycrateError
from polycrate.model import Workflow, Workspace
from polycrate.runtime import ActionRequest, run_action_process
from polycrate.workspace import get_action, get_block, get_workflow, playbook_path

SUCCEEDED = "succeeded"
FAILED = "failed"
FAILED_ALLOWED = "failed (allowed)"
SKIPPED = "skipped"
NOT_RUN = "not run"


@dataclass
class StepResult:
    name: str
    block: str
    action: str
    status: str = NOT_RUN
    exit_code: int | None = None
    duration: float = 0.0


@dataclass
class RunResult:
    kind: str  # "action" | "workflow"
    name: str
    steps: list[StepResult] = field(default_factory=list)
    duration: float = 0.0

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == FAILED), None)

    @property
    def ok(self) -> bool:
        return self.failed_step is None

    @property
    def skipped(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == SKIPPED]


class Reporter:
    """What the engine tells its caller while it works. Override what you need."""

    def output(self, line: str) -> None:
        pass

    def step_started(self, step: StepResult, index: int, total: int) -> None:
        pass

    def step_finished(self, step: StepResult, index: int, total: int) -> None:
        pass


Confirm = Callable[[str, str], bool]  # (what asks, message) -> answer


@dataclass(frozen=True)
class RunOptions:
    check: bool = False
    diff: bool = False


class PromptDeclined(PolycrateError):
    exit_code = 1


def _ask(confirm: Confirm, asks: list[tuple[str, str]]) -> None:
    """All prompts are answered before anything runs, so no run stops half-way for input."""
    for who, message in asks:
        if not confirm(who, message):
            raise PromptDeclined(f"{who}: not confirmed, nothing was run")


def run_action(
    ws: Workspace,
    block_name: str,
    action_name: str,
    *,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
) -> RunResult:
    block = get_block(ws, block_name)
    action = get_action(block, action_name)
    if action.type == "ansible":
        playbook_path(block, action)
    if action.prompt:
        _ask(confirm, [(f"action {block.name}/{action.name}", action.prompt.message)])
    result = RunResult("action", f"{block.name} {action.name}")
    step = StepResult(action.name, block.name, action.name)
    result.steps.append(step)
    _execute(ws, step, None, options, reporter or Reporter(), 1, 1)
    result.duration = step.duration
    return result


def plan_workflow(ws: Workspace, workflow: Workflow, only_step: str | None = None) -> list[StepResult]:
    steps = list(workflow.steps)
    if only_step is not None:
        chosen = [s for s in steps if s.name == only_step]
        if not chosen:
            from polycrate.workspace import closest

            raise PolycrateError(
                f"workflow '{workflow.name}' has no step '{only_step}'" + closest(only_step, [s.name for s in steps]),
                ws.file,
                workflow.line,
            )
        steps = chosen
    planned = []
    for s in steps:
        block = get_block(ws, s.block)
        action = get_action(block, s.action)
        if action.type == "ansible":
            playbook_path(block, action)  # a missing playbook stops the run before step 1
        planned.append(StepResult(s.name, s.block, s.action))
    return planned


def run_workflow(
    ws: Workspace,
    name: str,
    *,
    only_step: str | None = None,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
) -> RunResult:
    workflow = get_workflow(ws, name)
    planned = plan_workflow(ws, workflow, only_step)
    asks = []
    if workflow.prompt:
        asks.append((f"workflow {workflow.name}", workflow.prompt.message))
    for step in planned:
        action = ws.blocks[step.block].actions[step.action]
        if action.prompt:
            asks.append((f"step {step.name} ({step.block}/{step.action})", action.prompt.message))
    _ask(confirm, asks)

    reporter = reporter or Reporter()
    result = RunResult("workflow", workflow.name, planned)
    allowed = {s.name: s.allow_failure for s in workflow.steps}
    started = time.monotonic()
    stopped = False
    for index, step in enumerate(planned, 1):
        if stopped:
            step.status = SKIPPED
            continue
        _execute(ws, step, workflow.name, options, reporter, index, len(planned))
        if step.status == FAILED and allowed[step.name]:
            step.status = FAILED_ALLOWED
        elif step.status == FAILED:
            stopped = True
    result.duration = time.monotonic() - started
    return result


def _execute(
    ws: Workspace,
    step: StepResult,
    workflow: str | None,
    options: RunOptions,
    reporter: Reporter,
    index: int,
    total: int,
) -> None:
    block = ws.blocks[step.block]
    request = ActionRequest(
        ws=ws,
        block=block,
        action=block.actions[step.action],
        workflow=workflow,
        step=step.name if workflow else None,
        check=options.check,
        diff=options.diff,
    )
    reporter.step_started(step, index, total)
    started = time.monotonic()
    try:
        step.exit_code = run_action_process(request, reporter.output)
    finally:
        step.duration = time.monotonic() - started
    step.status = SUCCEEDED if step.exit_code == 0 else FAILED
    reporter.step_finished(step, index, total)
