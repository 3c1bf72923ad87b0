"""The run store's typed records: what every implementation of ``RunStore`` returns.

Frozen dataclasses, read by attribute (``run.status``, ``step.hosts["web1"].changed``). ``as_dict()``
gives the plain-dict shape the store has always had (``RunStore.get_run``'s dicts before the records:
a run's columns, ``duration``, ``workflow_success``, ``current_step`` and ``steps``, each step with its
``hosts``); the JSON contract (``polycrate.contract``) is built from the records themselves, not from
that dict. ``RunRecord.from_dict`` reads that shape back (tests, fixtures, the importer's checks).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import field, fields, replace
from typing import Any

from polycrate.runtime.events import HOST_COUNTS
from polycrate.states import Phase, RunKind, RunState, StepState
from polycrate.success import is_workflow_success
from polycrate.config.record import Record, record


def _state(kind: type[StepState | RunState | Phase | RunKind], value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:  # written by a newer polycrate: shown as it is
        return value


@record(frozen=True, eq=False, repr=False)
class HostCounts(Record):
    """One host's task counts in one step (Ansible's recap)."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @classmethod
    def from_mapping(cls, counts: Mapping[str, Any]) -> HostCounts:
        return cls(**{k: int(counts.get(k) or 0) for k in HOST_COUNTS})

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in HOST_COUNTS}


@record(frozen=True, eq=False, repr=False)
class Notice(Record):
    """Something polycrate said during a run (a lock wait, a retry, a failed webhook), with its time."""

    time: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "text": self.text}


@record(frozen=True, eq=False, repr=False)
class StepRecord(Record):
    """One step of a recorded run. ``log`` names the step's log (a path below the workspace for the
    SQLite store; the same name in PostgreSQL): None until the step wrote one. Read it through
    ``RunStore.read_log``/``step_logs``, never by opening the name."""

    position: int
    name: str
    status: StepState | str
    block: str | None = None
    action: str | None = None
    phase: Phase | str = Phase.MAIN
    exit_code: int | None = None
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    failed_task: str | None = None
    failed_host: str | None = None
    message: str | None = None
    note: str | None = None
    log: str | None = None
    hosts: Mapping[str, HostCounts] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], hosts: Mapping[str, HostCounts] | None = None) -> StepRecord:
        """A step from a store row (or ``as_dict()``'s shape): old wording of states reads as today's."""
        given = row.get("hosts") if hosts is None else hosts
        return cls(
            position=int(row["position"]),
            name=row["name"],
            status=_state(StepState, row["status"]),
            block=row.get("block"),
            action=row.get("action"),
            phase=_state(Phase, row.get("phase") or Phase.MAIN),
            exit_code=row.get("exit_code"),
            attempts=int(row.get("attempts") or 0),
            started=row.get("started"),
            ended=row.get("ended"),
            duration=row.get("duration"),
            failed_task=row.get("failed_task"),
            failed_host=row.get("failed_host"),
            message=row.get("message"),
            note=row.get("note"),
            log=row.get("log"),
            hosts={h: c if isinstance(c, HostCounts) else HostCounts.from_mapping(c) for h, c in (given or {}).items()},
        )

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["hosts"] = {h: c.as_dict() for h, c in self.hosts.items()}
        return data


RUN_COLUMNS = (
    "id", "kind", "name", "workflow", "block", "action", "only_step", "user", "host", "pid", "lock_key", "started",
    "ended", "status", "exit_code", "check_mode", "diff_mode", "resumed_from", "failed_step", "failed_task",
    "failed_host", "message", "notices", "ansible_options", "runtime", "image", "image_digest", "never_started",
)  # fmt: skip


@record(frozen=True, eq=False, repr=False)
class RunRecord(Record):
    """One recorded run. ``steps`` is filled by ``get_run`` (empty in ``list_runs``); ``current_step`` is the
    running step's name while the run runs (``list_runs``); ``duration`` is the time so far while it runs;
    ``workspace`` is the served workspace's key where a caller sets it (the server), else None.

    ``never_started``: a launched run stopped or refused before any process took it (team mode's queue); it
    has no steps, no duration, no host or pid, and ``started`` holds its end (its place in the history, for
    listing, ``since``/``until`` and paging), never a start: readers show it as "never started" (the
    contract's ``started`` is null)."""

    id: str
    kind: RunKind | str
    name: str
    started: float
    status: RunState | str
    workflow: str | None = None
    block: str | None = None
    action: str | None = None
    only_step: str | None = None
    user: str | None = None
    host: str | None = None
    pid: int | None = None
    lock_key: str | None = None
    ended: float | None = None
    exit_code: int | None = None
    check_mode: bool = False
    diff_mode: bool = False
    resumed_from: str | None = None
    failed_step: str | None = None
    failed_task: str | None = None
    failed_host: str | None = None
    message: str | None = None
    notices: tuple[Notice, ...] = ()
    ansible_options: Mapping[str, Any] = field(default_factory=dict)
    runtime: str | None = None  # where its actions ran: local or container (None: recorded before store v5)
    image: str | None = None  # the container's image, and its ID
    image_digest: str | None = None
    duration: float | None = None
    workflow_success: bool = False
    current_step: str | None = None
    steps: tuple[StepRecord, ...] = ()
    workspace: str | None = None
    # a run a team-mode schedule launched after its slot's time: how late (seconds) and why (get_run only)
    late_by: float | None = None
    late_reason: str | None = None
    # a run a team-mode worker ran: the commit of the workspace it ran, as launched (get_run only)
    git_commit: str | None = None
    never_started: bool = False

    @classmethod
    def from_columns(cls, row: Mapping[str, Any], *, steps: tuple[StepRecord, ...] = (),
                     current_step: str | None = None, now: float | None = None) -> RunRecord:
        """A run from its stored columns (notices and ansible_options already decoded); derives ``duration``
        (so far, while running) and ``workflow_success`` (polycrate.success, never stored)."""
        status = _state(RunState, row["status"])
        end = row.get("ended") or ((now or time.time()) if status == RunState.RUNNING else None)
        data: dict[str, Any] = {k: row.get(k) for k in RUN_COLUMNS}
        data["status"] = status
        data["kind"] = _state(RunKind, row["kind"])
        data["check_mode"] = bool(row.get("check_mode"))
        data["diff_mode"] = bool(row.get("diff_mode"))
        data["never_started"] = bool(row.get("never_started"))
        data["notices"] = tuple(n if isinstance(n, Notice) else Notice(float(n.get("time") or 0), str(n.get("text", "")))
                                for n in row.get("notices") or ())
        data["ansible_options"] = dict(row.get("ansible_options") or {})
        data["duration"] = round(end - row["started"], 3) if end and not data["never_started"] else None
        data["workflow_success"] = is_workflow_success({**data, "status": status})
        return cls(**data, steps=steps, current_step=current_step)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """A run from ``as_dict()``'s shape (with or without ``steps``)."""
        steps = tuple(StepRecord.from_mapping(s) for s in data.get("steps") or ())
        run = cls.from_columns(data, steps=steps, current_step=data.get("current_step"))
        if data.get("duration") is not None:
            run = replace(run, duration=data["duration"])
        return replace(run, workspace=data.get("workspace"))

    def as_dict(self) -> dict[str, Any]:
        """The run as a plain dict: the store's columns, ``duration``, ``workflow_success``, ``current_step``,
        ``steps`` (each ``StepRecord.as_dict()``); ``workspace`` only when set."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("steps", "workspace")}
        data["notices"] = [n.as_dict() for n in self.notices]
        data["ansible_options"] = dict(self.ansible_options)
        data["steps"] = [s.as_dict() for s in self.steps]
        if self.workspace is not None:
            data["workspace"] = self.workspace
        return data

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def nothing_ran(self) -> bool:
        """The run never started and no step of it has a record: there are no steps, hosts or log to show, only
        why (``message``). The one rule for every reader (``runs show``, the web view's run page)."""
        return self.never_started and not self.steps


@record(frozen=True, eq=False, repr=False)
class WorkflowStatus(Record):
    """A workflow's place in the history: its newest finished full run, its last success, a running run."""

    last: RunRecord | None
    last_success: float | None
    running: RunRecord | None


@record(frozen=True, eq=False, repr=False)
class LogPiece(Record):
    """What ``RunStore.read_log`` returns: the bytes after ``cursor``, and the cursor to read on from
    (opaque: a byte offset for files, a chunk number in PostgreSQL)."""

    data: bytes
    cursor: int
