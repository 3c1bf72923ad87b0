"""A sliced step in team mode, the run's side: its parts as jobs on the run's queue, followed and combined.

The run's own process (team/execute.py) hands ``TeamSlicer`` to the engine (RunOptions.slicer). At a step
with `slices: N` the engine splits the step's hosts (run/slicing.py) and the slicer records each part in
``team_slices`` and defers one procrastinate job for it on the run's slice queue (``slice_queue``: every
worker takes those beside its runs, so a run waiting for its slices never holds the slot a slice needs).
The jobs have no lock: the workflow's lock and fence stay with the run, and the parts run at once on as
many workers as are free. A worker starts each part as a process of its own (team/slice_run.py).

The run follows its parts every ``POLL_SECONDS``: a part that ended has its log copied into the step's log
under a heading naming the part, its hosts and its worker; a part whose worker stopped heartbeating for
that worker's ``--lost-after`` is marked lost (the step fails, saying so). When the run is stopped, it asks
its parts to stop (each one's process watches ``stop_requested``), takes the queued ones off the queue,
waits up to ``STOP_WAIT`` for the running ones to record, and re-raises.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from polycrate.history.postgres import Connection, connect
from polycrate.run.slicing import SliceOutcome, combine, heading
from polycrate.states import StepState

if TYPE_CHECKING:
    from polycrate.run.context import RunContext
    from polycrate.run.request import StepResult
    from polycrate.run.step import StepOutput

SLICE_TASK = "polycrate.run_slice"
POLL_SECONDS = 0.25
STOP_WAIT = 20.0  # seconds a stopped run waits for its running parts to record their end
DEFAULT_LOST_AFTER = 30.0  # a part taken by a worker that did not say its own


def slice_queue(queue: str) -> str:
    """The queue of the parts of the sliced steps of runs on ``queue`` (taken by that queue's workers)."""
    return f"{queue}.slices"


class TeamSlicer:
    """run/slicing.Slicer for a launched run: the parts on workers, at once."""

    def __init__(self, dsn: str, workspace: str, run_id: str, queue: str) -> None:
        self.dsn = dsn
        self.workspace = workspace
        self.run_id = run_id
        self.queue = queue

    def run_slices(self, run: RunContext, step: StepResult, workflow: str | None, parts: list[tuple[str, ...]],
                   output: StepOutput) -> list[SliceOutcome]:
        batch = uuid.uuid4().hex
        db = connect(self.dsn)
        try:
            self._enqueue(db, batch, step, parts)
            outcomes: dict[int, SliceOutcome] = {}
            try:
                self._follow(db, batch, run, step, len(parts), outcomes, output)
            except BaseException:
                self._stop(db, batch, len(parts), outcomes, output)
                combine(step, [outcomes[i] for i in sorted(outcomes)], len(parts))
                step.status = StepState.INTERRUPTED
                raise
            return [outcomes[i] for i in sorted(outcomes)]
        finally:
            db.close()

    def _enqueue(self, db: Connection, batch: str, step: StepResult, parts: list[tuple[str, ...]]) -> None:
        with db.transaction():
            for index, hosts in enumerate(parts, 1):
                db.execute("INSERT INTO team_slices (batch, idx, total, workspace, run_id, step, phase, hosts, state)"
                           " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,'queued')",
                           (batch, index, len(parts), self.workspace, self.run_id, step.name, str(step.phase),
                            list(hosts)))
                row = db.execute(
                    "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, NULL, %s::jsonb, NULL)"
                    "::procrastinate_job_to_defer_v1])) AS id",
                    (slice_queue(self.queue), SLICE_TASK, json.dumps({"batch": batch, "index": index})),
                ).fetchone()
                assert row is not None
                db.execute("UPDATE team_slices SET job_id = %s WHERE batch = %s AND idx = %s", (row["id"], batch, index))

    def _rows(self, db: Connection, batch: str) -> list[dict[str, Any]]:
        return list(db.execute(
            "SELECT s.*, j.status AS job_status, w.id IS NOT NULL AS alive,"
            " EXTRACT(EPOCH FROM (NOW() - w.last_heartbeat)) AS silent"
            " FROM team_slices s LEFT JOIN procrastinate_jobs j ON j.id = s.job_id"
            " LEFT JOIN procrastinate_workers w ON w.id = j.worker_id WHERE s.batch = %s ORDER BY s.idx",
            (batch,)).fetchall())

    def _follow(self, db: Connection, batch: str, run: RunContext, step: StepResult, total: int,
                outcomes: dict[int, SliceOutcome], output: StepOutput) -> None:
        announced: set[int] = set()
        while len(outcomes) < total:
            for row in self._rows(db, batch):
                index = row["idx"]
                if index in outcomes:
                    continue
                if row["state"] in ("done", "lost"):
                    outcomes[index] = self._collect(row, total, output)
                    continue
                taken = row["state"] == "running" or row["job_status"] == "doing"
                if row["state"] == "running" and index not in announced:
                    announced.add(index)
                    run.notice(f"step {step.name}: slice {index} of {total} (hosts {', '.join(row['hosts'])}) "
                               f"started on worker {row['worker']}")
                limit = float(row["lost_after"] or DEFAULT_LOST_AFTER)
                if taken and (not row["alive"] or (row["silent"] is not None and float(row["silent"]) > limit)):
                    self._lose(db, row, limit)
            if len(outcomes) < total:
                time.sleep(POLL_SECONDS)

    def _lose(self, db: Connection, row: dict[str, Any], limit: float) -> None:
        who = f"worker {row['worker']} on {row['worker_host']}" if row["worker"] else "the worker that took it"
        reason = (f"lost: {who} stopped heartbeating (none for {limit:g}s); what its hosts did is not known, "
                  "and it is not run again by itself")
        outcome = {"status": str(StepState.FAILED), "message": reason, "counts": {}, "attempts": 0}
        with db.transaction():
            db.execute("UPDATE team_slices SET state = 'lost', ended = %s, outcome = %s::jsonb WHERE batch = %s AND"
                       " idx = %s AND state IN ('queued', 'running')",
                       (time.time(), json.dumps(outcome), row["batch"], row["idx"]))
            if row["job_id"] is not None and row["job_status"] == "doing":
                db.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (row["job_id"],))

    def _collect(self, row: dict[str, Any], total: int, output: StepOutput) -> SliceOutcome:
        """The ended part's outcome; its log into the step's log under its heading."""
        hosts = tuple(row["hosts"])
        where = f"worker {row['worker']} on {row['worker_host']}" if row["worker"] else "no worker"
        output(heading(row["idx"], total, hosts, where + (", lost" if row["state"] == "lost" else "")))
        for line in (row["log"] or "").splitlines():
            output(line)
        got = row["outcome"] or {}
        outcome = SliceOutcome(row["idx"], hosts, StepState(got.get("status") or StepState.FAILED),
                               got.get("exit_code"), int(got.get("attempts") or 0), got.get("counts") or {},
                               got.get("failed_task"), got.get("failed_host"),
                               got.get("message") or (None if got else "it ended without recording how"),
                               worker=row["worker"])
        if outcome.message and row["state"] == "lost":
            output(f"polycrate: {outcome.message}")
        return outcome

    def _stop(self, db: Connection, batch: str, total: int, outcomes: dict[int, SliceOutcome],
              output: StepOutput) -> None:
        """The run is stopping: its parts stop too; what they said goes into the step's log."""
        try:
            now = time.time()
            stopped = {"status": str(StepState.INTERRUPTED), "message": "stopped before it started", "counts": {},
                       "attempts": 0}
            with db.transaction():
                db.execute("UPDATE team_slices SET stop_requested = %s WHERE batch = %s AND state IN"
                           " ('queued', 'running')", (now, batch))
                for row in db.execute("SELECT s.idx, s.job_id FROM team_slices s JOIN procrastinate_jobs j ON"
                                      " j.id = s.job_id WHERE s.batch = %s AND s.state = 'queued' AND"
                                      " j.status = 'todo' FOR UPDATE OF s", (batch,)).fetchall():
                    db.execute("DELETE FROM procrastinate_jobs WHERE id = %s AND status = 'todo'", (row["job_id"],))
                    db.execute("UPDATE team_slices SET state = 'done', ended = %s, outcome = %s::jsonb WHERE"
                               " batch = %s AND idx = %s", (now, json.dumps(stopped), batch, row["idx"]))
            deadline = time.monotonic() + STOP_WAIT
            while len(outcomes) < total and time.monotonic() < deadline:
                for row in self._rows(db, batch):
                    if row["idx"] not in outcomes and row["state"] in ("done", "lost"):
                        outcomes[row["idx"]] = self._collect(row, total, output)
                if len(outcomes) < total:
                    time.sleep(POLL_SECONDS)
        except Exception:  # the backend is away: the record says what is known
            pass


__all__ = ["SLICE_TASK", "TeamSlicer", "slice_queue"]
