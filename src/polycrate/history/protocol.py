"""The run store as a protocol: what the engine writes and what `runs`, the server and notifications read.

Two implementations: ``store.SQLiteRunStore`` (``.polycrate/runs.db`` in the workspace, the default) and
``postgres.PostgresRunStore`` (team mode: one PostgreSQL database for many workspaces and hosts).
tests/integration/test_runstore_conformance.py runs the same tests against both.

Only masked text reaches a store: the engine passes every line, message and notice through its one
masking function first. Nothing here prints.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from polycrate.history.records import LogPiece, RunRecord, StepRecord, WorkflowStatus


class LogWriter(Protocol):
    """A step's log as it is written: one line per output line, readable by others as it grows."""

    def write(self, line: str) -> None: ...

    def touch(self) -> None:
        """The step runs, silently: a sign of life where the store can read one back (a file's time)."""

    def close(self) -> None: ...


@runtime_checkable
class RunStore(Protocol):
    """Where runs, their steps, per-host counts and logs go. Reads return ``records`` (frozen dataclasses)."""

    #: what happened to a damaged store on this open (notices for the next run); [] for most stores
    recovered: list[str]

    def close(self) -> None: ...

    # --- writing ---------------------------------------------------------------------------

    def start_run(self, *, kind: str, name: str, workflow: str | None = None, block: str | None = None,
                  action: str | None = None, only_step: str | None = None, lock_key: str | None = None,
                  check: bool = False, diff: bool = False, resumed_from: str | None = None,
                  ansible_options: dict[str, Any] | None = None, run_id: str | None = None,
                  user: str | None = None, runtime: str | None = None, image: str | None = None,
                  image_digest: str | None = None) -> str:
        """Record a new running run; its id (``run_id`` as the caller chose it, or a new one; ``user`` who
        launched it, default the user running polycrate; where its actions run: ``runtime`` and, for the
        container, ``image`` and its ``image_digest``)."""
        ...

    def record_never_started(self, run_id: str, *, workflow: str, only_step: str | None, user: str, status: str,
                             message: str) -> None:
        """The finished record of a workflow run that never started (stopped while queued, a scheduled run
        refused by its lock or preflight): ``status`` and why, ended now, no steps (RunRecord.never_started)."""
        ...

    def add_steps(self, run_id: str, steps: list[dict[str, Any]]) -> None:
        """The planned steps (position, name, block, action, phase, status, note)."""
        ...

    def step_log(self, run_id: str, position: int, name: str) -> LogWriter: ...

    def update_step(self, run_id: str, position: int, **fields: Any) -> None:
        """Columns of a step: status, exit_code, attempts, started, ended, duration, failed_task, ... ."""
        ...

    def set_hosts(self, run_id: str, position: int, hosts: dict[str, dict[str, int]]) -> None:
        """A step's per-host counts (replacing earlier ones)."""
        ...

    def add_notice(self, run_id: str, text: str) -> None: ...

    def finish_run(self, run_id: str, *, status: str, exit_code: int, **fields: Any) -> None: ...

    def reconcile(self) -> int:
        """Mark 'running' runs whose process is known to be gone as interrupted; how many."""
        ...

    def prune(self, keep_runs: int | None = None, keep_days: float | None = None) -> list[str]:
        """Remove finished runs beyond the newest ``keep_runs`` or older than ``keep_days``, with their logs."""
        ...

    # --- reading ---------------------------------------------------------------------------

    def list_runs(self, *, name: str | None = None, kind: str | None = None, status: str | None = None,
                  since: float | None = None, until: float | None = None,
                  limit: int | None = 20) -> list[RunRecord]:
        """Runs newest first, without steps; a running run carries its current step."""
        ...

    def count_runs(self) -> int:
        """How many runs the store holds (what `runs list` says when a filter matches none)."""
        ...

    def resolve_id(self, ref: str) -> str:
        """A run id from an id, a unique prefix of one or of its random part, 'latest' or 'latest~N'."""
        ...

    def find_run(self, run_id: str) -> RunRecord | None:
        """The run of exactly this id without its steps, or None: no error, no prefix matching."""
        ...

    def get_run(self, ref: str) -> RunRecord:
        """One run (any form ``resolve_id`` takes) with its steps and their host counts."""
        ...

    def read_log(self, run_id: str, position: int, cursor: int = 0) -> LogPiece:
        """A step's log from ``cursor`` (0: the start) on, and the cursor to read on from."""
        ...

    def step_logs(self, ref: str, step: str | None = None) -> tuple[str, list[tuple[StepRecord, str]]]:
        """The run's id and each chosen step (all, or the one named) with its whole log as plain text (no
        colour codes; ``read_log`` gives the bytes as stored, colours included)."""
        ...

    def latest_full_run(self, workflow: str) -> RunRecord | None:
        """The newest finished run of the whole workflow (not --check, not --step), with its steps."""
        ...

    def workflow_status(self, workflow: str) -> WorkflowStatus: ...

    def workflow_metrics(self) -> list[dict[str, Any]]:
        """Per workflow: last full run and last success (notify.metrics renders them)."""
        ...

    def export_runs(self) -> Iterator[tuple[RunRecord, dict[int, bytes]]]:
        """Every run with its steps, oldest first, with each step's whole log (for `backend import`)."""
        ...

    def import_run(self, run: RunRecord, logs: dict[int, bytes]) -> bool:
        """Store a run exactly as given (id, times, steps, hosts, notices, logs); False, nothing changed,
        when a run of that id is already there."""
        ...
