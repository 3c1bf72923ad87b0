"""Launching a workflow run in team mode: recorded in ``team_runs`` and enqueued as a procrastinate job, in
one transaction.

One run per workflow, by construction: ``team_runs_one_active`` (a unique index over the launched, queued and
running runs of a workflow) refuses a second launch in the database, whatever host it comes from; the job's
procrastinate ``lock`` lets no two jobs of the workflow run at once, its ``queueing_lock`` lets no two wait;
and the run's own process holds the workflow's fence (a PostgreSQL advisory lock, ``fence_key``) for its whole
life, so a run whose worker was lost keeps the workflow locked until its process is really gone.

The worker runs exactly the git commit the workspace had at the launch (a dirty tree is refused here),
fetched from the workspace repository's remote recorded with the launch (team/source.py); a repository without
a remote is run from the same folder on the worker's host, at that commit or not at all.
"""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.errors import EXIT_LOCKED, PolycrateError
from polycrate.history.postgres import Connection, PostgresRunStore, connect
from polycrate.history.store import new_run_id
from polycrate.states import RunKind, RunState

TASK = "polycrate.run_workflow"
ACTIVE = ("queued", "running")  # team_runs.state of a run that holds its workflow


class AlreadyRunning(PolycrateError):
    """A run of the workflow is queued or running already (exit 3, as a held lock)."""

    exit_code = EXIT_LOCKED


@dataclass(frozen=True)
class Launch:
    """What a worker needs to run a workflow: where, which commit, how, and who asked."""

    workspace: str  # the workspace's name (the rows' `workspace`)
    root: Path
    workflow: str
    queue: str
    git_commit: str
    launched_by: str
    only_step: str | None = None
    options: dict[str, Any] | None = None  # check, diff, resume, runtime, ansible (AnsibleOptions.to_record)
    remote: str | None = None  # where the worker fetches the commit (team/source.py); None: the same folder
    subdir: str = ""  # the workspace's folder in that repository
    values: tuple[Any, ...] = ()  # team/values.LaunchValue: launch values that travel with the run (team_run_values)


def lock_name(workspace: str, workflow: str) -> str:
    """The procrastinate lock (and queueing lock) of a workflow's jobs."""
    return f"polycrate:{workspace}:workflow:{workflow}"


def fence_key(workspace: str, workflow: str) -> int:
    """The advisory-lock key a workflow's run holds while its process lives (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"polycrate-fence\0{workspace}\0{workflow}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _git(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True, timeout=60)


def workspace_commit(root: Path) -> str:
    """HEAD of the workspace's repository; a workspace outside git, without a commit or with uncommitted
    changes is refused (a worker runs exactly a commit)."""
    head = _git(root, "rev-parse", "--verify", "HEAD^{commit}")
    if head.returncode != 0:
        inside = _git(root, "rev-parse", "--is-inside-work-tree")
        what = "has no commit yet" if inside.returncode == 0 else "is not in a git repository"
        raise PolycrateError(f"team mode runs a committed workspace: {root} {what} (git init, git commit)")
    return head.stdout.strip()


def dirty_files(root: Path) -> list[str]:
    """Changed, staged or untracked files of the workspace folder (what .gitignore ignores does not count)."""
    status = _git(root, "status", "--porcelain", "--", ".")
    if status.returncode != 0:
        raise PolycrateError(f"git status failed in {root}: {status.stderr.strip() or status.returncode}")
    return [line[3:] for line in status.stdout.splitlines() if line.strip()]


def checked_commit(root: Path) -> str:
    commit = workspace_commit(root)
    dirty = dirty_files(root)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise PolycrateError(f"the workspace has uncommitted changes ({shown}): a worker runs a commit, so commit "
                             "them (or stash them) and launch again; nothing was queued", root)
    return commit


def enqueue(dsn: str, launch: Launch) -> str:
    """Record the run as queued and defer its job; its run id. A workflow with a run queued or running
    already is refused (AlreadyRunning names that run and its worker)."""
    import psycopg

    run_id = new_run_id()
    db = connect(dsn)
    try:
        try:
            with db.transaction():
                defer(db, launch, run_id)
        except psycopg.errors.UniqueViolation:
            raise AlreadyRunning(describe_active(db, launch.workspace, launch.workflow)) from None
        return run_id
    finally:
        db.close()


def defer(db: Connection, launch: Launch, run_id: str) -> None:
    """The launch's rows, in the caller's transaction (``enqueue``; a schedule's slot row joins them there).
    A workflow queued or running already raises psycopg's UniqueViolation."""
    lock = lock_name(launch.workspace, launch.workflow)
    db.execute(
        "INSERT INTO team_runs (workspace, id, workflow, only_step, queue, root, git_commit, options,"
        " launched_by, launched_host, launched, state) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'queued')",
        (launch.workspace, run_id, launch.workflow, launch.only_step, launch.queue, str(launch.root),
         launch.git_commit, json.dumps(launch.options or {}), launch.launched_by, socket.gethostname(),
         time.time()))
    row = db.execute(
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, %s, %s::jsonb, NULL)"
        "::procrastinate_job_to_defer_v1])) AS id",
        (launch.queue, TASK, lock, lock, json.dumps({"run_id": run_id, "workspace": launch.workspace})),
    ).fetchone()
    assert row is not None
    db.execute("UPDATE team_runs SET job_id = %s WHERE workspace = %s AND id = %s",
               (row["id"], launch.workspace, run_id))
    if launch.remote is not None:
        db.execute("INSERT INTO team_run_sources (workspace, id, remote, subdir) VALUES (%s,%s,%s,%s)",
                   (launch.workspace, run_id, launch.remote, launch.subdir))
    if launch.values:
        from polycrate.team.values import save

        save(db, launch.workspace, run_id, list(launch.values))


def queued_runs(dsn: str, workspaces: list[str], workflow: str | None = None, run_id: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    """Runs launched through the queue that no worker has taken yet, newest first: their team_runs rows (they
    have no history record yet). The server's pages and `polycrate runs list/show` both show them."""
    db = connect(dsn)
    try:
        rows: list[dict[str, Any]] = db.execute(
            "SELECT t.* FROM team_runs t WHERE t.state = 'queued' AND t.workspace = ANY(%s)"
            " AND (%s::text IS NULL OR t.workflow = %s) AND (%s::text IS NULL OR t.id = %s)"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.workspace = t.workspace AND r.id = t.id)"
            " ORDER BY t.launched DESC LIMIT %s",
            (workspaces, workflow, workflow, run_id, run_id, limit)).fetchall()
        return rows
    finally:
        db.close()


def queued_document(row: dict[str, Any], workspace: str) -> dict[str, Any]:
    """A queued run as the API and `runs show -o json` answer it: not a run document (it has no record yet),
    its launch, status 'queued'. Never the values of extra vars (they travel apart, secret ones sealed)."""
    options = row["options"] if isinstance(row["options"], dict) else {}
    ansible = options.get("ansible") or {}
    return {"id": row["id"], "workspace": workspace, "kind": RunKind.WORKFLOW.value, "name": row["workflow"],
            "workflow": row["workflow"], "status": "queued", "queue": row["queue"], "launched_by": row["launched_by"],
            "launched_host": row["launched_host"], "launched": row["launched"], "only_step": row["only_step"],
            "git_commit": row["git_commit"], "check_mode": bool(options.get("check")),
            "limit": ansible.get("limit"), "tags": ansible.get("tags") or None,
            "scheduled_slot": options.get("scheduled_slot")}


def describe_active(db: Connection, workspace: str, workflow: str) -> str:
    row = db.execute("SELECT * FROM team_runs WHERE workspace = %s AND workflow = %s AND state IN ('queued', 'running')"
                     " ORDER BY launched DESC LIMIT 1", (workspace, workflow)).fetchone()
    if row is None:  # it ended between the refusal and this question: a job of it is still queued or locked
        return f"workflow '{workflow}' is already queued or running (try again in a moment)"
    if row["state"] == "queued":
        return (f"workflow '{workflow}' is already queued: run {row['id']} (queue {row['queue']}, launched by "
                f"{row['launched_by']}), not started yet")
    return (f"workflow '{workflow}' is already running: run {row['id']} on worker {row['worker']} "
            f"(host {row['worker_host']}, pid {row['pid']}), launched by {row['launched_by']}")


def team_run(db: Connection, workspace: str, run_id: str) -> dict[str, Any] | None:
    row: dict[str, Any] | None = db.execute("SELECT * FROM team_runs WHERE workspace = %s AND id = %s",
                                            (workspace, run_id)).fetchone()
    return row


def resolve_team_run(dsn: str, workspace: str, ref: str) -> str | None:
    """A launched run's id from its id or a unique prefix (a queued run has no history record yet)."""
    db = connect(dsn)
    try:
        rows = db.execute("SELECT id FROM team_runs WHERE workspace = %s AND (id = %s OR id LIKE %s"
                          " OR substr(id, 17) LIKE %s) ORDER BY id LIMIT 2",
                          (workspace, ref, ref + "%", ref + "%")).fetchall()
    finally:
        db.close()
    exact = [r["id"] for r in rows if r["id"] == ref]
    return exact[0] if exact else rows[0]["id"] if len(rows) == 1 else None


def stop(dsn: str, workspace: str, run_id: str, by: str, via: str = "polycrate runs stop") -> str:
    """Ask a launched run to stop: a queued one is taken off the queue and recorded as interrupted here; a
    running one's own process sees the request within ``execute.POLL_SECONDS`` and stops its step. What
    happened, for people."""
    db = connect(dsn)
    try:
        with db.transaction():
            row = db.execute("SELECT * FROM team_runs WHERE workspace = %s AND id = %s FOR UPDATE",
                             (workspace, run_id)).fetchone()
            if row is None:
                raise PolycrateError(f"run {run_id} was not launched through the queue: stop it on its host "
                                     "(Ctrl-C, or the server's stop)")
            if row["state"] == "running":
                db.execute("UPDATE team_runs SET stop_requested_by = %s, stop_requested = %s WHERE workspace = %s"
                           " AND id = %s", (by, time.time(), workspace, run_id))
                return f"run {run_id}: stop requested (worker {row['worker']} on {row['worker_host']})"
            if row["state"] != "queued":
                raise PolycrateError(f"run {run_id} is not running (it is {row['state']})")
            reason = f"stopped by {by} before it started ({via})"
            db.execute("UPDATE team_runs SET state = 'done', stop_requested_by = %s, stop_requested = %s, reason = %s"
                       " WHERE workspace = %s AND id = %s", (by, time.time(), reason, workspace, run_id))
            if row["job_id"] is not None:
                db.execute("DELETE FROM procrastinate_jobs WHERE id = %s AND status = 'todo'", (row["job_id"],))
    finally:
        db.close()
    record_unstarted(dsn, row, RunState.INTERRUPTED, reason)
    return f"run {run_id}: taken off the queue before it started; recorded as interrupted"


def record_unstarted(dsn: str, row: dict[str, Any], status: RunState, reason: str,
                     store: PostgresRunStore | None = None) -> None:
    """A history record for a launched run that never reached its steps (refused, stopped while queued)."""
    own = store is None
    store = store or PostgresRunStore(dsn, workspace=row["workspace"])
    try:
        if store.find_run(row["id"]) is not None:
            return
        store.record_never_started(row["id"], workflow=row["workflow"], only_step=row["only_step"],
                                   user=row["launched_by"], status=status, message=reason)
    finally:
        if own:
            store.close()


__all__ = ["ACTIVE", "TASK", "AlreadyRunning", "Launch", "checked_commit", "defer", "describe_active", "enqueue",
           "fence_key", "lock_name", "record_unstarted", "stop", "workspace_commit"]
