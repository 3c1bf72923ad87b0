"""One launched run's own process on a worker's host (`polycrate worker execute RUN`, started by the worker).

It takes the workflow's fence (``launch.fence_key``) on a connection of its own and holds it for its whole
life; then gets the workspace (the launched commit, checked out from the recorded remote in the worker's cache,
team/source.py; without a remote, the folder the launch named, at that commit), checks that the worker's age
identity reads its secrets (team/identity.py) (what fails fails the run, nothing executed) and runs the workflow
through run/'s pipeline, recorded in the backend.

A watchdog thread asks PostgreSQL every ``POLL_SECONDS`` on the fence's connection whether someone asked the
run to stop (`polycrate runs stop`), and watches the worker that started it. When the run is asked to stop,
when its worker is gone, or when that connection fails (the fence may be gone: another copy could start),
the process stops itself as Ctrl-C does: SIGTERM to itself, the engine stops the step's process group and
records the run. Then it makes the record say why (``settle``), retrying while the backend is away.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from polycrate import ansi
from polycrate.errors import Interrupted, PolycrateError, stopped_by
from polycrate.history.postgres import Connection, PostgresRunStore, connect
from polycrate.states import Phase, RunState, StepState
from polycrate.team.slices import TeamSlicer
from polycrate.team.launch import dirty_files, fence_key, record_unstarted, team_run, workspace_commit

POLL_SECONDS = 0.2  # a stop request or a lost connection is seen this late at most (plus one round trip)
SETTLE_SECONDS = 120.0  # how long a stopped run keeps trying to reach the backend to record why


def fence_connection(dsn: str) -> Connection:
    import psycopg
    from psycopg.rows import dict_row

    from polycrate.history.postgres import BackendUnreachable, safe_dsn

    try:
        return psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=10,
                               application_name="polycrate-run",
                               # a backend host that went silent fails the connection within ~10 s (libpq's
                               # keepalives, TCP_USER_TIMEOUT): the watchdog's query does not hang for good
                               keepalives=1, keepalives_idle=5, keepalives_interval=1, keepalives_count=3,
                               tcp_user_timeout=10000)
    except psycopg.Error as exc:
        raise BackendUnreachable(f"cannot connect to the backend {safe_dsn(dsn)}: {str(exc).strip()[:200]}") from None


class Watchdog(threading.Thread):
    """Stops the run's process (SIGTERM to itself) when it is asked to, when its worker is gone, or when the
    fence's connection fails; ``reason`` says which."""

    def __init__(self, db: Connection, workspace: str, run_id: str, worker_pid: int):
        super().__init__(name="polycrate-watchdog", daemon=True)
        self.db = db
        self.workspace = workspace
        self.run_id = run_id
        self.worker_pid = worker_pid
        self.reason: str | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            if os.getppid() != self.worker_pid:
                self._stop_run(f"its worker (pid {self.worker_pid} on {socket.gethostname()}) ended; the run stopped "
                               "with it")
                return
            try:
                row = self.db.execute("SELECT stop_requested_by FROM team_runs WHERE workspace = %s AND id = %s",
                                      (self.workspace, self.run_id)).fetchone()
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self._stop_run(f"lost its connection to the backend, which holds the workflow's fence ({first}); "
                               "the run stopped itself so that no second copy can overlap it")
                return
            if row is not None and row["stop_requested_by"]:
                self._stop_run(stopped_by(row["stop_requested_by"]))
                return

    def _stop_run(self, reason: str) -> None:
        if self._done.is_set():
            return
        self.reason = reason
        print(f"polycrate: run {self.run_id}: {reason}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler: Interrupted in the main thread, as Ctrl-C

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=5)


def run_options(row: dict[str, Any], dsn: str, identity: Path | None = None) -> Any:
    from polycrate.run.request import RunOptions
    from polycrate.runtime.ansible_options import AnsibleOptions

    given = row["options"] or {}
    return RunOptions(check=bool(given.get("check")), diff=bool(given.get("diff")), resume=bool(given.get("resume")),
                      runtime=given.get("runtime"), ansible=AnsibleOptions.from_record(given.get("ansible") or {}),
                      run_id=row["id"], launched_by=row["launched_by"], backend=dsn, identity=identity,
                      display_env=ansi.ansible_colour(os.environ),  # the log in colour, as a server's launch
                      command=f"polycrate workflows run {row['workflow']} (launched by {row['launched_by']})",
                      slicer=TeamSlicer(dsn, row["workspace"], row["id"], row["queue"]))


def workspace_problem(root: Path, commit: str) -> str | None:
    """Why this host cannot run the launch's commit of the workspace, or None."""
    if not (root / "workspace.poly").is_file():
        return f"the workspace folder {root} is not on this worker's host (or holds no workspace.poly)"
    try:
        here = workspace_commit(root)
        dirty = dirty_files(root)
    except PolycrateError as exc:
        return str(exc)
    if here != commit:
        return (f"the workspace {root} is at commit {here[:12]} on this host, the launch asked for {commit[:12]} "
                "and its repository has no remote to fetch that from: push it to a remote (or name one in "
                "workspace.poly, team: {remote: NAME-or-URL}), or check out that commit there, and launch again")
    if dirty:
        return f"the workspace {root} has uncommitted changes on this host ({', '.join(dirty[:3])})"
    return None


def run_workspace(db: Connection, row: dict[str, Any], cache: Path | None,
                  identity: Path | None) -> tuple[Path, str | None]:
    """The workspace folder this run runs, and why it cannot run (or None): the launched commit checked out from
    the recorded remote (team/source.py), or, for a launch without one, the same folder on this host; then
    whether the worker's identity reads its secrets (team/identity.py) and opens the launch's values."""
    from polycrate.team.identity import secrets_problem
    from polycrate.team.source import SourceUnavailable, WorkspaceSource, checkout, default_cache

    found = db.execute("SELECT remote, subdir FROM team_run_sources WHERE workspace = %s AND id = %s",
                       (row["workspace"], row["id"])).fetchone()
    root = Path(row["root"])
    if found is None:
        problem = workspace_problem(root, row["git_commit"])
    else:
        try:
            # held (its fd open) until this process ends: the worker's cache does not prune it under the run
            root = checkout(cache or default_cache(socket.gethostname()), WorkspaceSource(found["remote"],
                            found["subdir"]), row["git_commit"]).root
            problem = None
        except SourceUnavailable as exc:
            problem = str(exc)
    problem = problem or secrets_problem(root, identity)
    if problem is None:  # the launch's values, from the backend (team/values.py): row["options"] names them
        from polycrate.team.values import open_values

        problem = open_values(db, row, identity)
    return root, problem


def execute(dsn: str, workspace: str, run_id: str, worker_pid: int, cache: Path | None = None,
            identity: Path | None = None) -> int:
    """Run the launched run ``run_id`` (``cache``: the worker's cache of fetched workspaces; ``identity``: its
    age identity); the exit code of polycrate for it."""
    fence = fence_connection(dsn)
    try:
        row = team_run(fence, workspace, run_id)
        if row is None:
            raise PolycrateError(f"no launched run {run_id} in workspace '{workspace}'")
        key = fence_key(workspace, row["workflow"])
        held = fence.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
        if held is None or not held["ok"]:
            reason = (f"another process of workflow '{row['workflow']}' still holds its fence (a lost run that still "
                      "runs?); nothing executed")
            record_unstarted(dsn, row, RunState.FAILED, reason)
            finish_team_run(dsn, workspace, run_id, reason)
            return 1
        fence.execute("UPDATE team_runs SET pid = %s, started = %s WHERE workspace = %s AND id = %s",
                      (os.getpid(), time.time(), workspace, run_id))
        root, problem = run_workspace(fence, row, cache, identity)
        if problem is not None:
            reason = f"refused: {problem}; nothing executed"
            record_unstarted(dsn, row, RunState.FAILED, reason)
            finish_team_run(dsn, workspace, run_id, reason)
            print(f"polycrate: run {run_id}: {reason}", file=sys.stderr, flush=True)
            return 1
        return _run(dsn, fence, row, worker_pid, root, identity)
    finally:
        from polycrate.team.values import remove_opened

        remove_opened()  # the launch's opened values go with the run
        try:
            fence.close()  # the fence goes with it (and with the process, whatever ends it)
        except Exception:
            pass


def _run(dsn: str, fence: Connection, row: dict[str, Any], worker_pid: int, root: Path,
         identity: Path | None) -> int:
    from polycrate.run import pipeline
    from polycrate.run.request import Reporter, RunRequest
    from polycrate.success import exit_code_of

    watchdog = Watchdog(fence, row["workspace"], row["id"], worker_pid)
    _say_why_on_sigterm(watchdog)
    request = RunRequest(root, workflow=row["workflow"], only_step=row["only_step"],
                         options=run_options(row, dsn, identity))
    error: str | None = None
    code = 1
    watchdog.start()
    try:
        try:
            result = pipeline.run(request, confirm=lambda prompt: True, reporter=Reporter())
            code = exit_code_of(result.status) if result.status.finished else 1
        except KeyboardInterrupt:
            code = 130
        except PolycrateError as exc:
            error, code = f"{exc}; nothing executed", exc.exit_code
        except Exception as exc:  # the backend went away under the engine: settle() records what is known
            error, code = f"stopped by an error in polycrate: {type(exc).__name__}: {exc}", 1
    except KeyboardInterrupt:  # a second signal while the first was handled
        code = 130
    try:
        watchdog.finish()
    except KeyboardInterrupt:  # its own signal, delivered late
        pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the record is written now; nothing stops that half-way
    reason = watchdog.reason
    if reason is None and os.getppid() != worker_pid:
        reason = f"its worker (pid {worker_pid}) ended; the run stopped with it"
    settle(dsn, row, reason, error)
    finish_team_run(dsn, row["workspace"], row["id"], reason or error)
    return code


def _say_why_on_sigterm(watchdog: Watchdog) -> None:
    """The watchdog stops the run with a SIGTERM to this process: the interrupt it raises carries the
    watchdog's reason (who asked for the stop), so that the engine's first write of the record says it."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if not callable(previous):  # not under the CLI's handler (it always is under `worker execute`)
            raise Interrupted(signal.Signals(signum).name, watchdog.reason)
        try:
            previous(signum, frame)
        except Interrupted as exc:
            exc.reason = exc.reason or watchdog.reason
            raise

    signal.signal(signal.SIGTERM, on_sigterm)


def _retrying(what: Any) -> Any:
    """``what()`` until it succeeds or SETTLE_SECONDS pass (the backend may be restarting)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            return what()
        except PolycrateError:
            if time.monotonic() > deadline:
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def settle(dsn: str, row: dict[str, Any], reason: str | None, error: str | None) -> None:
    """Make the run's record true once its process has done what it could: a run the engine could not finish
    (the backend went away) is finished as interrupted; a run stopped for a reason says it; a run refused
    before its record opened gets a failed record. Retries while the backend is unreachable."""
    def write() -> None:
        store = PostgresRunStore(dsn, workspace=row["workspace"])
        try:
            run = store.find_run(row["id"])
            if run is None:
                if error is not None or reason is not None:
                    record_unstarted(dsn, row, RunState.INTERRUPTED if error is None else RunState.FAILED,
                                     (reason or error or ""), store)
                return
            why = reason or error
            # lost: a worker found this run's worker silent while the backend was away; this process knows more
            if run.status in (RunState.RUNNING, RunState.LOST):
                message = why or "its process ended without recording an end"
                stopped: str | None = None
                for step in store.get_run(row["id"]).steps:
                    # a lost run's running step was marked interrupted with the run's "lost: ... nobody recorded an
                    # end" (worker.py's _mark_lost): this process did record its end, so the step says what happened
                    marked_lost = (run.status == RunState.LOST and step.status == StepState.INTERRUPTED
                                   and step.message == run.message)
                    if step.status == StepState.RUNNING or marked_lost:
                        store.update_step(row["id"], step.position, status=StepState.INTERRUPTED, message=message)
                        stopped = stopped or step.name
                    elif step.status == StepState.NOT_RUN and step.phase == Phase.MAIN:
                        store.update_step(row["id"], step.position, status=StepState.SKIPPED)
                store.finish_run(row["id"], status=RunState.INTERRUPTED, exit_code=130, message=message,
                                 failed_step=run.failed_step or stopped)
            elif why is not None and run.status == RunState.INTERRUPTED:
                # the engine wrote "interrupted (SIGTERM)": who or what stopped it is the truer message
                db = connect(dsn)
                try:
                    db.execute("UPDATE runs SET message = %s WHERE workspace = %s AND id = %s",
                               (why, row["workspace"], row["id"]))
                finally:
                    db.close()
            if why is not None:
                store.add_notice(row["id"], why)
        finally:
            store.close()

    _retrying(write)


def finish_team_run(dsn: str, workspace: str, run_id: str, reason: str | None) -> None:
    """The launched run has ended (a lost one stays lost: its record says so)."""
    def write() -> None:
        db = connect(dsn)
        try:
            # a lost run whose process reports in after all: it is done, its record says how it ended
            db.execute("UPDATE team_runs SET state = 'done', reason = COALESCE(%s, reason) WHERE workspace = %s"
                       " AND id = %s AND state IN ('queued', 'running', 'lost')", (reason, workspace, run_id))
        finally:
            db.close()

    _retrying(write)


__all__ = ["POLL_SECONDS", "execute", "finish_team_run", "settle"]
