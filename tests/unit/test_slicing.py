"""run/slicing.py's pure rules: how hosts split into parts, how the parts' outcomes combine into the step's."""
from __future__ import annotations

from polycrate.run.request import PlannedStep, StepResult
from polycrate.run.slicing import SliceOutcome, combine, split
from polycrate.states import StepState


def test_split_gives_contiguous_near_equal_parts_in_order_and_never_an_empty_one():
    hosts = [f"h{i}" for i in range(1, 8)]
    assert split(hosts, 3) == [("h1", "h2", "h3"), ("h4", "h5"), ("h6", "h7")]
    assert split(hosts, 7) == [(h,) for h in hosts]
    assert split(hosts[:2], 5) == [("h1",), ("h2",)]  # fewer hosts than slices: fewer parts
    assert split([], 3) == []
    assert [h for part in split(hosts, 4) for h in part] == hosts  # every host exactly once


def _outcome(index: int, hosts: tuple[str, ...], status: StepState, counts: dict[str, dict[str, int]],
             **more: object) -> SliceOutcome:
    return SliceOutcome(index, hosts, status, counts=counts, attempts=1, **more)  # type: ignore[arg-type]


def test_combine_sums_counts_and_fails_the_step_naming_the_failed_slice():
    step = StepResult(PlannedStep("s", "b", "a", slices=2))
    combine(step, [
        _outcome(1, ("a",), StepState.SUCCEEDED, {"a": {"ok": 2, "changed": 1, "failed": 0}}, exit_code=0),
        _outcome(2, ("b",), StepState.FAILED, {"b": {"ok": 1, "failed": 1}}, exit_code=2, failed_task="t",
                 failed_host="b", message="task t failed on b"),
    ], 2)
    assert step.status == StepState.FAILED and step.exit_code == 2
    assert (step.failed_task, step.failed_host) == ("t", "b")
    assert step.message == "slice 2 of 2 (hosts b) failed: task t failed on b"
    assert step.hosts == {"a": {"ok": 2, "changed": 1, "failed": 0}, "b": {"ok": 1, "failed": 1}}


def test_combine_of_all_succeeded_slices_succeeds_and_a_missing_slice_does_not():
    parts = [_outcome(i, (f"h{i}",), StepState.SUCCEEDED, {f"h{i}": {"ok": 1}}, exit_code=0) for i in (1, 2)]
    step = StepResult(PlannedStep("s", "b", "a", slices=2))
    combine(step, parts, 2)
    assert step.status == StepState.SUCCEEDED and step.exit_code == 0 and step.message is None
    combine(step, parts[:1], 2)
    assert step.status == StepState.FAILED and step.message == "1 of 2 slices did not report"


def test_combine_of_a_stopped_slice_is_interrupted():
    step = StepResult(PlannedStep("s", "b", "a", slices=2))
    combine(step, [_outcome(1, ("a",), StepState.SUCCEEDED, {}, exit_code=0),
                   _outcome(2, ("b",), StepState.INTERRUPTED, {}, message="interrupted")], 2)
    assert step.status == StepState.INTERRUPTED
