"""The request and result types of a run: what every caller (the CLI, the server) builds and reads.

A caller builds a ``RunRequest`` (what to run, ``RunOptions`` how, and who and under which id), hands
it to ``pipeline.run`` with a ``Confirm`` callback and a ``Reporter``, and reads the ``RunResult``.
``PlannedStep`` and ``RunPrompt`` are what a run is made of before it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from polycrate.errors import PolycrateError
from polycrate.runtime.ansible_options import AnsibleOptions
from polycrate.states import Phase, RunKind, RunState, StepState
from polycrate.config.record import MutableRecord, Record, record

if TYPE_CHECKING:
    from polycrate.config.model import Step
    from polycrate.history.records import RunRecord
    from polycrate.config.workspace import BlockChange
    from polycrate.runtime.zygote import EarlyZygote


@record(frozen=True, eq=False, repr=False)
class PlannedStep(Record):
    """One step of a run's plan: what to run, in which phase, with which controls."""

    name: str
    block: str
    action: str
    phase: Phase = Phase.MAIN
    allow_failure: bool = False
    timeout: float | None = None  # seconds per attempt
    retries: int = 0
    retry_delay: float = 0.0
    allow_no_hosts: bool = False  # a play matching no host does not fail the step (nor its preflight)
    slices: int = 1  # the step's hosts run in this many parts (run/slicing.py)

    @classmethod
    def of(cls, step: Step, phase: Phase = Phase.MAIN) -> PlannedStep:
        return cls(step.name, step.block, step.action, phase, step.allow_failure, step.timeout, step.retries,
                   step.retry_delay, step.allow_no_hosts, step.slices)


@record(frozen=True, eq=False, repr=False)
class RunPrompt(Record):
    """A question a run asks before anything runs: a workflow's, an action's or a step's `prompt`, or
    whether to install missing blocks. The caller's ``confirm`` callback answers it."""

    message: str
    workflow: str | None = None  # the workflow's own prompt
    step: str | None = None  # the prompt of this step's action
    block: str | None = None
    action: str | None = None
    pulls: tuple[BlockChange, ...] = ()  # before a run: the `from:` blocks it would install

    @property
    def asker(self) -> str:
        """Who asks, for people: 'workflow w', 'step s (block/action)', 'action block/action'."""
        if self.pulls:
            return "blocks"
        if self.step is not None:
            return f"step {self.step} ({self.block}/{self.action})"
        if self.workflow is not None:
            return f"workflow {self.workflow}"
        return f"action {self.block}/{self.action}"


@dataclass(eq=False, repr=False)
class StepResult(MutableRecord):
    plan: PlannedStep
    status: StepState = StepState.NOT_RUN
    exit_code: int | None = None
    duration: float = 0.0
    attempts: int = 0
    failed_task: str | None = None
    failed_host: str | None = None
    message: str | None = None
    note: str | None = None
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def block(self) -> str:
        return self.plan.block

    @property
    def action(self) -> str:
        return self.plan.action

    @property
    def phase(self) -> Phase:
        return self.plan.phase

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "block": self.block, "action": self.action, "status": self.status,
                "exit_code": self.exit_code, "duration": self.duration, "phase": self.phase,
                "attempts": self.attempts, "failed_task": self.failed_task, "failed_host": self.failed_host,
                "message": self.message, "note": self.note, "hosts": self.hosts}


@dataclass(eq=False, repr=False)
class RunResult(MutableRecord):
    kind: RunKind
    name: str
    steps: list[StepResult] = field(default_factory=list)
    duration: float = 0.0
    run_id: str | None = None
    status: RunState = RunState.RUNNING
    resumed_from: str | None = None
    check: bool = False
    preflight: Any = None  # run.preflight.Report of the checks before step 1 (None: not run)
    record: RunRecord | None = None  # the run as recorded when it finished (RunStore.get_run)
    workspace: str | None = None  # the workspace's name

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == StepState.FAILED and s.phase == Phase.MAIN), None)

    @property
    def ok(self) -> bool:
        if self.status.finished:  # as recorded: polycrate.success.run_state
            return self.status == RunState.SUCCEEDED
        return self.failed_step is None

    @property
    def skipped(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == StepState.SKIPPED]


class Reporter:
    """What the engine tells its caller while it works. Override what you need."""

    def output(self, line: str) -> None:
        pass

    def step_started(self, step: StepResult, index: int, total: int) -> None:
        pass

    def step_finished(self, step: StepResult, index: int, total: int) -> None:
        pass

    def notice(self, message: str) -> None:
        """Something polycrate itself has to say: waiting for a lock, a retry, a failed webhook."""

    def toolchain(self, line: str) -> None:
        """Progress of preparing the container runtime (an image build or import) before a run."""

    def preparing(self, message: str) -> None:
        """Something done before the run starts (a block pulled or downgraded)."""

    def run_started(self, kind: str, name: str, run_id: str, total: int) -> None:
        """The run is recorded and its first step is about to start."""

    def runtime(self, line: str) -> None:
        """Where the run's actions execute (run/where.py), right after run_started."""

    def attempt_started(self, step: StepResult, events_file: Path | None) -> None:
        """An attempt of a step starts; an ansible step writes its event stream (events.py) to `events_file`."""


Confirm = Callable[[RunPrompt], bool]  # the caller's answer to a prompt


@record(frozen=True, eq=False, repr=False)
class RunOptions(Record):
    check: bool = False
    diff: bool = False
    resume: bool = False
    wait: bool = False  # wait for the lock instead of refusing
    runtime: str | None = None  # "local" | "container"; None: the workspace's config.runtime
    display_env: tuple[tuple[str, str], ...] = ()  # the caller's terminal: colour and width for Ansible
    ansible: AnsibleOptions = AnsibleOptions()  # --limit, --tags, --skip-tags, --extra-vars, verbosity
    preflight: bool = True  # check the planned steps' actions before step 1 (polycrate.run.preflight)
    # the real Polycrate's global flags (cli/flags.py); pipeline.prepare checks the paths
    env: tuple[tuple[str, str], ...] = ()  # -e KEY=value: every action's environment, last
    mounts: tuple[Any, ...] = ()  # -m: runtime.container.Mount, container runtime only
    force: bool = False  # -f: POLYCRATE_FORCE=1
    pull: bool = False  # -p: pull config.image first
    build: bool = False  # -b: build Dockerfile.poly even when its inputs are unchanged
    auto_commit: bool = False  # commit the workspace before and after the run
    event_handler: str | None = None  # "workspace" (.logs/) | "webhook" (POST to event_endpoint)
    event_endpoint: str | None = None
    ssh_private_key: str | None = None  # --ssh-private-key as given
    ssh_key: Path | None = None  # the workspace's key the run hands to Ansible (pipeline.prepare resolves it)
    command: str = ""  # the command line, for the run's event
    zygote: bool = True  # ansible steps fork from a warm Ansible (runtime/zygote.py); POLYCRATE_ZYGOTE=0 says no
    # how the run is recorded: the id a caller chose beforehand (the server answers with it before the run
    # starts) and who launched it; None: a new id, and the user running polycrate
    run_id: str | None = None
    launched_by: str | None = None
    backend: str | None = None  # team mode: the PostgreSQL DSN the run is recorded in (None: the workspace's SQLite)
    identity: Path | None = None  # the age identity file the secrets decrypt with, and only it (a worker's own key);
    # None: the usual lookup (WORKSPACE_ENCRYPTION_KEY, POLYCRATE_IDENTITY_FILE, the default identity file)
    # team mode: runs the parts of a sliced step on workers (team/slices.py; run/slicing.Slicer); None: one
    # after the other in this process
    slicer: Any = None


@record(frozen=True, eq=False, repr=False)
class RunRequest(Record):
    """What to run: a workflow (optionally one step of it) or one block action, and how."""

    root: Path  # the workspace root (workspace.find_root)
    workflow: str | None = None
    block: str | None = None
    action: str | None = None
    only_step: str | None = None
    options: RunOptions = field(default_factory=RunOptions)
    auto_pull: bool = False  # install missing `from:` blocks and upgrades without asking; a downgrade still asks
    early_zygote: EarlyZygote | None = None  # started by the caller before the workspace is read (zygote.prespawn);
    # the caller ends it after the run (discard): a step may have taken it, or none

    def __post_init__(self) -> None:
        if (self.workflow is None) == (self.block is None or self.action is None):
            raise PolycrateError("a run names either a workflow, or a block and one of its actions")
