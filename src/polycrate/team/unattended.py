"""What keeps a workflow from running unattended (a schedule's slot in team mode): a prompt anywhere in it, or a
launch value it requires and has no default for. Nobody answers a prompt or types a value on a worker, so
`schedules apply` refuses such a workflow, naming the file and line where the reason is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from polycrate.config.schema import WORKSPACE_FILE


def _where(path: Path | None, line: int | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return f"{shown}:{line}" if line else shown


def unattended_problems(ws: Any, workflow_name: str) -> list[str]:
    """Why the workflow cannot run without someone at a terminal, each as 'FILE:LINE: what' (empty: it can)."""
    root = Path(ws.root).resolve()
    poly = root / WORKSPACE_FILE
    workflow = ws.workflows[workflow_name]
    found: list[str] = []
    if workflow.prompt is not None:
        found.append(f"{_where(poly, workflow.line, root)}: workflow '{workflow.name}' prompts "
                     f"('{workflow.prompt.message}')")
    for step in (*workflow.steps, *workflow.on_failure):
        if step.prompt is not None:
            found.append(f"{_where(poly, step.line, root)}: step '{step.name}' prompts ('{step.prompt.message}')")
        block = ws.blocks.get(step.block)
        action = block.actions.get(step.action) if block else None
        if action is not None and action.prompt is not None:
            found.append(f"{_where(action.file, action.line, root)}: action '{step.block}.{step.action}' (step "
                         f"'{step.name}') prompts ('{action.prompt.message}')")
    declaration = workflow.launch
    for variable in getattr(declaration, "variables", ()) or ():
        if variable.required and variable.default is None:
            found.append(f"{_where(poly, variable.line or workflow.line, root)}: launch variable '{variable.name}' of "
                         f"workflow '{workflow.name}' is required and has no default")
    return found


def unattended_refusal(ws: Any, workflow_name: str) -> str | None:
    """The one-line refusal of scheduling the workflow in team mode, or None when it may run unattended."""
    problems = unattended_problems(ws, workflow_name)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (f"{problems[0]}{more}: workflow '{workflow_name}' is scheduled, and a scheduled run never answers prompts "
            "or launch values; remove its schedule or make it run unattended (a default for the value, no prompt); "
            "nothing was applied")


__all__ = ["unattended_problems", "unattended_refusal"]
