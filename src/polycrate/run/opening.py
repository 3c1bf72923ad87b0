"""Opening a run, the same for an action and a workflow: ``open_run`` does it in this order.

1. the lock (a second run is refused before anyone is asked anything);
2. SSH sharing (before the zygote: it takes the same environment as the steps);
3. the zygote, or the run container, which warm up while the rest is prepared;
4. ``--resume``: which steps succeeded before (workflows only);
5. the prompts, all answered before anything runs;
6. the secrets, decrypted for this run; from here on every line is masked;
7. the preflight (a failed check is bad input: exit 2, nothing recorded);
8. the run record, opened in the store.

What it returns is the run's ``RunResult`` with its planned steps, ready for run/drive.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polycrate.errors import CLI, EXIT_ACTION_FAILED, WEB, PolycrateError
from polycrate.run.context import RunContext, masked, masker_for
from polycrate.run.plan import plan_prompts, resume_point, resumed_notes
from polycrate.run.request import Confirm, PlannedStep, RunOptions, RunPrompt, RunResult, StepResult
from polycrate.runtime.action import ActionRequest
from polycrate.runtime.ansible_options import AnsibleOptions, merged_extra_vars
from polycrate.states import RESUMABLE, Phase, RunKind
from polycrate.config.record import MutableRecord, Record, record

if TYPE_CHECKING:
    from polycrate.config.model import Workflow
    from polycrate.history.records import RunRecord
    from polycrate.run.preflight import Report


class PromptDeclined(PolycrateError):
    exit_code = 1


class NothingToResume(PolycrateError):
    exit_code = EXIT_ACTION_FAILED


@record(frozen=True, eq=False, repr=False)
class RunTarget(Record):
    """What a run opens for: its kind and name, its planned steps, its lock, and what its record says."""

    kind: RunKind
    name: str
    planned: list[PlannedStep]
    lock_key: str
    lock_what: str  # the lock's holder as people read it: "workflow 'nightly'", "action b hello"
    workflow: Workflow | None = None  # a workflow run: its prompts, its zygote's environment, --resume
    prompts: tuple[RunPrompt, ...] = ()  # an action run's prompt (a workflow's come from plan_prompts)
    record: dict[str, Any] = field(default_factory=dict)  # RunStore.start_run's fields of this kind of run


@dataclass(eq=False, repr=False)
class OpenedRun(MutableRecord):
    """The run once opened: its result to fill, and what --resume decided."""

    result: RunResult
    skip: dict[str, str]  # main steps that finished in the resumed run, each with its note (plan.resumed_notes)
    resumed_from: str | None


def open_run(run: RunContext, target: RunTarget, confirm: Confirm) -> OpenedRun:
    """The opening sequence of every run (this module's docstring says why in this order)."""
    workflow = target.workflow.name if target.workflow is not None else None
    take_lock(run, target.lock_key, target.lock_what)
    start_ssh_sharing(run, target.planned)
    start_zygote(run, target.planned, workflow)
    notes, resumed_from = resume(run, target) if target.workflow is not None and run.options.resume \
        else ({}, None)
    skip = set(notes)
    ask(confirm, prompts_of(run, target, skip))
    open_secrets(run)
    report = preflight(run, target.planned, skip)
    record = dict(target.record, resumed_from=resumed_from) if target.workflow is not None else target.record
    open_record(run, kind=target.kind, name=target.name, lock_key=target.lock_key, **record)
    if resumed_from:
        first = next(s.name for s in target.planned if s.phase == Phase.MAIN and s.name not in skip)
        run.notice(f"resuming run {resumed_from} at step {first}")
    result = RunResult(target.kind, target.name, [StepResult(p) for p in target.planned], run_id=run.run_id,
                       resumed_from=resumed_from, check=run.options.check, preflight=report)
    preflight_warnings(run, report)
    return OpenedRun(result, notes, resumed_from)


def take_lock(run: RunContext, key: str, what: str) -> None:
    from polycrate.history.locking import RunLock

    run.lock = lock = RunLock(run.ws.root, key, what)
    lock.acquire(wait=run.options.wait, on_wait=run.notice)


def start_ssh_sharing(run: RunContext, planned: list[PlannedStep]) -> None:
    """One private folder of SSH ControlPersist masters for the run's ansible steps, so a later step
    reuses the connections of an earlier one (runtime/sshshare.py); local runtime only."""
    if run.runtime is not None and run.runtime.container:
        return
    if not any(run.ws.blocks[s.block].actions[s.action].type == "ansible" for s in planned):
        return
    from polycrate.runtime import ssh_masters as sshshare

    run.ssh_sharing = sshshare.start()


def start_zygote(run: RunContext, planned: list[PlannedStep], workflow: str | None) -> None:
    """Warm Ansible once for a run of two or more Ansible processes (the preflight, each ansible step's
    runs and retries; a single action with the preflight counts): each then forks from it instead of
    starting and importing ansible-core again (runtime/zygote.py)."""
    from polycrate.runtime.execute import start_zygote as start

    if run.runtime is not None and run.runtime.container:
        start_container(run, planned, workflow)
        return
    if not run.options.zygote:
        return
    steps = [s for s in planned if run.ws.blocks[s.block].actions[s.action].type == "ansible"]
    runs = sum(1 + s.retries for s in steps)
    if runs < (1 if run.options.preflight else 2):  # the preflight forks from it too
        return
    first = steps[0]
    request = run.action_request(first.block, first.action, workflow, first.name)
    try:
        run.zygote = start(request, run.early_zygote)
    except Exception:  # an optimisation: without it every step starts its own process
        run.zygote = None


def start_container(run: RunContext, planned: list[PlannedStep], workflow: str | None) -> None:
    """The run's one container (runtime/run_container.py): started now, its zygote warms up with
    the first Ansible step's environment while the run is prepared; every step runs in it."""
    from polycrate.runtime.run_container import start_run_container

    assert run.runtime is not None  # a container run
    requests: list[ActionRequest] = []
    for step in planned:
        requests.append(run.action_request(step.block, step.action, workflow, step.name, ssh_sharing=False))
    run.container = start_run_container(run.ws, run.runtime, requests, run.options.mounts,
                                        warm=run.options.zygote)


def resume(run: RunContext, target: RunTarget) -> tuple[dict[str, str], str]:
    """--resume: the steps of the workflow's latest failed, interrupted or lost run that succeeded, to skip,
    each with its note (where it ran); the run then takes that run's pass-through options."""
    from polycrate.history import open_store

    assert target.workflow is not None  # --resume applies to workflows only
    name = target.workflow.name
    store = open_store(run.ws.root, backend=run.options.backend, workspace=run.ws.name)
    try:
        previous = store.latest_full_run(name)
    finally:
        store.close()
    if previous is None:
        raise NothingToResume(f"nothing to resume: workflow '{name}' has no recorded run")
    if previous.status not in RESUMABLE:
        raise NothingToResume(f"nothing to resume: the latest run of '{name}' ({previous.id}) {previous.status}")
    skip = resume_point(previous, target.planned)
    run.options = resumed_options(run.options, previous)
    if all(s.name in skip for s in target.planned if s.phase == Phase.MAIN):
        raise NothingToResume(f"nothing to resume: every step of run {previous.id} already succeeded")
    return resumed_notes(previous, skip), previous.id


def resumed_options(options: RunOptions, previous: RunRecord) -> RunOptions:
    """--resume runs the rest with the pass-through options the run was started with. Options given with it must
    be those: the same host pattern, tags, verbosity, and extra vars of the same values (a web launch writes its
    values to a file of its own, so the same values come in another @FILE); what is not given is reused as recorded.
    Other ones are refused."""
    recorded = AnsibleOptions.from_record(dict(previous.ansible_options))
    gone = [text[1:] for text in (v.strip() for v in recorded.extra_vars) if text[:1] == "@" and
            not Path(text[1:]).is_file()]
    if gone:
        raise PolycrateError(f"the values run {previous.id} was started with are gone ({gone[0]}): nothing to reuse",
                             hints={CLI: "start a new run without --resume", WEB: "launch without resume"})
    given = options.ansible
    differs = [name for name in ("limit", "tags", "skip_tags", "verbosity")
               if getattr(given, name) not in (None, ()) and getattr(given, name) != getattr(recorded, name)]
    if differs:
        shown = " ".join(recorded.playbook_args()) or "none"
        raise PolycrateError(f"a resumed run reuses the Ansible options of run {previous.id} ({shown})",
                             hints=_RESUME_HINTS)
    if given.extra_vars and tuple(given.extra_vars) != tuple(recorded.extra_vars):
        had = merged_extra_vars(recorded.extra_vars)
        changed = [key for key, value in merged_extra_vars(given.extra_vars).items()
                   if key not in had or had[key] != value]
        if changed:  # named, never shown: a value may be a secret
            raise PolycrateError(f"a resumed run reuses the launch values of run {previous.id}, and {changed[0]} "
                                 "differs", hints=_RESUME_HINTS)
    return replace(options, ansible=recorded)


_RESUME_HINTS = {CLI: "give none with --resume, or start a new run without it",
                 WEB: "leave the host pattern, tags and values empty, or launch without resume"}


def prompts_of(run: RunContext, target: RunTarget, skip: set[str]) -> list[RunPrompt]:
    if target.workflow is not None:
        return plan_prompts(run.ws, target.workflow, target.planned, skip)
    return list(target.prompts)


def ask(confirm: Confirm, prompts: list[RunPrompt]) -> None:
    """All prompts are answered before anything runs, so no run stops half-way for input."""
    for prompt in prompts:
        if not confirm(prompt):
            raise PromptDeclined(f"{prompt.asker}: not confirmed, nothing was run")


def open_secrets(run: RunContext) -> None:
    """Decrypt the workspace's secrets into a private folder for this run; merge secrets.poly
    values over the config; from here on every line we print or store is masked."""
    from polycrate.config.workspace import with_secret_values
    from polycrate.runtime.ansible_options import secret_values
    from polycrate.secrets import open_runtime_secrets

    folder = run.container.folder if run.container is not None else None  # the container sees it
    run.secrets = secrets = open_runtime_secrets(run.ws.root, list(run.ws.blocks), run.options.identity,
                                                 folder=folder)
    run.ws = with_secret_values(run.ws, secrets.poly)
    run.masker = masker_for(secrets)
    run.masker.update(secret_values(run.options.ansible.extra_vars))  # a launch's secret parameters
    run.mask = run.masker.mask


def preflight(run: RunContext, planned: list[PlannedStep], skip: set[str]) -> Report | None:
    """The checks of polycrate.run.preflight for the steps this run will execute, before anything is
    recorded or run: an error is bad input (PreflightFailed: exit 2, one line, nothing written)."""
    if not run.options.preflight:
        return None
    from polycrate.run import preflight as checks

    chosen = [p for p in planned if not (p.phase == Phase.MAIN and p.name in skip)]
    report = checks.check(
        run.ws, checks.step_targets(run.ws, [(p.block, p.action, p.allow_no_hosts) for p in chosen]),
        settings=False, secrets=run.secrets, zygote=run.zygote, runtime=run.runtime,
        ansible=run.options.ansible, display_env=run.options.display_env,
        ssh_sharing=run.ssh_sharing, container=run.container,
    )
    if not report.ok:
        first = report.errors[0]
        steps = [p.name for p in chosen if (p.block, p.action) == (first.block, first.action)]
        raise checks.PreflightFailed(report, steps[0] if steps else None, run.mask)
    run.preflight = report
    return report


def open_record(run: RunContext, **record: Any) -> None:
    """The run's record in the store; the notices said before it opened are recorded with it."""
    from polycrate.history import open_store
    from polycrate.run.where import runtime_fields

    from polycrate.run.stopping import signals_deferred, unsettle

    unsettle()  # a run before this one in the same process (the tests) settled its own
    options = run.options
    run.where = runtime_fields(run.runtime)
    # a stop signal between the record's INSERT and run.run_id would leave a 'running' record that
    # close_record cannot see (found by the signal stress test): the two happen together or not at all
    with signals_deferred():
        run.store = store = open_store(run.ws.root, backend=options.backend, workspace=run.ws.name)
        run.run_id = store.start_run(
            check=options.check, diff=options.diff, run_id=options.run_id, user=options.launched_by,
            ansible_options=masked(run.masker, options.ansible.to_record()), runtime=run.where["runtime"],
            image=run.where["image"], image_digest=run.where["image_digest"], **record,
        )
    if run.lock is not None:
        run.lock.write_holder(run.run_id)
    for message in run.unrecorded:
        run.record_notice(message)
    run.unrecorded.clear()
    for message in store.recovered:  # loud, and kept with this run
        run.notice(message)


def preflight_warnings(run: RunContext, report: Report | None) -> None:
    for finding in report.findings if report is not None else ():
        run.notice("preflight: warning: " + finding.text_in(run.ws.root))


__all__ = ["NothingToResume", "OpenedRun", "PromptDeclined", "RunTarget", "open_run"]
