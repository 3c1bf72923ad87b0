"""The end of a run as people read it: one layout for a workflow and for a single action.

    workflow nightly failed after 6.1s (run 20261201-213228-377189)
      STEP    STATUS                ATTEMPTS  DURATION
      backup  succeeded             1         2.1s
      update  failed (exit 2)       1         3.0s
      verify  skipped               -         -
      notify  succeeded             1         1.0s  [on_failure]
      total                                   6.1s
    failed: step update, task 'check free disk space' on localhost
      disk /var is full on purpose
    next: fix the cause, then resume:  polycrate workflows run nightly --resume
          details:                     polycrate runs show 20261201-213228-377189

The failure's wording (the message itself) comes from the engine; this module owns the layout.
"""
from __future__ import annotations

from typing import TextIO

from polycrate.cli.render import GREEN, RED, YELLOW, state_text
from polycrate.states import Phase, StepState

NOT_RAN = (StepState.SKIPPED, StepState.NOT_RUN, StepState.SUCCEEDED_BEFORE, StepState.SKIPPED_CHECK)


def status_colour(status: str) -> str:
    status = StepState(status)
    if status in (StepState.SUCCEEDED, StepState.SUCCEEDED_BEFORE):
        return GREEN
    if status in (StepState.FAILED, StepState.FAILED_ALLOWED, StepState.INTERRUPTED):
        return RED
    return YELLOW


def step_status_text(step) -> str:
    status = StepState(step.status)
    if status is StepState.SUCCEEDED_BEFORE:
        # "done before (run 20261201-...)", not "skipped": it is done, in the run that this one resumes
        return "done before" + (f" ({step.note.replace('succeeded in ', '')})" if step.note else "")
    word = state_text(status)
    if step.exit_code not in (None, 0) and status in (StepState.FAILED, StepState.FAILED_ALLOWED):
        return f"{word} (exit {step.exit_code})"
    return word


def _shown(step) -> bool:
    # on_failure steps appear only when they ran
    return not (step.phase == Phase.ON_FAILURE and step.status == StepState.NOT_RUN)


def render(result, stream: TextIO, paint=lambda text, colour: text, command: str | None = None) -> None:
    """The summary of `result` (engine.RunResult) on `stream`; `command` re-runs it (for the `next:` hint)."""
    failed = result.failed_step
    what = f"{result.kind} {result.name}" + (" (check mode)" if result.check else "")
    verdict = "succeeded" if result.ok else "failed"
    run = f" (run {result.run_id})" if result.run_id else ""
    print(f"{what} {paint(verdict, GREEN if result.ok else RED)} after {result.duration:.1f}s{run}", file=stream)
    steps = [s for s in result.steps if _shown(s)]
    rows = []
    for s in steps:
        ran = StepState(s.status) not in NOT_RAN
        rows.append((
            s.name,
            step_status_text(s),
            str(s.attempts) if ran and s.attempts else "-",
            f"{s.duration:.1f}s" if ran else "-",
            "[on_failure]" if s.phase == Phase.ON_FAILURE else "",
            s.status,
        ))
    headers = ("STEP", "STATUS", "ATTEMPTS", "DURATION")
    widths = [max([len(h)] + [len(r[i]) for r in rows] + ([len("total")] if i == 0 else [])) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), file=stream)
    for r in rows:
        status = paint(r[1].ljust(widths[1]), status_colour(r[5]))
        line = "  ".join([r[0].ljust(widths[0]), status, r[2].ljust(widths[2]), r[3].ljust(widths[3]), r[4]])
        print(("  " + line).rstrip(), file=stream)
    total = "  ".join(["total".ljust(widths[0]), "".ljust(widths[1]), "".ljust(widths[2]), f"{result.duration:.1f}s"])
    print(("  " + total).rstrip(), file=stream)
    if failed is not None:
        where = f", task '{failed.failed_task}' on {failed.failed_host}" if failed.failed_task else ""
        print(paint(f"failed: step {failed.name}{where}", RED), file=stream)
        for line in (failed.message or "").splitlines()[:10]:
            print(f"  {line}", file=stream)
    elif result.steps and result.steps[0].status == StepState.SKIPPED_CHECK and result.kind == "action":
        print(f"skipped: {result.steps[0].note}", file=stream)
    hints = []
    if not result.ok and command:
        if result.kind == "workflow":
            hints.append(("fix the cause, then resume:", f"{command} --resume"))
        else:
            hints.append(("fix the cause, then again:", command))
    if result.run_id:
        hints.append(("details:", f"polycrate runs show {result.run_id}"))
        if not result.ok:
            hints.append(("full log:", f"polycrate runs logs {result.run_id}"))
    if hints:
        width = max(len(label) for label, _ in hints)
        for i, (label, text) in enumerate(hints):
            print(f"{'next: ' if i == 0 else '      '}{label.ljust(width)}  {text}", file=stream)
