"""A sliced step in team mode, the run's side: its parts as jobs on the run's queue, followed and combined.

The run's own process (team/execute.py) hands ``TeamSlicer`` to the engine (RunOptions.slicer). At a step
with `slices: N` the engine splits the step's hosts (run/slicing.py) and the slicer records each part in
``team_slices`` and defers one procrastinate job for it on the run's slice queue (``slice_queue``: every
worker takes those beside its runs, so a run waiting for its slices never holds the slot a slice needs).
The jobs have no lock: the workflow's lock and fence stay with the run, and the parts run at once on as
many workers as are free. A worker starts each part as a process of its own (team/slice_run.py).

The run follows its parts every ``POLL_SECONDS``: each part's new lines (its process writes them into its row
every slice_run.FLUSH_SECONDS, masked) go into the step's log as they come (``PartLogs``), in blocks under a
heading naming the part, its hosts and its worker, so `runs logs --follow` and the web page show every part
live from any host; at a part's end the rest of its lines and a line saying how it ended. A part whose
worker stopped heartbeating for that worker's ``--lost-after`` is marked lost (the step fails, saying so);
the workers' reaper (``reap_slices``, from worker.reap) does the same when the run's process is not there
to, and finishes the part's job as failed, so procrastinate neither retries it nor keeps it 'doing'.
When the run is stopped, it asks its parts to stop (each one's process watches ``stop_requested``), takes the
queued ones off the queue, waits up to ``STOP_WAIT`` for the running ones to record, and re-raises.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from polycrate.history.postgres import Connection, connect
from polycrate.run.slicing import SliceOutcome, combine, ended, heading
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

    logs: PartLogs

    def __init__(self, dsn: str, workspace: str, run_id: str, queue: str) -> None:
        self.dsn = dsn
        self.workspace = workspace
        self.run_id = run_id
        self.queue = queue

    def run_slices(self, run: RunContext, step: StepResult, workflow: str | None, parts: list[tuple[str, ...]],
                   output: StepOutput) -> list[SliceOutcome]:
        batch = uuid.uuid4().hex
        db = connect(self.dsn)
        self.logs = PartLogs(db, batch, len(parts), output)
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
        # the parts' logs are read by PartLogs, only what is new: not the whole text at every poll
        return list(db.execute(
            "SELECT s.batch, s.idx, s.hosts, s.state, s.job_id, s.worker, s.worker_host, s.lost_after, s.outcome,"
            " length(s.log) AS log_length, j.status AS job_status, w.id IS NOT NULL AS alive,"
            " EXTRACT(EPOCH FROM (NOW() - w.last_heartbeat)) AS silent"
            " FROM team_slices s LEFT JOIN procrastinate_jobs j ON j.id = s.job_id"
            " LEFT JOIN procrastinate_workers w ON w.id = j.worker_id WHERE s.batch = %s ORDER BY s.idx",
            (batch,)).fetchall())

    def _follow(self, db: Connection, batch: str, run: RunContext, step: StepResult, total: int,
                outcomes: dict[int, SliceOutcome], output: StepOutput) -> None:
        announced: set[int] = set()
        logs = self.logs
        while len(outcomes) < total:
            for row in self._rows(db, batch):
                index = row["idx"]
                if index in outcomes:
                    continue
                if row["state"] in ("done", "lost"):
                    outcomes[index] = self._collect(row, total, output)
                    continue
                logs.follow(row)  # a running part's new lines, live, under its heading
                taken = row["state"] == "running" or row["job_status"] == "doing"
                if row["state"] == "running" and index not in announced:
                    announced.add(index)
                    run.notice(f"step {step.name}: slice {index} of {total} (hosts {', '.join(row['hosts'])}) "
                               f"started on worker {row['worker']}")
                limit = float(row["lost_after"] or DEFAULT_LOST_AFTER)
                if taken and (not row["alive"] or (row["silent"] is not None and float(row["silent"]) > limit)):
                    who = f"worker {row['worker']} on {row['worker_host']}" if row["worker"] else \
                        "the worker that took it"
                    lose_part(db, batch, index, f"{who} stopped heartbeating (none for {limit:g}s)")
            if len(outcomes) < total:
                time.sleep(POLL_SECONDS)

    def _collect(self, row: dict[str, Any], total: int, output: StepOutput) -> SliceOutcome:
        """The ended part's outcome; the rest of its log into the step's log under its heading."""
        hosts = tuple(row["hosts"])
        self.logs.follow(row, ended=True)
        got = row["outcome"] or {}
        outcome = SliceOutcome(row["idx"], hosts, StepState(got.get("status") or StepState.FAILED),
                               got.get("exit_code"), int(got.get("attempts") or 0), got.get("counts") or {},
                               got.get("failed_task"), got.get("failed_host"),
                               got.get("message") or (None if got else "it ended without recording how"),
                               worker=row["worker"])
        output(ended(outcome, total))  # a line of its own that names the part: the next part's lines get a heading
        self.logs.current = None
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


def continued(index: int, total: int) -> str:
    """The heading of a part's lines that come after another part's (the step's live log interleaves them)."""
    return f"=== polycrate: slice {index} of {total} (continued) ==="


class PartLogs:
    """The parts' new lines into the step's log while they run: each part's lines in the order it wrote them,
    each line once, in blocks under the part's heading (the full one the first time, ``continued`` when
    another part's lines came in between). Only whole lines are taken while a part runs; all at its end."""

    def __init__(self, db: Connection, batch: str, total: int, output: StepOutput) -> None:
        self.db, self.batch, self.total, self.output = db, batch, total, output
        self.offsets: dict[int, int] = {}  # characters of each part's log already written
        self.headed: set[int] = set()
        self.current: int | None = None  # the part whose block the step's log is in

    def follow(self, row: dict[str, Any], ended: bool = False) -> None:
        index = row["idx"]
        offset = self.offsets.get(index, 0)
        lines: list[str] = []
        if int(row["log_length"] or 0) > offset:
            got = self.db.execute("SELECT substr(log, %s) AS text FROM team_slices WHERE batch = %s AND idx = %s",
                                  (offset + 1, self.batch, index)).fetchone()
            text = got["text"] if got is not None else ""
            end = len(text) if ended else text.rfind("\n") + 1  # a line the part is still writing waits
            lines = text[:end].splitlines()
            self.offsets[index] = offset + end
        if lines or (ended and index not in self.headed):  # a part that printed nothing still has its heading
            self._head(row)
        for line in lines:
            self.output(line)

    def _head(self, row: dict[str, Any]) -> None:
        index = row["idx"]
        if self.current == index:
            return
        self.current = index
        if index in self.headed:
            self.output(continued(index, self.total))
            return
        self.headed.add(index)
        where = f"worker {row['worker']} on {row['worker_host']}" if row["worker"] else "no worker"
        self.output(heading(index, self.total, tuple(row["hosts"]), where))


def lost_reason(why: str) -> str:
    return f"lost: {why}; what its hosts did is not known, and it is not run again by itself"


def lose_part(db: Connection, batch: str, index: int, why: str) -> bool:
    """Part ``index`` is lost (its worker is gone): failed, saying ``why``; its job finished as failed, so
    procrastinate neither retries it nor keeps it 'doing'. False: it had ended already (its job is finished
    all the same)."""
    outcome = {"status": str(StepState.FAILED), "message": lost_reason(why), "counts": {}, "attempts": 0}
    with db.transaction():
        row = db.execute("UPDATE team_slices SET state = 'lost', ended = %s, outcome = %s::jsonb WHERE batch = %s"
                         " AND idx = %s AND state IN ('queued', 'running') RETURNING job_id",
                         (time.time(), json.dumps(outcome), batch, index)).fetchone()
        job = db.execute("SELECT job_id FROM team_slices WHERE batch = %s AND idx = %s", (batch, index)).fetchone()
        if job is not None and job["job_id"] is not None:
            finish_job(db, job["job_id"])
    return row is not None


def finish_job(db: Connection, job_id: int) -> bool:
    """A part's procrastinate job finished as failed (not retried) unless it ended already; in the caller's
    transaction (the row lock makes two reapers finish it once)."""
    got = db.execute("SELECT status FROM procrastinate_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
    if got is None or got["status"] not in ("todo", "doing"):
        return False
    db.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job_id,))
    return True


STALLED_SLICE_JOBS = f"""
SELECT job.id FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers w ON w.id = job.worker_id
 WHERE job.status = 'doing' AND job.task_name = '{SLICE_TASK}'
   AND (w.id IS NULL OR w.last_heartbeat < NOW() - (%s || ' SECOND')::INTERVAL)
   AND (job.worker_id IS NULL OR NOT job.worker_id = ANY(%s))
"""


def reap_slices(db: Connection, lost_after: float, mine: list[int]) -> list[str]:
    """The jobs of parts whose worker stopped heartbeating for ``lost_after`` seconds (never those of the
    caller's procrastinate workers ``mine``): the part lost, the job finished as failed. The run's own process
    sees the part lost and fails the step; a part that ended already (its process recorded it) keeps its
    outcome. What was done, for the worker's log."""
    said: list[str] = []
    for job in db.execute(STALLED_SLICE_JOBS, (str(lost_after), mine)).fetchall():
        part = db.execute("SELECT batch, idx, total, run_id, hosts, worker, worker_host FROM team_slices"
                          " WHERE job_id = %s", (job["id"],)).fetchone()
        if part is None:
            with db.transaction():
                finish_job(db, job["id"])
            continue
        who = f"worker {part['worker']} on {part['worker_host']}" if part["worker"] else "the worker that took it"
        lost = lose_part(db, part["batch"], part["idx"], f"{who} stopped heartbeating (none for {lost_after:g}s)")
        said.append(f"slice {part['idx']} of {part['total']} (hosts {', '.join(part['hosts'])}) of run "
                    f"{part['run_id']}: " + ("lost; " if lost else "") + f"its job {job['id']} finished as failed "
                    "(not retried)")
    return said


__all__ = ["SLICE_TASK", "PartLogs", "TeamSlicer", "continued", "lose_part", "lost_reason", "reap_slices",
           "slice_queue"]
