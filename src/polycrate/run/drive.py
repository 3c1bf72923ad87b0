"""The steps of an opened run, in order, with the failure policy; then run/finish.py, whatever happened.

The main steps run one after another; after a failed one the rest are skipped (unless the step may
fail: `allow_failure`), and the `on_failure` steps run. An interrupt (a signal, or an error of
polycrate's own) marks what did not run and is re-raised: it is never recorded as succeeded.
"""
from __future__ import annotations

import sys
import time

from polycrate.errors import interrupt_in
from polycrate.run.context import RunContext
from polycrate.run.finish import finish
from polycrate.run.request import RunResult, StepResult
from polycrate.run.slicing import run_sliced
from polycrate.run.step import execute_step, record_step
from polycrate.states import Phase, RunKind, StepState


def drive(run: RunContext, result: RunResult, skip: dict[str, str]) -> RunResult:
    """Run the planned steps in order with the failure policy; record everything; re-raise interrupts.
    ``skip``: the main steps --resume skips, each with its note (run/plan.py's resumed_notes)."""
    record_plan(run, result, skip)
    announce(run, result)
    started_at = time.monotonic()
    interrupted = False
    try:
        run_steps(run, result)
    except BaseException:  # a signal, or an error of polycrate's own: never recorded as succeeded
        interrupted = True
        mark_not_run(run, result)
        raise
    finally:
        finish(run, result, started_at, interrupted)
    return result


def record_plan(run: RunContext, result: RunResult, skip: dict[str, str]) -> None:
    """Every planned step in the record before the first one runs; those --resume skips say where they ran."""
    assert run.store is not None and run.run_id is not None  # the record is open (run/opening.py)
    for step in result.steps:
        if step.name in skip and step.phase == Phase.MAIN:
            step.status = StepState.SUCCEEDED_BEFORE
            step.note = skip[step.name]
    run.store.add_steps(
        run.run_id,
        [
            {"position": i, "name": s.name, "block": s.block, "action": s.action, "phase": s.phase,
             "status": s.status, "note": s.note}
            for i, s in enumerate(result.steps, 1)
        ],
    )


def announce(run: RunContext, result: RunResult) -> None:
    """The run has started: its id and how many main steps, then where its actions execute."""
    from polycrate.run.where import header

    assert run.run_id is not None
    main = [s for s in result.steps if s.phase == Phase.MAIN]
    run.reporter.run_started(result.kind, result.name, run.run_id, len(main))
    engine = getattr(getattr(run.runtime, "engine", None), "name", None)
    run.reporter.runtime(header(run.where, engine))


def run_steps(run: RunContext, result: RunResult) -> None:
    """The main steps until one fails (the rest skipped); after a failure, the on_failure steps."""
    steps = result.steps
    main = [s for s in steps if s.phase == Phase.MAIN]
    stopped = False
    for index, step in enumerate(main, 1):
        if step.status == StepState.SUCCEEDED_BEFORE:
            continue
        if stopped:
            step.status = StepState.SKIPPED
            update_status(run, steps.index(step) + 1, step)
            continue
        run_step(run, result, step, index, len(main))
        stopped = step.status == StepState.FAILED
    recovery = [s for s in steps if s.phase == Phase.ON_FAILURE]
    if stopped and recovery:
        run.notice(f"a step failed: running on_failure steps {', '.join(s.name for s in recovery)}")
        for index, step in enumerate(recovery, 1):
            run_step(run, result, step, index, len(recovery))
    for step in recovery:
        if step.status == StepState.NOT_RUN:
            step.note = "ran only after a failure"


def run_step(run: RunContext, result: RunResult, step: StepResult, index: int, total: int) -> None:
    """One step (run/step.py); a failure the step allows is recorded as failed-allowed."""
    position = result.steps.index(step) + 1
    workflow = result.name if result.kind == RunKind.WORKFLOW else None
    execute_step(run, step, position, workflow, index, total, run_sliced if step.plan.slices > 1 else None)
    if step.status == StepState.FAILED and step.plan.allow_failure:
        step.status = StepState.FAILED_ALLOWED
        update_status(run, position, step)


def mark_not_run(run: RunContext, result: RunResult) -> None:
    """After an interrupt: the step that was running has its end recorded (also when the signal came
    between its start's write and its attempt, or after its attempt and before its end's write: found by
    the signal stress test, such a step stayed 'running' in a finished record); what did not run is
    skipped (main steps) or stays not run (on_failure)."""
    if run.step_open is not None:
        position, step = run.step_open
        if step.status in (StepState.NOT_RUN, StepState.RUNNING):
            exc = sys.exc_info()[1]
            stop = interrupt_in(exc)
            step.status = StepState.INTERRUPTED
            step.message = run.interrupt_message(stop) if stop is not None \
                else run.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}")
        record_step(run, step, position)
    for position, step in enumerate(result.steps, 1):
        if step.status in (StepState.NOT_RUN, StepState.RUNNING):
            step.status = StepState.SKIPPED if step.phase == Phase.MAIN else StepState.NOT_RUN
            update_status(run, position, step)
    run.notice(f"run {run.run_id} interrupted; recorded as interrupted")


def update_status(run: RunContext, position: int, step: StepResult) -> None:
    assert run.store is not None and run.run_id is not None
    run.store.update_step(run.run_id, position, status=step.status)


__all__ = ["drive"]
