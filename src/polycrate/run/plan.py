"""Planning a run: which steps, in which phase, which prompts, and where a resumed run starts.
Pure functions of the loaded workspace (and, for a resume, the previous run's record)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from polycrate.config.action_view import playbook_path
from polycrate.config.model import Workflow, Workspace
from polycrate.config.workspace import get_action, get_block
from polycrate.errors import PolycrateError
from polycrate.run.request import PlannedStep, RunPrompt
from polycrate.states import Phase, StepState

if TYPE_CHECKING:
    from polycrate.history.records import RunRecord


def plan_workflow(ws: Workspace, workflow: Workflow, only_step: str | None = None) -> list[PlannedStep]:
    steps = list(workflow.steps)
    if only_step is not None:
        chosen = [s for s in steps if s.name == only_step]
        if not chosen:
            from polycrate.config.workspace import closest

            raise PolycrateError(
                f"workflow '{workflow.name}' has no step '{only_step}'" + closest(only_step, [s.name for s in steps]),
                ws.file,
                workflow.line,
            )
        steps = chosen
    planned = [PlannedStep.of(s) for s in steps] + [PlannedStep.of(s, Phase.ON_FAILURE) for s in workflow.on_failure]
    lines = {s.name: s.line for s in (*workflow.steps, *workflow.on_failure)}
    for step in planned:
        block = get_block(ws, step.block)
        action = get_action(block, step.action)
        if action.type == "ansible":
            playbook_path(block, action)  # a missing playbook stops the run before step 1
        elif step.slices > 1:  # hosts are what a slice divides: a script has none
            raise PolycrateError(f"workflow '{workflow.name}', step '{step.name}': slices applies to ansible actions; "
                                 f"{step.block}/{step.action} is a {action.type} action", ws.file, lines.get(step.name))
    return planned


def plan_prompts(ws: Workspace, workflow: Workflow, planned: list[PlannedStep], skip: set[str]) -> list[RunPrompt]:
    """The workflow's prompt, then each planned step's action prompt (not of steps a resume skips)."""
    prompts = [RunPrompt(workflow.prompt.message, workflow=workflow.name)] if workflow.prompt else []
    declared = {s.name: s for s in (*workflow.steps, *workflow.on_failure)}
    for step in planned:
        action = ws.blocks[step.block].actions[step.action]
        own = declared[step.name].prompt if step.name in declared else None
        if own is not None and step.name not in skip:  # a step's own prompt (Polycrate's), before its action's
            prompts.append(RunPrompt(own.message, step=step.name, block=step.block, action=step.action))
        if action.prompt and step.name not in skip:
            prompts.append(RunPrompt(action.prompt.message, step=step.name, block=step.block, action=step.action))
    return prompts


def resume_point(previous: RunRecord, planned: list[PlannedStep]) -> set[str]:
    """Names of the steps that the previous run finished (succeeded, or failed where allowed)."""
    done = {s.name for s in previous.steps if s.phase == Phase.MAIN and StepState(s.status).finished_ok}
    skip: set[str] = set()
    for step in planned:
        if step.phase != Phase.MAIN or step.name not in done:
            break
        skip.add(step.name)
    return skip


def resumed_notes(previous: RunRecord, skip: set[str]) -> dict[str, str]:
    """What each step a resume skips says: where it really finished. A step that the resumed run had skipped
    itself (a resume of a resume) keeps that run's note, which names the run where it ran."""
    notes: dict[str, str] = {}
    for step in previous.steps:
        if step.phase != Phase.MAIN or step.name not in skip:
            continue
        if step.status == StepState.SUCCEEDED_BEFORE and step.note:
            notes[step.name] = step.note
        elif step.status == StepState.FAILED_ALLOWED:
            notes[step.name] = f"failed (allowed) in run {previous.id}"
        else:
            notes[step.name] = f"succeeded in run {previous.id}"
    return notes
