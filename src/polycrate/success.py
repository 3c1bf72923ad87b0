"""What counts as a workflow's success. Defined once; metrics, ``--resume``, webhooks and
``runs list`` all ask here.

A workflow succeeded when a run executed every step of it and succeeded: a full run, or a
``--resume`` run that finished the steps its predecessor left (it is a full run too: it plans the
whole workflow and skips only what had succeeded). A ``--step`` run and a check-mode run never
count, whatever their status: they did not do the workflow's job.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from polycrate.errors import EXIT_ACTION_FAILED, EXIT_INTERRUPTED
from polycrate.states import Phase, RunKind, RunState, StepState

# the same rule as SQL over the run store's `runs` table (values from states.py, no literals)
FULL_RUN_SQL = f"kind = '{RunKind.WORKFLOW.value}' AND check_mode = 0 AND only_step IS NULL"
WORKFLOW_SUCCESS_SQL = FULL_RUN_SQL + f" AND status = '{RunState.SUCCEEDED.value}'"


def is_full_run(run: Mapping[str, Any]) -> bool:
    """A run of the whole workflow for real: neither --step nor --check."""
    return run.get("kind") == RunKind.WORKFLOW and not run.get("check_mode") and not run.get("only_step")


def is_workflow_success(run: Mapping[str, Any]) -> bool:
    return is_full_run(run) and run.get("status") == RunState.SUCCEEDED


# A step in one of these states did its job (or was allowed not to): a run whose main steps are all
# here succeeded. Anything else (failed, interrupted, still running, skipped or never started) is not.
STEP_DONE_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED_ALLOWED, StepState.SUCCEEDED_BEFORE,
                              StepState.SKIPPED_CHECK})


def run_state(steps: Iterable[tuple[str, str]], interrupted: bool = False) -> RunState:
    """The one definition of how a run ended, from its steps' (state, phase) pairs.

    Succeeded: every main step succeeded or was allowed to fail (or succeeded before, for --resume;
    or is a script skipped by --check). Interrupted: the run was stopped (a signal), or a step is
    interrupted or still marked running. Failed: anything else. Whatever path ended the run (an
    exception, a closed pipe, a signal), a run with a failed or interrupted step is never succeeded.
    """
    rows = [(_known(StepState, state), _known(Phase, phase)) for state, phase in steps]
    if interrupted or any(state in (StepState.INTERRUPTED, StepState.RUNNING) for state, _ in rows):
        return RunState.INTERRUPTED
    main = [state for state, phase in rows if phase == Phase.MAIN]
    if main and all(state in STEP_DONE_STATES for state in main):
        return RunState.SUCCEEDED
    return RunState.FAILED


EXIT_CODES = {RunState.SUCCEEDED: 0, RunState.FAILED: EXIT_ACTION_FAILED, RunState.INTERRUPTED: EXIT_INTERRUPTED,
              RunState.LOST: EXIT_ACTION_FAILED}  # lost: its outcome is unknown, so not a success


def exit_code_of(state: RunState) -> int:
    """polycrate's exit code for a run that ended in `state` (also what the record stores)."""
    return EXIT_CODES[RunState(state)]


def _known(kind: Any, value: str) -> Any:
    try:
        return kind(value)
    except ValueError:  # written by a newer polycrate: not a state that counts as done
        return value
