"""The one vocabulary of runs and steps: their states, phases and kinds; planned steps and prompts.

Every state a run or a step can be in is a member here; the engine sets them, the run
store keeps their values, metrics, alerts and the CLI read them. The values are
machine words (what the store and ``--output json`` carry); the wording for people
("skipped (check mode)") is ``state_text``, here too, so the CLI and the server say the same.

Stores written before this module kept some step states as display text
("failed (allowed)", "skipped (resumed)", ...). ``StepState(value)`` still reads them
(``LEGACY_STEP_STATES``), so every old run store stays readable; the store's migration
can rewrite them with the same mapping.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polycrate.config.model import Step
    from polycrate.config.workspace import BlockChange


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM, or the process died (found by the store's reconcile)

    @property
    def finished(self) -> bool:
        return self is not RunState.RUNNING


class StepState(StrEnum):
    NOT_RUN = "not_run"  # planned and not started; an on_failure step that was not needed
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_ALLOWED = "failed_allowed"  # failed, and the step says allow_failure: the run goes on
    SKIPPED = "skipped"  # not run because an earlier step failed or the run was interrupted
    SKIPPED_CHECK = "skipped_check"  # a script action under --check: scripts cannot run in check mode
    SUCCEEDED_BEFORE = "succeeded_before"  # --resume: it succeeded in the run this one continues
    INTERRUPTED = "interrupted"

    @classmethod
    def _missing_(cls, value: object) -> StepState | None:
        legacy = LEGACY_STEP_STATES.get(value) if isinstance(value, str) else None
        return cls(legacy) if legacy else None

    @property
    def finished_ok(self) -> bool:
        """Done in a way a resumed run need not repeat."""
        return self in (StepState.SUCCEEDED, StepState.FAILED_ALLOWED, StepState.SUCCEEDED_BEFORE)


# step states as people read them (tables, summaries, pages); a state not named here reads as its value
STATE_WORDS: dict[str, str] = {
    StepState.NOT_RUN: "not run",
    StepState.FAILED_ALLOWED: "failed (allowed)",
    StepState.SKIPPED_CHECK: "skipped (check mode)",
    StepState.SUCCEEDED_BEFORE: "skipped (resumed)",
}


def state_text(state: object) -> str:
    """The wording of a run or step state for people (the CLI's tables and summaries, the server's pages)."""
    return STATE_WORDS.get(state, str(state)) if isinstance(state, str) else str(state)


# step states as run stores before states.py wrote them -> today's values
LEGACY_STEP_STATES = {
    "not run": StepState.NOT_RUN.value,
    "failed (allowed)": StepState.FAILED_ALLOWED.value,
    "skipped (check mode)": StepState.SKIPPED_CHECK.value,
    "skipped (resumed)": StepState.SUCCEEDED_BEFORE.value,
}


class Phase(StrEnum):
    MAIN = "main"
    ON_FAILURE = "on_failure"  # steps that run only after a main step failed


class RunKind(StrEnum):
    ACTION = "action"
    WORKFLOW = "workflow"


# --- what a run is made of, before it runs --------------------------------------------------


@dataclass(frozen=True)
class PlannedStep:
    """One step of a run's plan: what to run, in which phase, with which controls."""

    name: str
    block: str
    action: str
    phase: Phase = Phase.MAIN
    allow_failure: bool = False
    timeout: float | None = None  # seconds per attempt
    retries: int = 0
    retry_delay: float = 0.0
    allow_no_hosts: bool = False  # a play matching no host does not fail the step (nor its preflight)

    @classmethod
    def of(cls, step: Step, phase: Phase = Phase.MAIN) -> PlannedStep:
        return cls(step.name, step.block, step.action, phase, step.allow_failure, step.timeout, step.retries,
                   step.retry_delay, step.allow_no_hosts)


@dataclass(frozen=True)
class RunPrompt:
    """A question a run asks before anything runs: a workflow's, an action's or a step's `prompt`, or
    whether to install missing blocks. The caller's ``confirm`` callback answers it."""

    message: str
    workflow: str | None = None  # the workflow's own prompt
    step: str | None = None  # the prompt of this step's action
    block: str | None = None
    action: str | None = None
    pulls: tuple[BlockChange, ...] = ()  # before a run: the `from:` blocks it would install

    @property
    def asker(self) -> str:
        """Who asks, for people: 'workflow w', 'step s (block/action)', 'action block/action'."""
        if self.pulls:
            return "blocks"
        if self.step is not None:
            return f"step {self.step} ({self.block}/{self.action})"
        if self.workflow is not None:
            return f"workflow {self.workflow}"
        return f"action {self.block}/{self.action}"


__all__ = ["LEGACY_STEP_STATES", "Phase", "PlannedStep", "RunKind", "RunPrompt", "RunState", "StepState"]
