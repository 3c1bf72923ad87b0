"""Executing actions and workflows: prompts, lock, run record, steps with their controls.

The path of one run: plan the steps; take the workflow's lock; open a run record
in the store; for each step: resolve block+action, run it through the runtime
(timeout, retries), record status, duration, per-host counts and the log; stop or
go on; run ``on_failure`` steps after a failure; finish the record; then the
after-run work that must never change the run's result: retention, metrics,
webhooks and notifications (mail, chat).

The engine never prints: it reports through a ``Reporter`` that the CLI supplies.
Every line, message and notice passes through one masking function (``_Run.mask``)
before it reaches the reporter, the store, the log or a webhook.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polycrate import ansi
from polycrate.run import failure as failure_text
from polycrate.runtime.ansible_options import AnsibleOptions
from polycrate.errors import EXIT_ACTION_FAILED, PolycrateError, interrupt_name
from polycrate.runtime.events import read_events
from polycrate.config.model import Workflow, Workspace
from polycrate.runtime.action import ActionRequest
from polycrate.runtime.execute import run_action_process
from polycrate.runtime.process import ActionTimedOut
from polycrate.run.plan import plan_prompts, plan_workflow, resume_point
from polycrate.run.request import Confirm, PlannedStep, Reporter, RunOptions, RunPrompt, RunResult, StepResult
from polycrate.states import Phase, RunKind, RunState, StepState
from polycrate.config.workspace import get_action, get_block, get_workflow
from polycrate.config.action_view import playbook_path

if TYPE_CHECKING:
    from polycrate.history.locking import RunLock
    from polycrate.history.protocol import RunStore
    from polycrate.history.records import RunRecord
    from polycrate.run.preflight import Report
    from polycrate.runtime.run_container import RunContainer
    from polycrate.runtime.ssh_masters import SSHSharing
    from polycrate.runtime.toolchain import Runtime
    from polycrate.runtime.zygote import EarlyZygote, Zygote
    from polycrate.secrets.masking import Masker
    from polycrate.secrets.runtime import RuntimeSecrets


class PromptDeclined(PolycrateError):
    exit_code = 1


class NothingToResume(PolycrateError):
    exit_code = EXIT_ACTION_FAILED


def _resumed_options(options: RunOptions, previous: RunRecord) -> RunOptions:
    """--resume runs the rest with the pass-through options the run was started with; other ones are refused."""
    from dataclasses import replace

    recorded = AnsibleOptions.from_record(dict(previous.ansible_options))
    if options.ansible.given and options.ansible != recorded:
        shown = " ".join(recorded.playbook_args()) or "none"
        raise PolycrateError(
            f"--resume reuses the Ansible options of run {previous.id} ({shown}); "
            "give none, or start a new run without --resume"
        )
    return replace(options, ansible=recorded)


def _ask(confirm: Confirm, prompts: list[RunPrompt]) -> None:
    """All prompts are answered before anything runs, so no run stops half-way for input."""
    for prompt in prompts:
        if not confirm(prompt):
            raise PromptDeclined(f"{prompt.asker}: not confirmed, nothing was run")


def masker_for(secrets: RuntimeSecrets | None = None) -> Masker:
    """The one masking function of a run: every value from the workspace's secrets becomes ********."""
    from polycrate.secrets.masking import Masker

    return secrets.masker if secrets is not None else Masker()


# --- one run ----------------------------------------------------------------------------------


class _Run:
    """The bookkeeping of one run: store rows, logs, masking, the lock."""

    def __init__(self, ws: Workspace, reporter: Reporter, options: RunOptions, runtime: Runtime | None,
                 early_zygote: EarlyZygote | None = None) -> None:
        from polycrate.run.viewer import GuardedReporter

        self.ws = ws
        self.early_zygote = early_zygote  # started by the caller while the workspace was read (runtime/zygote.py)
        # a closed stdout (`| head`, a closed terminal) never changes what the run does (run/viewer.py)
        self.reporter = GuardedReporter(reporter, self.viewer_gone)
        self.options = options
        self.runtime = runtime
        self.masker = masker_for()
        self.mask = self.masker.mask
        self.secrets: RuntimeSecrets | None = None
        self.store: RunStore | None = None
        self.run_id: str | None = None
        self.lock: RunLock | None = None
        self.zygote: Zygote | None = None  # the warm process a workflow's ansible steps fork from
        self.ssh_sharing: SSHSharing | None = None  # the run's SSH masters, closed with the run
        self.container: RunContainer | None = None  # the one container of a container run
        self.preflight: Report | None = None  # the run's preflight: how many hosts each action's plays target
        self.notices: list[str] = []
        self.unrecorded: list[str] = []  # notices from before the record opened
        self.current_step: str | None = None
        self.where: dict[str, str | None] = {}  # run/where.py: runtime, image, image_digest
        self.finished = False  # the record is closed (_finish); until then close() closes it

    def notice(self, message: str) -> None:
        message = self.mask(message)
        self.notices.append(message)
        self.reporter.notice(message)
        self._record_notice(message)

    def _record_notice(self, message: str) -> None:
        if self.store is not None and self.run_id is not None:
            try:
                self.store.add_notice(self.run_id, message)
            except Exception:  # the store is the record, not the run: never fail a run over it
                pass
        else:
            self.unrecorded.append(message)  # recorded when the run's record opens

    def viewer_gone(self, why: str) -> None:
        """The reporter's stream went away: say so in the record (nobody is watching any more)."""
        where = f" during step {self.current_step}" if self.current_step else ""
        logs = f" (polycrate runs logs {self.run_id})" if self.run_id else ""
        message = f"{why}{where}: the run went on to its end without a viewer; its output is in the step logs{logs}"
        self.notices.append(message)
        self._record_notice(message)

    def open_secrets(self) -> None:
        """Decrypt the workspace's secrets into a private folder for this run; merge secrets.poly
        values over the config; from here on every line we print or store is masked."""
        from polycrate.secrets import open_runtime_secrets
        from polycrate.config.workspace import with_secret_values

        folder = self.container.folder if self.container is not None else None  # the container sees it
        self.secrets = secrets = open_runtime_secrets(self.ws.root, list(self.ws.blocks), folder=folder)
        self.ws = with_secret_values(self.ws, secrets.poly)
        self.masker = masker_for(secrets)
        from polycrate.runtime.ansible_options import secret_values

        self.masker.update(secret_values(self.options.ansible.extra_vars))  # a launch's secret parameters
        self.mask = self.masker.mask

    def take_lock(self, key: str, what: str) -> None:
        from polycrate.history.locking import RunLock

        self.lock = lock = RunLock(self.ws.root, key, what)
        lock.acquire(wait=self.options.wait, on_wait=self.notice)

    def open(self, **record: Any) -> None:
        from polycrate.history import open_store
        from polycrate.run.where import runtime_fields

        self.store = store = open_store(self.ws.root, backend=self.options.backend, workspace=self.ws.name)
        self.where = runtime_fields(self.runtime)
        self.run_id = store.start_run(
            check=self.options.check, diff=self.options.diff, run_id=self.options.run_id,
            user=self.options.launched_by,
            ansible_options=_masked(self.masker, self.options.ansible.to_record()), runtime=self.where["runtime"],
            image=self.where["image"], image_digest=self.where["image_digest"], **record,
        )
        if self.lock is not None:
            self.lock.write_holder(self.run_id)
        for message in self.unrecorded:
            self._record_notice(message)
        self.unrecorded.clear()
        for message in store.recovered:  # loud, and kept with this run
            self.notice(message)

    def hosts_of(self, block: str, action: str) -> int | None:
        """The most hosts one play of the action targets, as the preflight counted them (forks)."""
        plays = [p for p in (self.preflight.plays if self.preflight is not None else ())
                 if p.get("block") == block and p.get("action") == action]
        return max((p.get("hosts") or 0 for p in plays), default=None)

    def start_ssh_sharing(self, planned: list[PlannedStep]) -> None:
        """One private folder of SSH ControlPersist masters for the run's ansible steps, so a later step
        reuses the connections of an earlier one (runtime/sshshare.py); local runtime only."""
        if self.runtime is not None and self.runtime.container:
            return
        if not any(self.ws.blocks[s.block].actions[s.action].type == "ansible" for s in planned):
            return
        from polycrate.runtime import ssh_masters as sshshare

        self.ssh_sharing = sshshare.start()

    def start_zygote(self, planned: list[PlannedStep], workflow: str | None) -> None:
        """Warm Ansible once for a run of two or more Ansible processes (the preflight, each ansible step's
        runs and retries; a single action with the preflight counts): each then forks from it instead of
        starting and importing ansible-core again (runtime/zygote.py)."""
        from polycrate.runtime.execute import start_zygote

        if self.runtime is not None and self.runtime.container:
            self.start_container(planned, workflow)
            return
        if not self.options.zygote:
            return
        steps = [s for s in planned if self.ws.blocks[s.block].actions[s.action].type == "ansible"]
        runs = sum(1 + s.retries for s in steps)
        if runs < (1 if self.options.preflight else 2):  # the preflight forks from it too
            return
        first = steps[0]
        block = self.ws.blocks[first.block]
        request = ActionRequest(ws=self.ws, block=block, action=block.actions[first.action], workflow=workflow,
                                step=first.name if workflow else None, runtime=self.runtime,
                                extra_env=dict(self.options.display_env), **action_settings(self.options),
                                ssh_sharing=self.ssh_sharing)
        try:
            self.zygote = start_zygote(request, self.early_zygote)
        except Exception:  # an optimisation: without it every step starts its own process
            self.zygote = None

    def close_record(self) -> None:
        """A record opened and not finished (a signal between opening it and the first step, or inside
        the finish) is finished here, as interrupted: a run is never left 'running' by a live polycrate."""
        store, run_id = self.store, self.run_id
        if store is None or run_id is None or self.finished:
            return
        import sys

        from polycrate.run.stopping import signals_deferred
        from polycrate.success import exit_code_of

        exc = sys.exc_info()[1]
        why = f"interrupted ({interrupt_name(exc) if exc is not None else 'SIGINT'})" \
            if isinstance(exc, KeyboardInterrupt) or exc is None \
            else self.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}")
        with signals_deferred():
            try:
                for step in store.get_run(run_id).steps:
                    if step.status == StepState.RUNNING:
                        store.update_step(run_id, step.position, status=StepState.INTERRUPTED,
                                          message=why)
                    elif step.status == StepState.NOT_RUN and step.phase == Phase.MAIN:
                        store.update_step(run_id, step.position, status=StepState.SKIPPED)
                store.finish_run(run_id, status=RunState.INTERRUPTED,
                                      exit_code=exit_code_of(RunState.INTERRUPTED), message=why)
                self.finished = True
            except Exception:  # the store itself failed: the next reconcile marks the run
                pass

    def start_container(self, planned: list[PlannedStep], workflow: str | None) -> None:
        """The run's one container (runtime/run_container.py): started now, its zygote warms up with
        the first Ansible step's environment while the run is prepared; every step runs in it."""
        from polycrate.runtime.run_container import start_run_container

        requests: list[ActionRequest] = []
        for step in planned:
            block = self.ws.blocks[step.block]
            requests.append(ActionRequest(ws=self.ws, block=block, action=block.actions[step.action],
                                          workflow=workflow, step=step.name if workflow else None,
                                          runtime=self.runtime, extra_env=dict(self.options.display_env),
                                          **action_settings(self.options)))
        self.container = start_run_container(self.ws, self.runtime, requests, self.options.mounts,
                                             warm=self.options.zygote)

    def close(self) -> None:
        self.close_record()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
        if self.container is not None:
            self.container.close()  # gone before the run ends, also after a failure or an interrupt
            self.container = None
        if self.ssh_sharing is not None:
            try:
                self.ssh_sharing.close()  # every master of the run ends, also after a failure or an interrupt
            except Exception:
                pass
            self.ssh_sharing = None
        if self.secrets is not None:
            self.secrets.close()  # the decrypted folder goes, also after a failure or an interrupt
            self.secrets = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.store is not None:
            self.store.close()
            self.store = None


def _masked(masker: Masker, data: dict[str, Any]) -> dict[str, Any]:
    """Masker.mask_data for a mapping: what it returns is a mapping again."""
    masked = masker.mask_data(data)
    assert isinstance(masked, dict)
    return masked


def action_settings(options: RunOptions) -> dict[str, Any]:
    """The ActionRequest fields that come from the run's global flags."""
    return {"env": options.env, "mounts": options.mounts, "ssh_key": options.ssh_key, "force": options.force}


def _execute(
    run: _Run,
    step: StepResult,
    position: int,
    workflow: str | None,
    index: int,
    total: int,
) -> None:
    """Run one step with its timeout and retries; record it. KeyboardInterrupt marks it interrupted."""
    ws, options, reporter, store, run_id = run.ws, run.options, run.reporter, run.store, run.run_id
    assert store is not None and run_id is not None  # steps run after run.open()
    block = ws.blocks[step.block]
    action = block.actions[step.action]
    timeout = step.plan.timeout
    attempts = 1 + step.plan.retries
    delay = step.plan.retry_delay

    run.current_step = step.name
    reporter.step_started(step, index, total)
    if options.check and action.type == "script":
        step.status = StepState.SKIPPED_CHECK
        step.note = "script actions do not run in check mode"
        store.update_step(run_id, position, status=step.status, note=step.note)
        reporter.step_finished(step, index, total)
        return

    log = store.step_log(run_id, position, step.name)
    last_lines: list[str] = []
    error_lines: list[str] = []  # Ansible's own error lines, for the failure's text

    from polycrate.run.viewer import NoiseFilter

    noise = NoiseFilter()

    def output(line: str) -> None:
        line = run.mask(line)
        if noise.shown(ansi.strip(line)):  # the toolchain's known warnings: in the log only
            reporter.output(line)  # as the action printed it: the reporter decides about escape codes
        line = ansi.strip(line)  # the log, the store and messages keep plain text
        log.write(line)
        if line.strip():
            last_lines.append(line)
            del last_lines[:-5]
            if line.lstrip().startswith(("[ERROR]", "ERROR!", "FATAL", "Origin:")):
                error_lines.append(line)
                del error_lines[:-20]

    started = time.monotonic()
    store.update_step(run_id, position, status=StepState.RUNNING, started=time.time())
    events_dir = Path(tempfile.mkdtemp(prefix="polycrate-events-", dir=run.container.folder if run.container else None))
    try:
        for attempt in range(1, attempts + 1):
            step.attempts = attempt
            if attempt > 1:
                run.notice(f"step {step.name}: attempt {attempt} of {attempts} in {delay:g}s")
                log.write(f"--- polycrate: attempt {attempt} of {attempts} ---")
                if delay:
                    time.sleep(delay)
            events = events_dir / f"attempt-{attempt}.jsonl"
            request = ActionRequest(
                ws=ws,
                block=block,
                action=action,
                workflow=workflow,
                step=step.name if workflow else None,
                check=options.check,
                diff=options.diff,
                timeout=timeout,
                events_file=events,
                runtime=run.runtime,
                secrets=run.secrets,
                keep_fds=(run.lock.fd,) if run.lock is not None and run.lock.fd is not None else (),
                zygote=run.zygote,
                ansible_options=options.ansible,
                extra_env=dict(options.display_env),
                **action_settings(options),
                ssh_sharing=run.ssh_sharing,
                hosts=run.hosts_of(block.name, action.name),
                container=run.container,
            )
            if action.type == "script":  # its Go templates, filled in once for every attempt
                from polycrate.errors import ConfigError
                from polycrate.runtime.script import rendered_script

                try:
                    script = rendered_script(request)
                except ConfigError as exc:
                    step.status = StepState.FAILED
                    step.exit_code = None
                    step.message = run.mask(str(exc))
                    output(f"polycrate: {step.message}")
                    break
                request = replace(request, script=script)
            reporter.attempt_started(step, events if action.type == "ansible" else None)
            last_lines.clear()
            error_lines.clear()
            timed_out = False
            try:
                step.exit_code = run_action_process(request, output)
            except ActionTimedOut as exc:
                timed_out = True
                step.exit_code = None
                output(f"polycrate: step {step.name} {exc}; stopped")
            except BaseException as exc:
                step.status = StepState.INTERRUPTED
                step.hosts, failure = read_events(events)
                step.message = (f"interrupted ({interrupt_name(exc)})" if isinstance(exc, KeyboardInterrupt)
                                else run.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}"))
                raise
            step.hosts, failure = read_events(events)
            seen = failure_text.read_step_events(events)
            no_hosts = None if step.plan.allow_no_hosts else failure_text.describe_no_hosts(seen)
            if step.exit_code == 0 and not timed_out and not no_hosts:
                step.status = StepState.SUCCEEDED
                step.failed_task = step.failed_host = step.message = None
                break
            step.status = StepState.FAILED
            step.failed_task = failure["task"] if failure else None
            step.failed_host = failure["host"] if failure else None
            if timed_out:
                step.message = f"timed out after {timeout:g}s"
            elif step.exit_code == 0 and no_hosts:
                step.message = run.mask(no_hosts)
            elif action.type == "script":
                step.message = run.mask(failure_text.describe_script(request.script or action.script, step.exit_code,
                                                                     seen, last_lines))
            else:
                step.message = run.mask(
                    failure_text.describe_ansible(step.exit_code, failure, seen, error_lines or last_lines)
                )
    finally:
        step.duration = time.monotonic() - started
        log.close()
        shutil.rmtree(events_dir, ignore_errors=True)
        try:
            store.set_hosts(run_id, position, step.hosts)
            store.update_step(
                run_id,
                position,
                status=step.status,
                exit_code=step.exit_code,
                attempts=step.attempts,
                ended=time.time(),
                duration=round(step.duration, 3),
                failed_task=step.failed_task,
                failed_host=step.failed_host,
                message=step.message,
            )
        except Exception:
            pass
    reporter.step_finished(step, index, total)


def _finish(run: _Run, result: RunResult, started_at: float, interrupted: bool) -> None:
    """Close the record; then retention, metrics, webhooks: none of them may change the result."""
    from polycrate import success

    result.duration = time.monotonic() - started_at
    result.status = success.run_state(((s.status, s.phase) for s in result.steps), interrupted)
    exit_code = success.exit_code_of(result.status)
    failed = result.failed_step or next((s for s in result.steps if s.status == StepState.INTERRUPTED), None)
    store, run_id = run.store, run.run_id
    assert store is not None and run_id is not None  # _drive runs after run.open()
    from polycrate.run.stopping import signals_deferred

    with signals_deferred():  # a second signal waits for the record (run/stopping.py)
        store.finish_run(
            run_id,
            status=result.status,
            exit_code=exit_code,
            failed_step=failed.name if failed else None,
            failed_task=failed.failed_task if failed else None,
            failed_host=failed.failed_host if failed else None,
            message=failed.message if failed else None,
        )
        run.finished = True
    settings = run.ws.run_settings
    try:
        if settings.keep_runs or settings.keep_days:
            store.prune(settings.keep_runs, settings.keep_days)
    except Exception as exc:
        run.notice(f"retention: could not remove old runs: {exc}")
    if result.kind == RunKind.WORKFLOW and settings.metrics_enabled and not run.options.check:
        try:
            from polycrate.notify import metrics

            path = metrics.metrics_path(run.ws.root, settings.metrics_path)
            metrics.write_atomically(path, metrics.render(run.ws.name, store.workflow_metrics()))
        except Exception as exc:
            run.notice(f"metrics: could not write the textfile: {exc}")
    _polycrate_event(run, result)
    try:
        result.record = store.get_run(run_id)  # what -o json, webhooks and notifications carry
    except Exception as exc:  # the record is read back for output; the run's result stands
        run.notice(f"run store: could not read the finished run back: {exc}")
    result.workspace = run.ws.name
    if (settings.webhooks or settings.notifications) and result.record is not None:
        from polycrate import contract

        body = _masked(run.masker, contract.webhook_body(result.record, run.ws.name))
        if settings.webhooks:
            from polycrate.notify import webhooks as alerts

            alerts.send_all(settings.webhooks, body, run.notice)
        if settings.notifications:  # mail and chat, built from the same body
            from polycrate.notify import channels

            poly = run.secrets.poly if run.secrets is not None else None
            secrets = channels.Secrets(poly.config if poly is not None else None, run.masker)
            channels.send_all(settings.notifications, body, run.notice, secrets)
        try:  # with the webhooks' and notifications' notices
            result.record = store.get_run(run_id)
        except Exception:
            pass


def _polycrate_event(run: _Run, result: RunResult) -> None:
    """The real Polycrate's after-run work: the run's event (.logs/ or a webhook), then --auto-commit."""
    options = run.options
    if not (options.event_handler or options.auto_commit):
        return
    from polycrate.config import gitrepo as gitcli
    from polycrate.notify import polycrate_event as runevents

    commit_sha = ""
    try:
        commit_sha = gitcli.head(run.ws.root) if gitcli.is_repo(run.ws.root) else ""
    except Exception:
        pass
    if options.event_handler:
        try:
            assert run.store is not None and run.run_id is not None  # after run.open()
            record = run.store.get_run(run.run_id)
            snap = runevents.run_snapshot(
                run.ws, options, run.runtime.name if run.runtime is not None else "local",
                workflow=result.name if result.kind == RunKind.WORKFLOW else None,
                block=record.block, action=record.action, only_step=record.only_step)
            doc = _masked(run.masker, runevents.event_document(
                ws=run.ws, result=result, record=record, store=run.store, options=options, snapshot=snap,
                commit_sha=commit_sha))
            runevents.submit(doc, run.ws.root, options.event_handler, options.event_endpoint, run.notice,
                             run.ws.layout.logs_root)
        except Exception as exc:  # an event never fails a run
            run.notice(f"event: could not be written: {exc}; the run's result stands")
    if options.auto_commit:
        what = f"workflow {result.name}" if result.kind == RunKind.WORKFLOW else f"action {result.name}"
        message = f"[polycrate] Auto-Commit after run {run.run_id} ({what}: {result.status})"
        try:
            runevents.auto_commit(run.ws.root, message, options.ssh_key, run.notice)
        except Exception as exc:
            run.notice(f"auto-commit: nothing committed: {exc}")




def _preflight(run: _Run, planned: list[PlannedStep], skip: set[str]) -> Report | None:
    """The checks of polycrate.run.preflight for the steps this run will execute, before anything is
    recorded or run: an error is bad input (PreflightFailed: exit 2, one line, nothing written)."""
    if not run.options.preflight:
        return None
    from polycrate.run import preflight

    chosen = [p for p in planned if not (p.phase == Phase.MAIN and p.name in skip)]
    report = preflight.check(
        run.ws, preflight.step_targets(run.ws, [(p.block, p.action, p.allow_no_hosts) for p in chosen]),
        settings=False, secrets=run.secrets, zygote=run.zygote, runtime=run.runtime,
        ansible=run.options.ansible, display_env=run.options.display_env,
        ssh_sharing=run.ssh_sharing, container=run.container,
    )
    if not report.ok:
        first = report.errors[0]
        steps = [p.name for p in chosen if (p.block, p.action) == (first.block, first.action)]
        raise preflight.PreflightFailed(report, steps[0] if steps else None, run.mask)
    run.preflight = report
    return report


def _preflight_warnings(run: _Run, report: Report | None) -> None:
    for finding in report.findings if report is not None else ():
        run.notice("preflight: warning: " + finding.text_in(run.ws.root))


def _drive(run: _Run, result: RunResult, workflow: Workflow | None, skip: set[str], resumed_from: str | None
           ) -> RunResult:
    """Run the planned steps in order with the failure policy; record everything; re-raise interrupts."""
    steps = result.steps
    store, run_id = run.store, run.run_id
    assert store is not None and run_id is not None  # the record is open (run.open())
    for step in steps:
        if step.name in skip and step.phase == Phase.MAIN:
            step.status = StepState.SUCCEEDED_BEFORE
            step.note = f"succeeded in run {resumed_from}"
    store.add_steps(
        run_id,
        [
            {"position": i, "name": s.name, "block": s.block, "action": s.action, "phase": s.phase,
             "status": s.status, "note": s.note}
            for i, s in enumerate(steps, 1)
        ],
    )
    name = workflow.name if workflow else None
    main = [s for s in steps if s.phase == Phase.MAIN]
    run.reporter.run_started(result.kind, result.name, run_id, len(main))
    from polycrate.run.where import header

    engine = getattr(getattr(run.runtime, "engine", None), "name", None)
    run.reporter.runtime(header(run.where, engine))
    started_at = time.monotonic()
    interrupted = False

    def execute(step: StepResult, index: int, total: int) -> None:
        position = steps.index(step) + 1
        _execute(run, step, position, name, index, total)
        if step.status == StepState.FAILED and step.plan.allow_failure:
            step.status = StepState.FAILED_ALLOWED
            store.update_step(run_id, position, status=step.status)

    try:
        stopped = False
        for index, step in enumerate(main, 1):
            if step.status == StepState.SUCCEEDED_BEFORE:
                continue
            if stopped:
                step.status = StepState.SKIPPED
                store.update_step(run_id, steps.index(step) + 1, status=step.status)
                continue
            execute(step, index, len(main))
            stopped = step.status == StepState.FAILED
        recovery = [s for s in steps if s.phase == Phase.ON_FAILURE]
        if stopped and recovery:
            run.notice(f"a step failed: running on_failure steps {', '.join(s.name for s in recovery)}")
            for index, step in enumerate(recovery, 1):
                execute(step, index, len(recovery))
        for step in recovery:
            if step.status == StepState.NOT_RUN:
                step.note = "ran only after a failure"
    except BaseException:  # a signal, or an error of polycrate's own: never recorded as succeeded
        interrupted = True
        for position, step in enumerate(steps, 1):
            if step.status in (StepState.NOT_RUN, StepState.RUNNING):
                step.status = StepState.SKIPPED if step.phase == Phase.MAIN else StepState.NOT_RUN
                store.update_step(run_id, position, status=step.status)
        run.notice(f"run {run_id} interrupted; recorded as interrupted")
        raise
    finally:
        _finish(run, result, started_at, interrupted)
    return result


def run_action(
    ws: Workspace,
    block_name: str,
    action_name: str,
    *,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
    runtime: Runtime | None = None,
    early_zygote: EarlyZygote | None = None,
) -> RunResult:
    """One run, once prepared: call it through pipeline.run, which decides `runtime` (None: local)."""
    block = get_block(ws, block_name)
    action = get_action(block, action_name)
    if action.type == "ansible":
        playbook_path(block, action)
    if options.resume:
        raise PolycrateError("--resume applies to workflows only")
    run = _Run(ws, reporter or Reporter(), options, runtime, early_zygote)
    try:
        key = f"action-{block.name}-{action.name}"
        run.take_lock(key, f"action {block.name} {action.name}")
        plan = PlannedStep(action.name, block.name, action.name)
        run.start_ssh_sharing([plan])
        run.start_zygote([plan], None)  # with the preflight: two Ansible processes, one import of ansible-core
        if action.prompt:
            _ask(confirm, [RunPrompt(action.prompt.message, block=block.name, action=action.name)])
        run.open_secrets()
        report = _preflight(run, [plan], set())
        run.open(kind=RunKind.ACTION, name=f"{block.name} {action.name}", block=block.name, action=action.name,
                 lock_key=key)
        result = RunResult(RunKind.ACTION, f"{block.name} {action.name}", run_id=run.run_id, check=options.check,
                           preflight=report)
        result.steps.append(StepResult(plan))
        _preflight_warnings(run, report)
        return _drive(run, result, None, set(), None)
    finally:
        run.close()


def run_workflow(
    ws: Workspace,
    name: str,
    *,
    only_step: str | None = None,
    confirm: Confirm,
    reporter: Reporter | None = None,
    options: RunOptions = RunOptions(),
    runtime: Runtime | None = None,
    early_zygote: EarlyZygote | None = None,
) -> RunResult:
    """One run, once prepared: call it through pipeline.run, which decides `runtime` (None: local)."""
    workflow = get_workflow(ws, name)
    if options.resume and only_step:
        raise PolycrateError("--resume and --step do not combine: --resume picks the steps itself")
    planned = plan_workflow(ws, workflow, only_step)

    run = _Run(ws, reporter or Reporter(), options, runtime, early_zygote)
    try:
        key = f"workflow-{workflow.name}"
        # the lock first: a second run is refused before anyone is asked anything
        run.take_lock(key, f"workflow '{workflow.name}'")
        run.start_ssh_sharing(planned)  # before the zygote: it takes the same environment as the steps
        run.start_zygote(planned, workflow.name)  # warms up while the run is prepared
        skip: set[str] = set()
        resumed_from = None
        if options.resume:
            from polycrate.history import open_store

            store = open_store(ws.root, backend=options.backend, workspace=ws.name)
            try:
                previous = store.latest_full_run(workflow.name)
            finally:
                store.close()
            if previous is None:
                raise NothingToResume(f"nothing to resume: workflow '{workflow.name}' has no recorded run")
            if previous.status not in (RunState.FAILED, RunState.INTERRUPTED):
                raise NothingToResume(
                    f"nothing to resume: the latest run of '{workflow.name}' ({previous.id}) {previous.status}"
                )
            skip = resume_point(previous, planned)
            resumed_from = previous.id
            options = _resumed_options(options, previous)
            run.options = options
            if all(s.name in skip for s in planned if s.phase == Phase.MAIN):
                raise NothingToResume(
                    f"nothing to resume: every step of run {previous.id} already succeeded"
                )
        _ask(confirm, plan_prompts(ws, workflow, planned, skip))
        run.open_secrets()
        report = _preflight(run, planned, skip)  # before the record: a failed check is bad input, nothing written
        run.open(
            kind=RunKind.WORKFLOW,
            name=workflow.name,
            workflow=workflow.name,
            only_step=only_step,
            lock_key=key,
            resumed_from=resumed_from,
        )
        if resumed_from:
            first = next(s.name for s in planned if s.phase == Phase.MAIN and s.name not in skip)
            run.notice(f"resuming run {resumed_from} at step {first}")
        result = RunResult(RunKind.WORKFLOW, workflow.name, [StepResult(p) for p in planned], run_id=run.run_id,
                           resumed_from=resumed_from, check=options.check)
        result.preflight = report
        _preflight_warnings(run, report)
        return _drive(run, result, workflow, skip, resumed_from)
    finally:
        run.close()


__all__ = [
    "Reporter",
    "RunOptions",
    "RunResult",
    "StepResult",
    "run_action",
    "run_workflow",
    "plan_workflow",
    "read_events",
]
