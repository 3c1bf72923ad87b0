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

from enum import StrEnum



class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM, or the process died (found by the store's reconcile)
    # team mode: its worker stopped heartbeating and nobody recorded an end; never re-run by itself
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self is not RunState.RUNNING


# the runs a --resume takes over: it failed, was stopped, or was lost with its worker (team mode)
RESUMABLE = frozenset({RunState.FAILED, RunState.INTERRUPTED, RunState.LOST})
RUN_STATES = tuple(s.value for s in RunState)  # as people and flags spell them (`runs list --status`, the API)


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


def signal_of(exit_code: int | None) -> str | None:
    """The signal that ended a step's process ('SIGKILL'), from its exit status as Popen gives it
    (negative: killed by that signal); None for a plain exit or none."""
    if exit_code is None or exit_code >= 0:
        return None
    import signal

    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


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


def ended_word(status: object) -> str:
    """What the step a run names as its ``failed_step`` did, for people: a stopped run's step was stopped (a
    signal, the web view's stop), a lost run's was lost with its worker; any other run's failed."""
    return {RunState.INTERRUPTED: "stopped", RunState.LOST: "lost"}.get(status, "failed")  # type: ignore[call-overload]


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


__all__ = ["LEGACY_STEP_STATES", "Phase", "RunKind", "RunState", "StepState", "signal_of"]
