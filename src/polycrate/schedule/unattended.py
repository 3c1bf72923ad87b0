"""What keeps a workflow from running unattended (a systemd timer, a cron entry, a team-mode slot): a prompt
anywhere in it, or a launch value it requires and has no default for. Nobody answers a prompt or types a value
at 02:00, so `workspace validate` and `schedules plan|apply` refuse a scheduled workflow that requires a value,
and team mode's apply refuses one that prompts too, each naming the file and line where the reason is written.
A prompt is a note for timers and cron (the run fails at the prompt, with a message and a non-zero exit).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.config.schema import WORKSPACE_FILE
from polycrate.errors import ConfigError

PROMPT = "prompt"
VALUE = "value"


@dataclass(frozen=True)
class Problem:
    """One reason a workflow cannot run unattended: where it is written, and what it is."""

    path: Path | None
    line: int | None
    message: str
    kind: str  # PROMPT | VALUE


def unattended_problems(ws: Any, workflow_name: str) -> list[Problem]:
    """Why the workflow cannot run without someone at a terminal (empty: it can), in the order written."""
    root = Path(ws.root).resolve()
    poly = root / WORKSPACE_FILE
    workflow = ws.workflows[workflow_name]
    found: list[Problem] = []
    if workflow.prompt is not None:
        found.append(Problem(poly, workflow.line, f"workflow '{workflow.name}' prompts ('{workflow.prompt.message}')",
                             PROMPT))
    for step in (*workflow.steps, *workflow.on_failure):
        if step.prompt is not None:
            found.append(Problem(poly, step.line, f"step '{step.name}' prompts ('{step.prompt.message}')", PROMPT))
        block = ws.blocks.get(step.block)
        action = block.actions.get(step.action) if block else None
        if action is not None and action.prompt is not None:
            found.append(Problem(action.file, action.line, f"action '{step.block}.{step.action}' (step '{step.name}') "
                                 f"prompts ('{action.prompt.message}')", PROMPT))
    declaration = workflow.launch
    for variable in getattr(declaration, "variables", ()) or ():
        if variable.required and variable.default is None:
            found.append(Problem(poly, variable.line or workflow.line, f"launch variable '{variable.name}' of workflow "
                                 f"'{workflow.name}' is required and has no default", VALUE))
    return found


def consequence(workflow_name: str, kinds: tuple[str, ...]) -> str:
    """What follows from problems of ``kinds``, and the way out: the words every refusal and finding uses."""
    what = " or ".join({PROMPT: "answers prompts", VALUE: "types launch values"}[k] for k in kinds)
    remedy = ", ".join({PROMPT: "no prompt", VALUE: "a default for the value"}[k] for k in reversed(kinds))
    return (f"workflow '{workflow_name}' is scheduled, and a scheduled run never {what}; remove its schedule or make "
            f"it run unattended ({remedy})")


def unattended_refusal(ws: Any, workflow_name: str, kinds: tuple[str, ...] = (PROMPT, VALUE),
                       done: str = "nothing was applied") -> ConfigError | None:
    """The refusal of scheduling the workflow for its problems of ``kinds`` (team mode: both; timers and cron: a
    required value), naming the file and line of the first, or None when there is none."""
    problems = [p for p in unattended_problems(ws, workflow_name) if p.kind in kinds]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ConfigError(f"{problems[0].message}{more}: {consequence(workflow_name, kinds)}; {done}",
                       problems[0].path, problems[0].line)


__all__ = ["PROMPT", "VALUE", "Problem", "consequence", "unattended_problems", "unattended_refusal"]
