"""The end of a run: its outcome recorded, then the after-run phases in their declared order.

``finish`` first closes the run's record (status, exit code, the failed step): from then on the
run's outcome is fixed. The after-run phases (``AFTER_RUN``) follow, each a small function that
does nothing when the workspace does not ask for it:

1. retention: old runs pruned (`history: keep_runs / keep_days`);
2. metrics: the Prometheus textfile (workflows, not --check);
3. event: the real Polycrate's event of the run (.logs/ or a webhook: --event-handler);
4. auto-commit: the workspace committed after the run (--auto-commit);
5. record: the finished run read back (what `-o json`, webhooks and notifications carry);
6. webhooks: the run's JSON body POSTed (`webhooks:`);
7. notifications: mail and chat, built from the same body (`notifications:`);
8. record again: re-read with the webhooks' and notifications' notices.

A phase that raises is a notice of the run ("metrics: could not write the textfile: ..."); the
next phase runs, and the recorded outcome stays what it was.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polycrate.run.context import RunContext, masked
from polycrate.run.request import RunResult
from polycrate.states import RunKind, RunState, StepState
from polycrate.config.record import MutableRecord, Record, record


@dataclass(eq=False, repr=False)
class AfterRun(MutableRecord):
    """What the after-run phases share: the run, its result, and the webhook body (built once)."""

    run: RunContext
    result: RunResult
    body: dict[str, Any] | None = None

    def webhook_body(self) -> dict[str, Any]:
        if self.body is None:
            from polycrate import contract

            assert self.result.record is not None
            self.body = masked(self.run.masker, contract.webhook_body(self.result.record, self.run.ws.name))
        return self.body


@record(frozen=True, eq=False, repr=False)
class AfterRunPhase(Record):
    name: str  # the notice's first word when the phase fails
    work: Callable[[AfterRun], None]
    failed: str | None  # what the notice says went wrong (None: nothing is said)
    asked: Callable[[AfterRun], bool] = lambda after: True  # whether the workspace or the command asks for it
    reads: bool = False  # it only reads the record back (done also after a late stop signal)


def finish(run: RunContext, result: RunResult, started_at: float, interrupted: bool,
           phases: tuple[AfterRunPhase, ...] | None = None) -> None:
    """Close the record; then the after-run phases: none of them may change the result."""
    record_outcome(run, result, started_at, interrupted)
    result.workspace = run.ws.name
    after_run(AfterRun(run, result), AFTER_RUN if phases is None else phases)


def record_outcome(run: RunContext, result: RunResult, started_at: float, interrupted: bool) -> None:
    """The run's status (polycrate.success decides it from the steps) and its failed step, in the record."""
    from polycrate import success
    from polycrate.run.stopping import settle, signals_deferred

    result.duration = time.monotonic() - started_at
    result.status = success.run_state(((s.status, s.phase) for s in result.steps), interrupted)
    failed = result.failed_step or next((s for s in result.steps if s.status == StepState.INTERRUPTED), None)
    store, run_id = run.store, run.run_id
    assert store is not None and run_id is not None  # the record is open (run/opening.py)
    with signals_deferred():  # a second signal waits for the record (run/stopping.py)
        store.finish_run(
            run_id,
            status=result.status,
            exit_code=success.exit_code_of(result.status),
            failed_step=failed.name if failed else None,
            failed_task=failed.failed_task if failed else None,
            failed_host=failed.failed_host if failed else None,
            message=failed.message if failed else None,
        )
        run.finished = True
        if result.status != RunState.INTERRUPTED:
            settle()  # a signal from here on (also one held just now) ends nothing more (run/stopping.py)


def record_not_started(run: RunContext, result: RunResult, only_step: str | None, exc: Exception) -> None:
    """A scheduled run (a timer's, a cron entry's) that stopped before its record opened: its workflow already
    running (the lock), its preflight failed, a prompt nobody can answer. Nobody watches it, so the history says
    so (a failed run that never started, with the reason) and the alerts tell (NOT_STARTED); the error itself
    goes on as it would have (one line, the exit code)."""
    from polycrate.errors import SCHEDULE, LockedError, PolycrateError
    from polycrate.history import open_store
    from polycrate.history.store import claim_identity
    from polycrate.run.stopping import settle, signals_deferred

    if run.secrets is None:  # the notifications' credentials (secrets.poly), when the failure came before them
        from polycrate.run.opening import open_secrets

        try:
            open_secrets(run)
        except Exception:
            pass  # the notifications that need a secret say so; the record stands
    # said to the record, not to a terminal: no --wait, no --force (LockedError: who holds it, its path aside)
    why = exc.held if isinstance(exc, LockedError) else exc.said_to(SCHEDULE) if isinstance(exc, PolycrateError) \
        else str(exc)
    with signals_deferred():
        run.store = store = open_store(run.ws.root, backend=run.options.backend, workspace=run.ws.name)
        run_id, user = claim_identity(time.time(), run.options.run_id, run.options.launched_by)
        run.run_id = run_id
        store.record_never_started(run_id, workflow=result.name, only_step=only_step, user=user, status=RunState.FAILED,
                                   message=run.mask(f"the scheduled run did not start: {why}"))
        run.finished = True
        settle()  # the record is written: a signal now does not turn the refusal into an interrupt
    result.run_id, result.status, result.workspace = run_id, RunState.FAILED, run.ws.name
    after_run(AfterRun(run, result), NOT_STARTED)


def after_run(after: AfterRun, phases: tuple[AfterRunPhase, ...]) -> None:
    """Each phase in turn; one that raises becomes a notice, and the next one runs. After a stop signal that
    came once the outcome was recorded (run/stopping.py), the phases not yet begun are skipped but for the
    record's read-back, and a notice names them: the recorded result stands."""
    from polycrate.run.stopping import late_stop

    stopped = False
    for index, phase in enumerate(phases):
        if not phase.asked(after):
            continue
        if not stopped and (sig := late_stop()) is not None:
            stopped = True
            left = [p.name for p in phases[index:] if not p.reads and p.asked(after)]
            if left:
                after.run.notice(f"{sig} came after the run was recorded as {after.result.status}: that result "
                                 f"stands; not done: {', '.join(dict.fromkeys(left))}")
        if stopped and not phase.reads:
            continue
        try:
            phase.work(after)
        except Exception as exc:
            if phase.failed is not None:
                after.run.notice(f"{phase.name}: {phase.failed.format(exc=exc)}")


def prune_old_runs(after: AfterRun) -> None:
    settings, store = after.run.ws.run_settings, after.run.store
    if store is not None:
        store.prune(settings.keep_runs, settings.keep_days)


def retention_asked(after: AfterRun) -> bool:
    settings = after.run.ws.run_settings
    return bool(settings.keep_runs or settings.keep_days)


def write_metrics(after: AfterRun) -> None:
    run, settings = after.run, after.run.ws.run_settings
    from polycrate.notify import metrics

    assert run.store is not None
    path = metrics.metrics_path(run.ws.root, settings.metrics_path)
    metrics.write_atomically(path, metrics.render(run.ws.name, run.store.workflow_metrics()))


def submit_event(after: AfterRun) -> None:
    """The real Polycrate's event of the run: a YAML file under .logs/ or a POST (notify/polycrate_event.py)."""
    run, result, options = after.run, after.result, after.run.options
    from polycrate.notify import polycrate_event as runevents

    assert run.store is not None and run.run_id is not None and options.event_handler  # asked (AFTER_RUN)
    record = run.store.get_run(run.run_id)
    snap = runevents.run_snapshot(
        run.ws, options, run.runtime.name if run.runtime is not None else "local",
        workflow=result.name if result.kind == RunKind.WORKFLOW else None,
        block=record.block, action=record.action, only_step=record.only_step)
    doc = masked(run.masker, runevents.event_document(
        ws=run.ws, result=result, record=record, store=run.store, options=options, snapshot=snap,
        commit_sha=head_commit(run)))
    runevents.submit(doc, run.ws.root, options.event_handler, options.event_endpoint, run.notice,
                     run.ws.layout.logs_root)


def head_commit(run: RunContext) -> str:
    """The workspace's commit before the auto-commit, for the event ("" outside a git repository)."""
    from polycrate.config import gitrepo

    try:
        return gitrepo.head(run.ws.root) if gitrepo.is_repo(run.ws.root) else ""
    except Exception:
        return ""


def auto_commit(after: AfterRun) -> None:
    run, result = after.run, after.result
    from polycrate.notify import polycrate_event as runevents

    what = f"workflow {result.name}" if result.kind == RunKind.WORKFLOW else f"action {result.name}"
    message = f"[polycrate] Auto-Commit after run {run.run_id} ({what}: {result.status})"
    runevents.auto_commit(run.ws.root, message, run.options.ssh_key, run.notice)


def read_record(after: AfterRun) -> None:
    """The run as recorded: what -o json, webhooks and notifications carry."""
    assert after.run.store is not None and after.run.run_id is not None
    after.result.record = after.run.store.get_run(after.run.run_id)


def send_webhooks(after: AfterRun) -> None:
    if after.result.record is None:
        return
    from polycrate.notify import webhooks

    webhooks.send_all(after.run.ws.run_settings.webhooks, after.webhook_body(), after.run.notice)


def send_notifications(after: AfterRun) -> None:
    """Mail and chat, built from the webhooks' body; their credentials come from secrets.poly."""
    run, targets = after.run, after.run.ws.run_settings.notifications
    if after.result.record is None:
        return
    from polycrate.notify import channels

    poly = run.secrets.poly if run.secrets is not None else None
    secrets = channels.Secrets(poly.config if poly is not None else None, run.masker)
    channels.send_all(targets, after.webhook_body(), run.notice, secrets)


def reread_record(after: AfterRun) -> None:
    """Read back once more after webhooks or notifications: the record now holds their notices."""
    if after.result.record is not None:
        read_record(after)


AFTER_RUN: tuple[AfterRunPhase, ...] = (
    AfterRunPhase("retention", prune_old_runs, "could not remove old runs: {exc}", retention_asked),
    AfterRunPhase("metrics", write_metrics, "could not write the textfile: {exc}",
                  lambda a: (a.result.kind == RunKind.WORKFLOW and a.run.ws.run_settings.metrics_enabled
                             and not a.run.options.check)),
    AfterRunPhase("event", submit_event, "could not be written: {exc}; the run's result stands",
                  lambda a: bool(a.run.options.event_handler)),
    AfterRunPhase("auto-commit", auto_commit, "nothing committed: {exc}", lambda a: bool(a.run.options.auto_commit)),
    AfterRunPhase("run store", read_record, "could not read the finished run back: {exc}", reads=True),
    AfterRunPhase("webhooks", send_webhooks, "not sent: {exc}", lambda a: bool(a.run.ws.run_settings.webhooks)),
    AfterRunPhase("notifications", send_notifications, "not sent: {exc}",
                  lambda a: bool(a.run.ws.run_settings.notifications)),
    AfterRunPhase("run store", reread_record, None,  # as before the split: the first read-back stands
                  lambda a: bool(a.run.ws.run_settings.webhooks or a.run.ws.run_settings.notifications), reads=True),
)

# a scheduled run that never started (record_not_started): what tells someone, nothing that runs or commits
NOT_STARTED: tuple[AfterRunPhase, ...] = tuple(p for p in AFTER_RUN if p.work not in (prune_old_runs, submit_event,
                                                                                     auto_commit))


__all__ = ["AFTER_RUN", "NOT_STARTED", "AfterRun", "AfterRunPhase", "after_run", "finish", "record_not_started"]
