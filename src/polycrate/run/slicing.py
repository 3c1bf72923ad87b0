"""A sliced step (`slices: N` on an ansible step, AWX's job slicing): its hosts run in N parts.

The step's hosts are its block's inventory after the run's --limit, in the inventory's own order
(config/inventory.inventory_list: ``ansible-inventory --list``, groups walked from ``all``). They are split
into at most N contiguous parts of near-equal size, and each part runs the step's action with ``--limit``
of its hosts (its own attempts, timeout and retries). Who runs the parts is the ``Slicer``: in team mode
team/slices.py enqueues one job per part and workers run them at once; without a backend
(``LocalSlicer``) they run here, one after the other, and the record looks the same.

The parts' outcomes combine into the step's: failed when any part failed (interrupted when one was stopped),
per-host counts summed, each part's log in the step's log under a heading that names the part and its hosts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from polycrate.run.context import RunContext
from polycrate.run.request import StepResult
from polycrate.run.step import StepOutput, run_attempts
from polycrate.states import StepState

if TYPE_CHECKING:
    from polycrate.history.protocol import LogWriter
    from polycrate.run.request import PlannedStep, Reporter, RunOptions
    from polycrate.runtime.toolchain import Runtime
    from polycrate.config.model import Workspace


@dataclass
class SliceOutcome:
    """How one part of a sliced step ended."""

    index: int  # 1-based
    hosts: tuple[str, ...]
    status: StepState
    exit_code: int | None = None
    attempts: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per host, as Ansible's recap
    failed_task: str | None = None
    failed_host: str | None = None
    message: str | None = None
    worker: str | None = None  # where it ran (None: in the run's own process)

    @classmethod
    def of(cls, index: int, hosts: tuple[str, ...], step: StepResult) -> SliceOutcome:
        return cls(index, hosts, step.status, step.exit_code, step.attempts, dict(step.hosts), step.failed_task,
                   step.failed_host, step.message)

    def to_record(self) -> dict[str, object]:
        return {"status": str(self.status), "exit_code": self.exit_code, "attempts": self.attempts,
                "counts": self.counts, "failed_task": self.failed_task, "failed_host": self.failed_host,
                "message": self.message}


class Slicer(Protocol):
    """Runs the parts of a sliced step and returns how each ended (every part, in order). It writes each
    part's output into ``output`` under ``heading``'s line; on an interrupt it stops the parts, writes what
    they said, and re-raises."""

    def run_slices(self, run: RunContext, step: StepResult, workflow: str | None, parts: list[tuple[str, ...]],
                   output: StepOutput) -> list[SliceOutcome]: ...


def heading(index: int, total: int, hosts: tuple[str, ...], where: str) -> str:
    return f"=== polycrate: slice {index} of {total}: hosts {', '.join(hosts)} ({where}) ==="


def ended(outcome: SliceOutcome, total: int) -> str:
    """The line that closes a part's log: how it ended (a line of its own, naming the part)."""
    said = f"polycrate: slice {outcome.index} of {total} (hosts {', '.join(outcome.hosts)}) {outcome.status}"
    return f"=== {said}" + (f": {outcome.message}" if outcome.message and outcome.status != StepState.SUCCEEDED
                            else "") + " ==="


def split(hosts: list[str], slices: int) -> list[tuple[str, ...]]:
    """At most ``slices`` contiguous parts of near-equal size (the first ones one longer), none empty."""
    count = min(slices, len(hosts))
    size, extra = divmod(len(hosts), count) if count else (0, 0)
    parts: list[tuple[str, ...]] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        parts.append(tuple(hosts[start:end]))
        start = end
    return parts


def step_hosts(run: RunContext, step: StepResult) -> list[str]:
    """The step's hosts: its block's inventory after the run's --limit, in the inventory's order."""
    from polycrate.config.action_view import block_inventory
    from polycrate.config.inventory import inventory_list

    inventory = block_inventory(run.ws, run.ws.blocks[step.block])
    names, _ = inventory_list(inventory, run.options.ansible.limit)
    return names or (["localhost"] if inventory is None and not run.options.ansible.limit else [])


def run_sliced(run: RunContext, step: StepResult, workflow: str | None, output: StepOutput, events_dir: Path) -> None:
    """execute_step's attempts for a step with ``slices`` > 1: split, run the parts (the run's slicer),
    combine. A step whose hosts are fewer than its slices runs fewer parts; none: it runs as it is (the
    preflight and the no-host rule say what that means)."""
    hosts = step_hosts(run, step)
    parts = split(hosts, step.plan.slices)
    if len(parts) <= 1:
        if parts and len(parts) < step.plan.slices:
            run.notice(f"step {step.name}: {len(hosts)} host(s) for {step.plan.slices} slices: runs as one part")
        run_attempts(run, step, workflow, output, events_dir)
        return
    slicer: Slicer = run.options.slicer or LocalSlicer(events_dir)
    run.notice(f"step {step.name}: {len(hosts)} hosts in {len(parts)} slices")
    outcomes = slicer.run_slices(run, step, workflow, parts, output)
    combine(step, outcomes, len(parts))


def combine(step: StepResult, outcomes: list[SliceOutcome], total: int) -> None:
    """The step's outcome from its parts': failed (or interrupted) when any part was, counts summed."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        for host, numbers in outcome.counts.items():
            mine = counts.setdefault(host, {})
            for key, value in numbers.items():
                mine[key] = mine.get(key, 0) + value
    step.hosts = counts
    step.attempts = max((o.attempts for o in outcomes), default=0)
    bad = [o for o in outcomes if o.status != StepState.SUCCEEDED]
    if not bad and len(outcomes) == total:
        step.status = StepState.SUCCEEDED
        step.exit_code = 0
        step.failed_task = step.failed_host = step.message = None
        return
    interrupted = [o for o in bad if o.status == StepState.INTERRUPTED]
    step.status = StepState.INTERRUPTED if interrupted and len(interrupted) == len(bad) else StepState.FAILED
    first = (bad or outcomes)[0]
    failed = next((o for o in bad if o.status == StepState.FAILED), first)
    step.exit_code = failed.exit_code
    step.failed_task, step.failed_host = failed.failed_task, failed.failed_host
    said = [f"slice {o.index} of {total} (hosts {', '.join(o.hosts)}) {o.status}"
            + (f": {o.message}" if o.message else "") for o in bad]
    step.message = "; ".join(said) if said else f"{total - len(outcomes)} of {total} slices did not report"


class LocalSlicer:
    """Without a backend: the parts one after the other in the run's own process."""

    def __init__(self, events_dir: Path) -> None:
        self.events_dir = events_dir

    def run_slices(self, run: RunContext, step: StepResult, workflow: str | None, parts: list[tuple[str, ...]],
                   output: StepOutput) -> list[SliceOutcome]:
        outcomes: list[SliceOutcome] = []
        for index, hosts in enumerate(parts, 1):
            output(heading(index, len(parts), hosts, "this host, one slice after the other without a backend"))
            part = StepResult(step.plan)
            folder = self.events_dir / f"slice-{index}"
            folder.mkdir()
            try:
                run_attempts(run, part, workflow, output, folder, limit=",".join(hosts))
            except BaseException:
                outcomes.append(SliceOutcome.of(index, hosts, part))
                combine(step, outcomes, len(parts))
                step.status = StepState.INTERRUPTED
                raise
            outcomes.append(SliceOutcome.of(index, hosts, part))
            output(ended(outcomes[-1], len(parts)))
        return outcomes


def run_slice_alone(ws: Workspace, runtime: Runtime, options: RunOptions, planned: PlannedStep,
                    workflow: str | None, index: int, hosts: tuple[str, ...], log: LogWriter,
                    reporter: Reporter) -> SliceOutcome:
    """One part of a sliced step in a process of its own (team/slices.py, on a worker): the step's action
    with --limit of its hosts, with the workspace's secrets and its own attempts, and nothing else of a
    run (no lock, no record: the run's own process records the step). An interrupt ends it as interrupted."""
    import shutil
    import tempfile

    from polycrate.run.opening import open_secrets, start_ssh_sharing

    run = RunContext(ws, reporter, options, runtime)
    part = StepResult(planned)
    events_dir = Path(tempfile.mkdtemp(prefix="polycrate-slice-"))
    try:
        try:
            start_ssh_sharing(run, [planned])
            open_secrets(run)
            run_attempts(run, part, workflow, StepOutput(run, log), events_dir, limit=",".join(hosts))
        except KeyboardInterrupt:
            part.status = StepState.INTERRUPTED
            part.message = part.message or "interrupted"
        return SliceOutcome.of(index, hosts, part)
    finally:
        log.close()
        shutil.rmtree(events_dir, ignore_errors=True)
        run.close()


__all__ = ["LocalSlicer", "SliceOutcome", "Slicer", "combine", "ended", "heading", "run_slice_alone",
           "run_sliced", "split"]
