"""One step of a run: its attempts (timeout, retries), its output, its record.

``execute_step`` marks the step running, runs attempt after attempt until one succeeds or none is
left, and records the step's end whatever happens (also on an interrupt, which it re-raises with the
step marked interrupted). Each attempt is one action process (runtime/execute.py); its event stream
(runtime/events.py) gives the hosts' counts and, on failure, the failed task and host.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from polycrate import ansi
from polycrate.errors import interrupt_in
from polycrate.run import failure as failure_text
from polycrate.run.context import RunContext
from polycrate.runtime.action import ActionRequest
from polycrate.runtime.events import if_stopped, read_events
from polycrate.runtime.execute import run_action_process
from polycrate.runtime.process import ActionTimedOut
from polycrate.states import StepState

if TYPE_CHECKING:
    from collections.abc import Callable

    from polycrate.history.protocol import LogWriter
    from polycrate.run.failure import StepEvents
    from polycrate.run.request import StepResult

    StepRunner = Callable[[RunContext, StepResult, "str | None", "StepOutput", Path], None]

ERROR_MARKS = ("[ERROR]", "ERROR!", "FATAL", "Origin:")  # Ansible's own error lines, for the failure's text
ALIVE_SECONDS = 5.0  # how stale a silent step's sign of life may be (StepOutput.alive)


class StepOutput:
    """The step's output line by line: masked, shown (the toolchain's known warnings in the log only), and
    logged with its colours (SGR codes: the web page renders them; every plain reader strips them); the last
    lines and Ansible's error lines are kept as plain text for the failure's text."""

    def __init__(self, run: RunContext, log: LogWriter) -> None:
        from polycrate.run.viewer import NoiseFilter

        self.run = run
        self.log = log
        self.noise = NoiseFilter()
        self.last_lines: list[str] = []
        self.error_lines: list[str] = []
        self.seen = time.monotonic()

    def __call__(self, line: str) -> None:
        kept = ansi.keep_colour(line)  # the log keeps colours, no other escape code
        shown = self.run.mask(line)
        logged = shown if kept == line else self.run.mask(kept)
        line = ansi.strip(logged)  # messages (the failure's text) keep plain text
        if self.noise.shown(line):
            self.run.reporter.output(shown)  # as the action printed it: the reporter decides about escape codes
        self.log.write(logged)
        if line.strip():
            self.last_lines.append(line)
            del self.last_lines[:-5]
            if line.lstrip().startswith(ERROR_MARKS):
                self.error_lines.append(line)
                del self.error_lines[:-20]

    def alive(self) -> None:
        """The step runs, silently: its log is touched at most every ALIVE_SECONDS, the sign of life a run killed
        without a word is ended at (history.store.found_gone)."""
        now = time.monotonic()
        if now - self.seen >= ALIVE_SECONDS:
            self.seen = now
            self.log.touch()

    def new_attempt(self) -> None:
        self.last_lines.clear()
        self.error_lines.clear()


def execute_step(run: RunContext, step: StepResult, position: int, workflow: str | None, index: int,
                 total: int, attempts: StepRunner | None = None) -> None:
    """Run one step with its timeout and retries (``attempts``, run_attempts by default; a sliced step's
    is run/slicing.py's); record it. KeyboardInterrupt marks it interrupted."""
    store, run_id = run.store, run.run_id
    assert store is not None and run_id is not None  # steps run after the record opened
    action = run.ws.blocks[step.block].actions[step.action]
    run.current_step = step.name
    run.reporter.step_started(step, index, total)
    if run.options.check and action.type == "script":
        step.status = StepState.SKIPPED_CHECK
        step.note = "script actions do not run in check mode"
        store.update_step(run_id, position, status=step.status, note=step.note)
        run.reporter.step_finished(step, index, total)
        return
    log = store.step_log(run_id, position, step.name)
    started = time.monotonic()
    run.step_open = (position, step)  # from here a stop anywhere ends with this step's end recorded (drive.py)
    store.update_step(run_id, position, status=StepState.RUNNING, started=time.time())
    events_dir = Path(tempfile.mkdtemp(prefix="polycrate-events-", dir=run.container.folder if run.container else None))
    try:
        (attempts or run_attempts)(run, step, workflow, StepOutput(run, log), events_dir)
    finally:
        step.duration = time.monotonic() - started
        log.close()
        shutil.rmtree(events_dir, ignore_errors=True)
        record_step(run, step, position)
    run.reporter.step_finished(step, index, total)


def run_attempts(run: RunContext, step: StepResult, workflow: str | None, output: StepOutput,
                 events_dir: Path, limit: str | None = None) -> None:
    """Attempt after attempt, `retry_delay` apart, until one succeeds or `retries` are used up; ``limit``
    (a slice's hosts) replaces the run's --limit."""
    attempts = 1 + step.plan.retries
    delay = step.plan.retry_delay
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            run.notice(f"step {step.name}: attempt {attempt} of {attempts} in {delay:g}s")
            output.log.write(f"--- polycrate: attempt {attempt} of {attempts} ---")
            if delay:
                wait_to_retry(run, step, delay, attempts)
        step.attempts = attempt  # counted once it starts: a stop during the delay leaves the ones that ran
        events = events_dir / f"attempt-{attempt}.jsonl"
        request = action_request(run, step, workflow, events, output, limit)
        if request is None or run_attempt(run, step, request, output, events):
            break


def wait_to_retry(run: RunContext, step: StepResult, delay: float, attempts: int) -> None:
    """`retry_delay` after a failed attempt. A stop here interrupts the step (its retries were not used up: it
    might have succeeded), and its message keeps why the last attempt failed."""
    try:
        time.sleep(delay)
    except BaseException as exc:
        stop = interrupt_in(exc)
        said = (run.interrupt_message(stop) if stop is not None
                else run.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}"))
        step.status = StepState.INTERRUPTED
        step.message = f"{said} while waiting to retry (attempt {step.attempts} of {attempts} failed: {step.message})"
        raise


def action_request(run: RunContext, step: StepResult, workflow: str | None, events: Path,
                   output: StepOutput, limit: str | None = None) -> ActionRequest | None:
    """What the runtime gets for one attempt; None (the step failed) when a script's templates do not fill."""
    request = run.action_request(step.block, step.action, workflow, step.name, attempt=True,
                                 timeout=step.plan.timeout, events_file=events, limit=limit)
    action = request.action
    if action.type != "script":
        return request
    from polycrate.errors import ConfigError
    from polycrate.runtime.script import rendered_script

    try:  # its Go templates, filled in once for every attempt
        return replace(request, script=rendered_script(request))
    except ConfigError as exc:
        step.status = StepState.FAILED
        step.exit_code = None
        step.message = run.mask(str(exc))
        output(f"polycrate: {step.message}")
        return None


def run_attempt(run: RunContext, step: StepResult, request: ActionRequest, output: StepOutput,
                events: Path) -> bool:
    """One attempt, one action process; True when it succeeded. An interrupt marks the step and re-raises."""
    run.reporter.attempt_started(step, events if request.action.type == "ansible" else None)
    output.new_attempt()
    timed_out = False
    try:
        step.exit_code = run_action_process(request, output, output.alive)
    except ActionTimedOut as exc:
        timed_out = True
        step.exit_code = None
        output(f"polycrate: step {step.name} {exc}; stopped")
    except BaseException as exc:
        step.status = StepState.INTERRUPTED
        step.hosts, _failure = read_events(events)
        stop = interrupt_in(exc)
        said = left(run, events)
        step.message = (run.interrupt_message(stop) if stop is not None
                        else run.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}")) + said
        if said:  # at the terminal too, where the stop was asked for (the record has it in the step's message)
            try:
                run.reporter.notice(f"step {step.name} stopped{said}")
            except Exception:
                pass
        raise
    step.hosts, failure = read_events(events)
    seen = failure_text.read_step_events(events)
    no_hosts = None if step.plan.allow_no_hosts else failure_text.describe_no_hosts(seen)
    if step.exit_code == 0 and not timed_out and not no_hosts:
        step.status = StepState.SUCCEEDED
        step.failed_task = step.failed_host = step.message = None
        return True
    step.status = StepState.FAILED
    step.failed_task = failure["task"] if failure else None
    step.failed_host = failure["host"] if failure else None
    message = failure_message(step, request, output, failure, seen, timed_out, no_hosts)
    step.message = message + left(run, events) if timed_out else run.mask(message)
    return False


def left(run: RunContext, events: Path) -> str:
    """What the playbook said a stop at that moment would leave on each host (a service it stopped, a database
    half-replaced: runtime/events.py if_stopped), for the message of a step that was stopped; "" when it said
    nothing."""
    said = if_stopped(events)
    return run.mask(": left " + "; ".join(said)) if said else ""


def failure_message(step: StepResult, request: ActionRequest, output: StepOutput, failure: dict[str, str] | None,
                    seen: StepEvents, timed_out: bool, no_hosts: str | None) -> str:
    """Why the attempt failed, in one message (run/failure.py words it)."""
    if timed_out:
        return f"timed out after {step.plan.timeout:g}s"
    if step.exit_code == 0 and no_hosts:
        return no_hosts
    if request.action.type == "script":
        return failure_text.describe_script(request.script or request.action.script, step.exit_code, seen,
                                            output.last_lines)
    return failure_text.describe_ansible(step.exit_code, failure, seen, output.error_lines or output.last_lines)


def record_step(run: RunContext, step: StepResult, position: int) -> None:
    """The step's end in the store; a store that fails here does not change how the step ended."""
    store, run_id = run.store, run.run_id
    assert store is not None and run_id is not None
    try:
        store.set_hosts(run_id, position, step.hosts)
        store.update_step(
            run_id, position, status=step.status, exit_code=step.exit_code, attempts=step.attempts,
            ended=time.time(), duration=round(step.duration, 3), failed_task=step.failed_task,
            failed_host=step.failed_host, message=step.message,
        )
        run.step_open = None
    except Exception:
        pass


__all__ = ["StepOutput", "execute_step"]
