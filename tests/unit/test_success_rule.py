"""The one definition of a run's outcome (polycrate.success.run_state) and the store that keeps to it."""
from __future__ import annotations

import pytest

from polycrate import success
from polycrate.history import RunStore
from polycrate.states import Phase, RunKind, RunState, StepState

M, F = Phase.MAIN, Phase.ON_FAILURE


@pytest.mark.parametrize("steps, interrupted, expected", [
    ([(StepState.SUCCEEDED, M), (StepState.SUCCEEDED, M)], False, RunState.SUCCEEDED),
    ([(StepState.SUCCEEDED, M), (StepState.FAILED_ALLOWED, M), (StepState.NOT_RUN, F)], False, RunState.SUCCEEDED),
    ([(StepState.SUCCEEDED_BEFORE, M), (StepState.SUCCEEDED, M)], False, RunState.SUCCEEDED),
    ([(StepState.SKIPPED_CHECK, M)], False, RunState.SUCCEEDED),
    ([(StepState.SUCCEEDED, M), (StepState.FAILED, M), (StepState.SKIPPED, M), (StepState.SUCCEEDED, F)], False,
     RunState.FAILED),
    # the closed pipe's old record: an interrupted step and one not run, with nobody saying "interrupted"
    ([(StepState.INTERRUPTED, M), (StepState.NOT_RUN, M)], False, RunState.INTERRUPTED),
    ([(StepState.RUNNING, M)], False, RunState.INTERRUPTED),
    ([(StepState.SUCCEEDED, M), (StepState.NOT_RUN, M)], False, RunState.FAILED),  # stopped without a word
    ([(StepState.SUCCEEDED, M), (StepState.SKIPPED, M)], False, RunState.FAILED),
    ([(StepState.SUCCEEDED, M)], True, RunState.INTERRUPTED),
    ([], False, RunState.FAILED),
    ([("a-state-of-a-newer-polycrate", "main")], False, RunState.FAILED),
])
def test_run_state(steps, interrupted, expected):
    assert success.run_state(steps, interrupted) == expected
    assert success.exit_code_of(expected) == {RunState.SUCCEEDED: 0, RunState.FAILED: 1,
                                              RunState.INTERRUPTED: 130}[expected]


def test_the_store_never_keeps_succeeded_for_a_run_with_an_interrupted_step(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.start_run(kind=RunKind.WORKFLOW, name="slow", workflow="slow")
    store.add_steps(run_id, [
        {"position": 1, "name": "tick", "block": "s", "action": "tick", "status": StepState.INTERRUPTED},
        {"position": 2, "name": "done", "block": "s", "action": "done", "status": StepState.NOT_RUN},
    ])
    store.finish_run(run_id, status=RunState.SUCCEEDED, exit_code=0)  # what the closed pipe used to store
    run = store.get_run(run_id)
    assert run["status"] == RunState.INTERRUPTED and run["exit_code"] == 130
    assert run["workflow_success"] is False
    assert store.latest_full_run("slow")["status"] == RunState.INTERRUPTED  # what --resume reads

    ok = store.start_run(kind=RunKind.WORKFLOW, name="slow", workflow="slow")
    store.add_steps(ok, [{"position": 1, "name": "tick", "block": "s", "action": "tick",
                          "status": StepState.SUCCEEDED}])
    store.finish_run(ok, status=RunState.SUCCEEDED, exit_code=0)
    assert store.get_run(ok)["status"] == RunState.SUCCEEDED and store.get_run(ok)["workflow_success"] is True
    store.close()
