"""The one definition of a run's outcome (polycrate.success.run_state). That every store keeps to it:
tests/integration/test_runstore_conformance.py."""
from __future__ import annotations

import pytest

from polycrate import success
from polycrate.states import Phase, RunState, StepState

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
