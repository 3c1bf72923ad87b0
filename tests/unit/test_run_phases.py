"""The engine stays split by phase: no long function in run/, and the after-run phases keep their
declared order, each one's failure a notice that does not stop the next."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from polycrate.run import finish
from polycrate.run.finish import AFTER_RUN, AfterRun, AfterRunPhase, after_run
from polycrate.run.request import RunResult
from polycrate.states import RunKind, RunState

RUN = Path(__file__).resolve().parents[2] / "src" / "polycrate" / "run"

# A function in run/ that grows past this is a phase doing two things: split it (the engine's
# _execute was 151 lines before the split; the longest function in run/ after it has 41).
MAX_LINES = 50


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """Every function (methods and nested ones included) longer than `limit` lines, its docstring counted."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, length))
    return found


def test_no_function_in_run_is_longer_than_the_limit():
    modules = sorted(RUN.glob("*.py"))
    assert {"engine.py", "opening.py", "drive.py", "step.py", "finish.py"} <= {m.name for m in modules}
    too_long = {m.name: found for m in modules if (found := long_functions(m.read_text(), MAX_LINES))}
    assert too_long == {}


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    source = f"class C:\n    def short(self):\n        return 1\n\n\ndef long():\n{body}\n    return x0\n"
    assert long_functions(source, MAX_LINES) == [("long", MAX_LINES + 2)]


def test_the_after_run_phases_are_declared_in_this_order():
    assert [(p.name, p.work) for p in AFTER_RUN] == [
        ("retention", finish.prune_old_runs),
        ("metrics", finish.write_metrics),
        ("event", finish.submit_event),
        ("auto-commit", finish.auto_commit),
        ("run store", finish.read_record),
        ("webhooks", finish.send_webhooks),
        ("notifications", finish.send_notifications),
        ("run store", finish.reread_record),
    ]


class Notices:
    """What after_run needs of a run when a phase fails: somewhere to say it."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def notice(self, message: str) -> None:
        self.said.append(message)


def test_a_phase_that_raises_is_a_notice_and_the_next_phase_runs():
    ran: list[str] = []
    result = RunResult(RunKind.WORKFLOW, "nightly", status=RunState.SUCCEEDED)

    def phase(name: str, fails: BaseException | None = None) -> AfterRunPhase:
        def work(after: AfterRun) -> None:
            ran.append(name)
            if fails is not None:
                raise fails
        return AfterRunPhase(name, work, "went wrong: {exc}")

    quiet = phase("quiet", OSError("gone"))
    quiet = AfterRunPhase(quiet.name, quiet.work, None)  # a phase whose failure says nothing
    run = Notices()
    after_run(AfterRun(run, result), (phase("one"), phase("two", OSError("disk full")), quiet,
                                      phase("three", ValueError("bad {braces}")), phase("four")))
    assert ran == ["one", "two", "quiet", "three", "four"]
    assert run.said == ["two: went wrong: disk full", "three: went wrong: bad {braces}"]
    assert result.status == RunState.SUCCEEDED  # the phases never touch the outcome


def test_an_interrupt_in_a_phase_is_not_swallowed():
    ran: list[str] = []

    def interrupted(after: AfterRun) -> None:
        raise KeyboardInterrupt

    phases = (AfterRunPhase("one", interrupted, "x: {exc}"), AfterRunPhase("two", lambda a: ran.append("two"), None))
    with pytest.raises(KeyboardInterrupt):
        after_run(AfterRun(Notices(), RunResult(RunKind.ACTION, "b a")), phases)
    assert ran == []


def test_a_stop_after_the_outcome_is_recorded_skips_the_phases_asked_for_but_not_the_read_back():
    """run/stopping.py: once the record says how the run ended, a stop signal is noted, not raised; the phases
    not yet begun are skipped, but for the record's read-back, and one notice names those that were asked for."""
    import signal

    from polycrate.run import stopping

    ran: list[str] = []
    result = RunResult(RunKind.WORKFLOW, "nightly", status=RunState.FAILED)

    def phase(name: str, asked: bool = True, reads: bool = False, stops: bool = False) -> AfterRunPhase:
        def work(after: AfterRun) -> None:
            ran.append(name)
            if stops:  # the signal, as the handler takes it, while this phase runs
                assert stopping.stop_after_settled(signal.SIGTERM)
        return AfterRunPhase(name, work, "x: {exc}", lambda after: asked, reads)

    run = Notices()
    stopping.settle()
    try:
        after_run(AfterRun(run, result), (phase("retention", stops=True), phase("metrics", asked=False),
                                          phase("read", reads=True), phase("webhooks"), phase("mail")))
        assert stopping.stop_after_settled(signal.SIGINT)  # a second one is noted too, and said once
    finally:
        stopping.unsettle()
    assert ran == ["retention", "read"]
    assert run.said == ["SIGTERM came after the run was recorded as failed: that result stands; not done: webhooks, mail"]
    assert stopping.late_stop() is None and not stopping.stop_after_settled(signal.SIGINT)  # a new run: it interrupts


def test_a_phase_not_asked_for_does_not_run():
    ran: list[str] = []
    phases = (AfterRunPhase("one", lambda a: ran.append("one"), None, lambda a: False),
              AfterRunPhase("two", lambda a: ran.append("two"), None))
    after_run(AfterRun(Notices(), RunResult(RunKind.ACTION, "b a")), phases)
    assert ran == ["two"]
