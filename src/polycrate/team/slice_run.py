"""A part of a sliced step on a worker (team/slices.py enqueued it): the worker takes its job, claims it and
starts `polycrate worker slice BATCH INDEX` (``execute_slice``), a process of its own that runs the step's
action with --limit of the part's hosts (run/slicing.run_slice_alone) at the run's commit of the workspace.

The process writes its masked output into the part's row every ``FLUSH_SECONDS`` and its outcome at its end;
it takes no lock and opens no run record (the run's own process holds the workflow's lock and records the
step). A watchdog stops it (SIGTERM to itself, as Ctrl-C) when the run asks its parts to stop, when the run
is no longer running (its process was lost or killed), or when its worker is gone. A part whose process
ended without recording is finished by its worker, as failed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from polycrate.history.postgres import Connection, connect
from polycrate.states import StepState
from polycrate.team.execute import run_options, run_workspace
from polycrate.team.launch import team_run

FLUSH_SECONDS = 0.5
POLL_SECONDS = 0.2


async def supervise_slice(dsn: str, worker: str, lost_after: float, worker_id: int | None, batch: str,
                          index: int, extra: tuple[str, ...] = ()) -> None:
    """The worker's side (``worker``: its name; ``lost_after``: its --lost-after): claim the part, run its
    process, finish a part whose process did not."""
    import asyncio

    claimed = await asyncio.to_thread(_claim, dsn, worker, lost_after, worker_id, batch, index)
    if not claimed:
        return  # stopped while it waited, or lost already
    print(f"polycrate worker: {worker}: slice {index} of {batch[:8]} started", flush=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polycrate", "worker", "slice", batch, str(index), "--worker-pid", str(os.getpid()),
        *extra, stdin=asyncio.subprocess.DEVNULL)  # extra: the worker's --cache and --identity
    await asyncio.to_thread(_update, dsn, "UPDATE team_slices SET pid = %s WHERE batch = %s AND idx = %s",
                            (proc.pid, batch, index))
    code = await proc.wait()
    print(f"polycrate worker: {worker}: slice {index} of {batch[:8]} ended (exit {code})", flush=True)
    outcome = {"status": str(StepState.FAILED), "counts": {}, "attempts": 0,
               "message": f"its process ended by exit status {code} without recording an end"}
    await asyncio.to_thread(_update, dsn, "UPDATE team_slices SET state = 'done', ended = %s, outcome = %s::jsonb"
                            " WHERE batch = %s AND idx = %s AND state = 'running'",
                            (time.time(), json.dumps(outcome), batch, index))


def _claim(dsn: str, worker: str, lost_after: float, worker_id: int | None, batch: str, index: int) -> bool:
    db = connect(dsn)
    try:
        row = db.execute("UPDATE team_slices SET state = 'running', worker = %s, worker_host = %s, worker_id = %s,"
                         " lost_after = %s, started = %s WHERE batch = %s AND idx = %s AND state = 'queued'"
                         " AND stop_requested IS NULL AND EXISTS (SELECT 1 FROM team_runs r WHERE"
                         " r.workspace = team_slices.workspace AND r.id = team_slices.run_id AND r.state = 'running')"
                         " RETURNING idx",
                         (worker, socket.gethostname(), worker_id, lost_after, time.time(), batch,
                          index)).fetchone()
        if row is None:  # a part of a run that is gone (lost, killed) never starts; it ends saying so
            outcome = {"status": str(StepState.INTERRUPTED), "counts": {}, "attempts": 0,
                       "message": "not started: its run stopped or is gone"}
            db.execute("UPDATE team_slices SET state = 'done', ended = %s, outcome = %s::jsonb WHERE batch = %s AND"
                       " idx = %s AND state = 'queued'", (time.time(), json.dumps(outcome), batch, index))
        return row is not None
    finally:
        db.close()


def _update(dsn: str, sql: str, params: tuple[Any, ...]) -> None:
    db = connect(dsn)
    try:
        db.execute(sql, params)
    finally:
        db.close()


class SliceLog:
    """The part's output into its row (``team_slices.log``), at most FLUSH_SECONDS after a line was written
    (a timer: a part that prints a line and then waits is still shown live) and at close."""

    def __init__(self, db: Connection, batch: str, index: int) -> None:
        self.db, self.batch, self.index = db, batch, index
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def write(self, line: str) -> None:
        with self.lock:
            self.lines.append(line + "\n")
            if self.timer is None:
                self.timer = threading.Timer(FLUSH_SECONDS, self._on_timer)
                self.timer.daemon = True
                self.timer.start()

    def touch(self) -> None:
        """No sign of life here: the part's row keeps no time of its own."""

    def _on_timer(self) -> None:
        try:
            with self.lock:
                self.timer = None
                self._flush()
        except Exception:  # the backend is away: the lines stay buffered for the next flush
            pass

    def _flush(self) -> None:
        if self.lines:
            self.db.execute("UPDATE team_slices SET log = log || %s WHERE batch = %s AND idx = %s",
                            ("".join(self.lines), self.batch, self.index))
            self.lines.clear()

    def close(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self._flush()


class SliceWatchdog(threading.Thread):
    """SIGTERM to this process when the run asks its parts to stop or the worker that started it is gone."""

    def __init__(self, dsn: str, batch: str, index: int, worker_pid: int) -> None:
        super().__init__(name="polycrate-slice-watchdog", daemon=True)
        self.db = connect(dsn)
        self.batch, self.index, self.worker_pid = batch, index, worker_pid
        self.reason: str | None = None
        self.worker_gone = False  # the part is lost (its worker was killed), not stopped
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(POLL_SECONDS):
                if os.getppid() != self.worker_pid:
                    self.worker_gone = True
                    self._end_slice(f"its worker (pid {self.worker_pid}) ended")
                    return
                try:
                    row = self.db.execute(
                        "SELECT s.stop_requested, r.state FROM team_slices s LEFT JOIN team_runs r ON"
                        " r.workspace = s.workspace AND r.id = s.run_id WHERE s.batch = %s AND s.idx = %s",
                        (self.batch, self.index)).fetchone()
                except Exception:
                    self._end_slice("lost its connection to the backend")
                    return
                if row is not None and row["stop_requested"]:
                    self._end_slice("its run was stopped")
                    return
                if row is not None and row["state"] != "running":  # its run's process is gone (lost, killed)
                    self._end_slice(f"its run is {row['state'] or 'gone'}")
                    return
        finally:
            self.db.close()

    def _end_slice(self, reason: str) -> None:  # not _stop: threading.Thread has one of its own
        self.reason = reason
        print(f"polycrate: slice {self.index}: {reason}; stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


def execute_slice(dsn: str, batch: str, index: int, worker_pid: int, cache: Path | None = None,
                  identity: Path | None = None) -> int:
    """Run part ``index`` of the sliced step ``batch`` (in the run's commit, checked out in the worker's
    ``cache``; secrets with its ``identity``: execute.run_workspace); the exit code (0: it succeeded)."""
    db = connect(dsn)
    try:
        part = db.execute("SELECT * FROM team_slices WHERE batch = %s AND idx = %s", (batch, index)).fetchone()
        if part is None:
            print(f"polycrate: no slice {index} of {batch}", file=sys.stderr)
            return 1
        launched = team_run(db, part["workspace"], part["run_id"])
        root, problem = (None, "its run is not a launched run") if launched is None else \
            run_workspace(db, launched, cache, identity)
        if problem is not None or launched is None or root is None:
            _record(db, batch, index, {"status": str(StepState.FAILED), "counts": {}, "attempts": 0,
                                       "message": f"refused: {problem}; nothing executed"})
            return 1
        watchdog = SliceWatchdog(dsn, batch, index, worker_pid)
        watchdog.start()
        outcome: dict[str, Any]
        try:
            outcome = _run_part(dsn, db, part, launched, root, identity)
        except KeyboardInterrupt:
            outcome = {"status": str(StepState.INTERRUPTED), "counts": {}, "attempts": 0, "message": "interrupted"}
        except Exception as exc:
            outcome = {"status": str(StepState.FAILED), "counts": {}, "attempts": 0,
                       "message": f"refused: {type(exc).__name__}: {exc}; nothing executed"}
        watchdog.done.set()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the outcome is written now; nothing stops that half-way
        state = "done"
        if watchdog.worker_gone:  # as a part whose process went with its worker: lost, the step failed
            from polycrate.team.slices import lost_reason

            state = "lost"
            who = f"worker {part['worker']} on {part['worker_host']}" if part["worker"] else "its worker"
            outcome = {**outcome, "status": str(StepState.FAILED), "counts": {}, "message": lost_reason(
                f"{who} (pid {worker_pid}) ended while it ran; the part stopped itself")}
        elif watchdog.reason and outcome["status"] == str(StepState.INTERRUPTED):
            outcome["message"] = f"interrupted: {watchdog.reason}"
        _record(db, batch, index, outcome, state)
        return 0 if outcome["status"] == str(StepState.SUCCEEDED) else 130 \
            if outcome["status"] == str(StepState.INTERRUPTED) else 1
    finally:
        db.close()


def _run_part(dsn: str, db: Connection, part: dict[str, Any], launched: dict[str, Any], root: Path,
              identity: Path | None) -> dict[str, Any]:
    from polycrate.run import pipeline
    from polycrate.run.plan import plan_workflow
    from polycrate.run.request import Reporter, RunRequest
    from polycrate.run.slicing import run_slice_alone

    request = RunRequest(root, workflow=launched["workflow"], options=run_options(launched, dsn, identity))
    prepared = pipeline.prepare(request, confirm=lambda prompt: True, reporter=Reporter())
    ws = prepared.workspace
    workflow = ws.workflows[launched["workflow"]]
    planned = next(p for p in plan_workflow(ws, workflow) if p.name == part["step"] and str(p.phase) == part["phase"])
    outcome = run_slice_alone(ws, prepared.runtime, prepared.options, planned, workflow.name, part["idx"],
                              tuple(part["hosts"]), SliceLog(db, part["batch"], part["idx"]), Reporter())
    return outcome.to_record()


def _record(db: Connection, batch: str, index: int, outcome: dict[str, Any], state: str = "done") -> None:
    db.execute("UPDATE team_slices SET state = %s, ended = %s, outcome = %s::jsonb WHERE batch = %s AND idx = %s"
               " AND state IN ('queued', 'running')", (state, time.time(), json.dumps(outcome), batch, index))


__all__ = ["execute_slice", "supervise_slice"]
