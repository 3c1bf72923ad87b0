"""`polycrate worker`: a procrastinate worker on the given queues that starts each launched run as a process of
its own (`polycrate worker execute RUN`, team/execute.py) and waits for it.

It connects out to PostgreSQL only. Its heartbeat is procrastinate's (``procrastinate_workers``); beside it,
``team_workers`` says its name, host, queues and concurrency for `polycrate worker list`. Every worker also
looks for runs whose worker stopped heartbeating for ``lost_after`` seconds (procrastinate's stalled jobs):
such a run is marked ``lost``; its job (and with it the workflow's procrastinate lock) is finished as failed
only once the run's fence is free, so a process of it that still runs somewhere keeps the workflow locked;
and it is never run again by itself (no retry).

When the backend goes away the worker's runs stop themselves (their fence's connection failed) and the worker
starts over until the backend is back.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.history.postgres import connect
from polycrate.states import RunState, StepState
from polycrate.team.launch import TASK, fence_key
from polycrate.team.slices import SLICE_TASK, reap_slices, slice_queue

RESTART_SECONDS = 2.0  # after the backend went away, the worker tries again this often


@dataclass(frozen=True)
class WorkerSettings:
    name: str
    queues: tuple[str, ...]
    concurrency: int = 1
    lost_after: float = 30.0  # seconds without a heartbeat before a worker's runs are lost
    heartbeat: float = 5.0  # seconds between heartbeats
    cache: Path | None = None  # where launched commits are fetched to (team/source.py); None: the default
    identity: Path | None = None  # the worker's age identity (team/identity.py); None: the usual key lookup
    keep_slots: int = 100  # schedule slot rows kept per schedule however old (team/scheduler.py's prune)
    slot_retention: float = 14 * 86400.0  # and those newer than this, however many


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def say(text: str) -> None:
    print(f"polycrate worker: {text}", flush=True)


class Repeats:
    """The same line again and again (psycopg's pool retries its connection every second or so while the backend
    is away: an hour's outage was 3,600 lines per worker) is said once; while it keeps coming, once a minute with
    its count, and its count once another line comes."""

    def __init__(self, out: Callable[[str], None], every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.every, self.clock = out, every, clock
        self.last: str | None = None
        self.said = 0.0  # when the last line was said
        self.held = 0  # how many times it came since, unsaid

    def __call__(self, text: str) -> None:
        now = self.clock()
        if text == self.last and now - self.said < self.every:
            self.held += 1
            return
        if self.held:
            again = f" (and {self.held} more time{'s' if self.held > 1 else ''} in {now - self.said:.0f}s)"
            self.out(text + again if text == self.last else f"{self.last}{again}")
            self.held = 0
            if text == self.last:
                self.said = now
                return
        self.out(text)
        self.last, self.said = text, now


def _one_line_logs(name: str) -> None:
    """procrastinate's, psycopg's pool's and asyncio's warnings as one line each in the worker's output, without
    their tracebacks (a backend restart would otherwise print pages), a repeated one said once a minute."""
    import logging

    said = Repeats(say)

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = " ".join(record.getMessage().split())
            if record.exc_info and record.exc_info[1] is not None:
                cause = record.exc_info[1].__cause__ or record.exc_info[1]
                text += f" ({type(cause).__name__}: {' '.join(str(cause).split())[:200]})"
            said(f"{name}: {record.name}: {text}")

    handler = OneLine(logging.WARNING)
    for logger_name in ("procrastinate", "psycopg.pool", "asyncio"):
        logger = logging.getLogger(logger_name)
        logger.handlers[:] = [handler]
        logger.propagate = False


def serve(dsn: str, settings: WorkerSettings) -> int:
    """Run until stopped (SIGINT/SIGTERM: the runs in progress end first); the exit code."""
    _one_line_logs(settings.name)
    say(f"{settings.name}: queues {', '.join(settings.queues)}, concurrency {settings.concurrency}, "
        f"runs of a worker silent for {settings.lost_after:g}s are lost")
    import signal

    stopping: list[int] = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    while True:
        try:
            asyncio.run(_serve(dsn, settings, stopping))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            say(f"{settings.name}: the backend is away ({type(exc).__name__}: {first}); starting over in "
                f"{RESTART_SECONDS:g}s")
        finally:
            for sig, handler in saved.items():  # asyncio leaves the defaults behind: the CLI's come back
                signal.signal(sig, handler)
        if stopping:
            say(f"{settings.name}: stopped")
            return 0
        time.sleep(RESTART_SECONDS)


async def _serve(dsn: str, settings: WorkerSettings, stopping: list[int]) -> None:
    """One life of the worker: until a signal stops it (``stopping`` then says which) or the backend fails."""
    import procrastinate
    from procrastinate.worker import Worker

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=1, max_size=2 * settings.concurrency + 4, kwargs={"application_name": "polycrate-worker"}))

    from polycrate.team.standby import Standby

    standby = Standby(os.getpid(), tuple(_execute_args(settings)))

    @app.task(name=TASK, pass_context=True)
    async def run_workflow(context: Any, run_id: str, workspace: str) -> None:
        await _supervise(dsn, settings, context.job.id, context.job.worker_id, run_id, workspace, standby)

    @app.task(name=SLICE_TASK, pass_context=True)
    async def run_slice(context: Any, batch: str, index: int) -> None:
        from polycrate.team.slice_run import supervise_slice

        await supervise_slice(dsn, settings.name, settings.lost_after, context.job.worker_id, batch, index,
                              tuple(_execute_args(settings)))

    async with app.open_async():
        standby.prepare()
        worker = Worker(app, queues=list(settings.queues), name=settings.name, concurrency=settings.concurrency,
                        fetch_job_polling_interval=2.0, update_heartbeat_interval=settings.heartbeat,
                        stalled_worker_timeout=settings.lost_after, shutdown_graceful_timeout=None,
                        install_signal_handlers=False)
        # the parts of sliced steps (team/slices.py) on slots of their own: a run waiting for its parts
        # never holds the slot one of them needs
        slicer = Worker(app, queues=[slice_queue(q) for q in settings.queues], name=f"{settings.name}/slices",
                        concurrency=settings.concurrency, fetch_job_polling_interval=2.0,
                        update_heartbeat_interval=settings.heartbeat, stalled_worker_timeout=settings.lost_after,
                        shutdown_graceful_timeout=None, install_signal_handlers=False)
        import signal

        def stop(signum: int) -> None:  # the runs in progress end first (procrastinate's graceful stop)
            stopping.append(signum)
            worker.stop()
            slicer.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        side = asyncio.create_task(_housekeeping(dsn, settings, lambda: worker.worker_id, lambda: slicer.worker_id))
        try:
            await _run_both(worker, slicer)
        finally:
            await standby.close()
            side.cancel()
            try:
                await side
            except (asyncio.CancelledError, Exception):
                pass
        if side.done() and not side.cancelled() and side.exception() is not None:
            raise side.exception()  # type: ignore[misc]


async def _run_both(worker: Any, slicer: Any) -> None:
    """The runs' worker and the slices' until both end; when one fails (the backend is away) the other stops
    too and the failure is raised."""
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(slicer.run())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        worker.stop()
        slicer.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result


async def _supervise(dsn: str, settings: WorkerSettings, job_id: int | None, worker_id: int | None, run_id: str,
                     workspace: str, standby: Any) -> None:
    claimed = await asyncio.to_thread(_claim, dsn, settings, worker_id, run_id, workspace)
    if not claimed:
        return  # stopped while it waited, or not ours to run
    say(f"{settings.name}: run {run_id} started (job {job_id})")
    proc = await standby.start(run_id, workspace)  # the run's own process, warmed up ahead (team/standby.py)
    await asyncio.to_thread(_set_pid, dsn, workspace, run_id, proc.pid)
    code = await proc.wait()
    say(f"{settings.name}: run {run_id} ended (exit {code})")
    # a run process that died without recording (killed) is finished here, as the worker saw it
    from polycrate.team.execute import finish_team_run, settle

    row = await asyncio.to_thread(_row, dsn, workspace, run_id)
    if row is not None and row["state"] == "running":
        why = None if code in (0, 1, 2, 3, 130) else f"its process ended by exit status {code} without recording an end"
        await asyncio.to_thread(settle, dsn, row, why, None)
        await asyncio.to_thread(finish_team_run, dsn, workspace, run_id, why)


def _execute_args(settings: WorkerSettings) -> list[str]:
    return ([] if settings.cache is None else ["--cache", str(settings.cache)]) + \
        ([] if settings.identity is None else ["--identity", str(settings.identity)])


def _claim(dsn: str, settings: WorkerSettings, worker_id: int | None, run_id: str, workspace: str) -> bool:
    db = connect(dsn)
    try:
        row = db.execute("UPDATE team_runs SET state = 'running', worker = %s, worker_host = %s, worker_id = %s"
                         " WHERE workspace = %s AND id = %s AND state = 'queued' RETURNING id",
                         (settings.name, socket.gethostname(), worker_id, workspace, run_id)).fetchone()
        return row is not None
    finally:
        db.close()


def _set_pid(dsn: str, workspace: str, run_id: str, pid: int) -> None:
    db = connect(dsn)
    try:
        db.execute("UPDATE team_runs SET pid = COALESCE(pid, %s) WHERE workspace = %s AND id = %s",
                   (pid, workspace, run_id))
    finally:
        db.close()


def _row(dsn: str, workspace: str, run_id: str) -> dict[str, Any] | None:
    from polycrate.team.launch import team_run

    db = connect(dsn)
    try:
        return team_run(db, workspace, run_id)
    finally:
        db.close()


async def _housekeeping(dsn: str, settings: WorkerSettings, worker_id: Callable[[], int | None],
                        slicer_id: Callable[[], int | None]) -> None:
    """Register this worker in team_workers once procrastinate has (both its procrastinate workers: the runs'
    and the slices'); then, every few seconds, keep the last heartbeats and mark the runs and slices of silent
    workers lost."""
    while worker_id() is None or slicer_id() is None:
        await asyncio.sleep(0.1)
    me, my_slicer = worker_id(), slicer_id()
    await asyncio.to_thread(_register, dsn, settings, me, my_slicer)
    period = max(0.5, min(settings.heartbeat, settings.lost_after / 4))
    failing = False
    from polycrate.team.scheduler import run_scheduler  # every worker runs the schedules (team/scheduler.py)

    scheduler = asyncio.create_task(run_scheduler(dsn, settings.name, me, lambda line: say(f"{settings.name}: {line}"),
                                                  keep_slots=settings.keep_slots, retention=settings.slot_retention))
    try:
        while True:
            try:
                for line in await asyncio.to_thread(reap, dsn, settings.lost_after, me, my_slicer):
                    say(f"{settings.name}: {line}")
                failing = False
            except Exception as exc:  # the backend is away: procrastinate's own tasks notice it too
                if not failing:
                    say(f"{settings.name}: looking for lost runs failed ({type(exc).__name__}); trying on")
                failing = True
            await asyncio.sleep(period)
    finally:
        scheduler.cancel()
        try:
            await scheduler
        except (asyncio.CancelledError, Exception):
            pass
        try:
            await asyncio.to_thread(_unregister, dsn, me)
        except Exception:
            pass


def _register(dsn: str, settings: WorkerSettings, worker_id: int | None, slicer_id: int | None = None) -> None:
    db = connect(dsn)
    try:
        db.execute("INSERT INTO team_workers (worker_id, name, host, pid, queues, concurrency, started, last_heartbeat,"
                   " slice_worker_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (worker_id) DO NOTHING",
                   (worker_id, settings.name, socket.gethostname(), os.getpid(), list(settings.queues),
                    settings.concurrency, time.time(), time.time(), slicer_id))
    finally:
        db.close()


def _unregister(dsn: str, worker_id: int | None) -> None:
    db = connect(dsn)
    try:
        db.execute("UPDATE team_workers SET stopped = %s WHERE worker_id = %s", (time.time(), worker_id))
    finally:
        db.close()


NEVER_CLAIMED = "its worker took it and stopped heartbeating before starting it; it is not run again by itself"

STALLED_JOBS = f"""
SELECT job.id, job.worker_id FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers w ON w.id = job.worker_id
 WHERE job.status = 'doing' AND job.task_name = '{TASK}'
   AND (w.id IS NULL OR w.last_heartbeat < NOW() - (%s || ' SECOND')::INTERVAL)
   AND job.worker_id IS DISTINCT FROM %s
"""


def reap(dsn: str, lost_after: float, me: int | None = None, my_slicer: int | None = None) -> list[str]:
    """Keep the workers' last heartbeats; mark the runs of workers silent for ``lost_after`` seconds lost, and
    free their jobs' locks once their fences are free; the same for the parts of sliced steps (slices.reap_slices:
    the part lost, its job finished as failed). Never the runs of worker ``me`` nor the parts of its slice slots
    ``my_slicer`` (the caller, which supervises them: its heartbeat pauses while it starts over after an
    outage). What was done, for the log."""
    said: list[str] = []
    db = connect(dsn)
    try:
        db.execute("UPDATE team_workers t SET last_heartbeat = EXTRACT(EPOCH FROM p.last_heartbeat)"
                   " FROM procrastinate_workers p WHERE p.id = t.worker_id AND t.stopped IS NULL")
        now = time.time()
        db.execute("UPDATE team_workers SET lost = %s WHERE stopped IS NULL AND lost IS NULL AND worker_id IS DISTINCT"
                   " FROM %s AND COALESCE(last_heartbeat, started) < %s", (now, me, now - lost_after))
        # a worker found silent that heartbeats again (a paused VM, a partition, the backend away) is alive again:
        # its runs stay as they were marked (each run's own process corrects its record), the worker is no longer lost
        db.execute("UPDATE team_workers SET lost = NULL WHERE stopped IS NULL AND lost IS NOT NULL"
                   " AND last_heartbeat >= %s", (now - lost_after,))
        for job in db.execute(STALLED_JOBS, (str(lost_after), me)).fetchall():
            lost_now: dict[str, Any] | None = None
            unstarted: dict[str, Any] | None = None
            with db.transaction():
                run = db.execute("SELECT * FROM team_runs WHERE job_id = %s FOR UPDATE", (job["id"],)).fetchone()
                if run is not None and run["state"] == "running":
                    said.append(_mark_lost(db, run, lost_after))
                    lost_now = run
                elif run is not None and run["state"] == "queued":  # taken, never claimed: its worker died at once
                    db.execute("UPDATE team_runs SET state = 'lost', reason = %s WHERE workspace = %s AND id = %s",
                               (NEVER_CLAIMED, run["workspace"], run["id"]))
                    unstarted = run
            if unstarted is not None:  # in the history too (it never started), as a run stopped while queued is
                from polycrate.team.launch import record_unstarted

                record_unstarted(dsn, unstarted, RunState.LOST, f"lost: {NEVER_CLAIMED}")
                said.append(f"run {unstarted['id']} of workflow '{unstarted['workflow']}' lost: {NEVER_CLAIMED}")
            if lost_now is not None:  # marked lost once, by one worker (FOR UPDATE): told once, as a failed run
                from polycrate.team.lost import announce

                announce(dsn, lost_now)
            # the workflow stays locked while any process of the run may live: only a free fence ends the job
            key = fence_key(run["workspace"], run["workflow"]) if run is not None else None
            if key is not None:
                got = db.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
                if got is None or not got["ok"]:
                    continue
                db.execute("SELECT pg_advisory_unlock(%s)", (key,))
            db.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job["id"],))
            said.append(f"job {job['id']} finished as failed (not retried); its workflow's lock is free")
        said += reap_slices(db, lost_after, [i for i in (me, my_slicer) if i is not None])
    finally:
        db.close()
    return said


def _mark_lost(db: Any, run: dict[str, Any], lost_after: float) -> str:
    """The run of a silent worker, lost: ended at its last sign of life (its worker's last heartbeat, its steps'
    and notices' times; never when it was found, which is at least ``lost_after`` later and may be hours later,
    when every worker was down), the step that was running interrupted with that end, the main steps after it
    skipped (as history.store.found_gone does for a killed local run)."""
    from polycrate.history.store import FOUND_GONE_STEP, found_gone, shown

    now = time.time()
    where = (run["workspace"], run["id"])
    record = db.execute("SELECT started, notices FROM runs WHERE workspace = %s AND id = %s", where).fetchone()
    steps = list(db.execute("SELECT * FROM steps WHERE workspace = %s AND run_id = %s", where).fetchall())
    beat = db.execute("SELECT last_heartbeat FROM team_workers WHERE worker_id = %s", (run["worker_id"],)).fetchone()
    started = (record["started"] if record is not None else None) or run["started"] or run["launched"]

    def say(ended: float) -> str:
        return (f"lost: its worker {run['worker']} on {run['worker_host']} stopped heartbeating (last seen "
                f"{shown(ended)}, found silent {shown(now)}; lost after {lost_after:g}s without one) and nobody "
                "recorded an end; it is not run again by itself")

    running = {s["position"] for s in steps if s["status"] == StepState.RUNNING}
    end = found_gone(started, steps, (record["notices"] or []) if record is not None else [],
                     also=[beat["last_heartbeat"]] if beat is not None and beat["last_heartbeat"] else [], say=say)
    db.execute("UPDATE team_runs SET state = 'lost', reason = %s WHERE workspace = %s AND id = %s",
               (end.message, *where))
    # the message says it (as a killed local run's): no notice repeats it a third time beside the step's
    recorded = db.execute(
        "UPDATE runs SET status = %s, ended = %s, exit_code = 1, message = %s, failed_step = COALESCE(failed_step, %s)"
        " WHERE workspace = %s AND id = %s AND status = %s RETURNING id",
        (str(RunState.LOST), end.ended, end.message, end.step, *where, str(RunState.RUNNING))).fetchone()
    if recorded is not None:
        # its step that was running says so too: a lost run whose record still showed a 'running' step would
        # tell two stories
        for step in steps:
            if step["position"] in running or step["status"] == StepState.SKIPPED:
                db.execute(f"UPDATE steps SET {', '.join(f'{k} = %s' for k in FOUND_GONE_STEP)}"
                           " WHERE workspace = %s AND run_id = %s AND position = %s AND status IN (%s, %s)",
                           (*(step[k] for k in FOUND_GONE_STEP), *where, step["position"],
                            str(StepState.RUNNING), str(StepState.NOT_RUN)))
    elif record is None:
        db.execute(
            'INSERT INTO runs (workspace, id, kind, name, workflow, only_step, "user", host, started, ended, status,'
            " exit_code, message) VALUES (%s,%s,'workflow',%s,%s,%s,%s,%s,%s,%s,%s,1,%s)",
            (*where, run["workflow"], run["workflow"], run["only_step"], run["launched_by"],
             run["worker_host"], started, end.ended, str(RunState.LOST), end.message))
    return f"run {run['id']} of workflow '{run['workflow']}' {end.message}"


def workers(dsn: str) -> list[dict[str, Any]]:
    """The workers known to the backend (running, or stopped within the last hour), newest first, each once
    (a worker that started over after an outage registered again: its newest row), with their queues (and
    the slice queues they take parts from), current runs and current parts of sliced steps."""
    db = connect(dsn)
    try:
        rows = db.execute(
            "SELECT t.*, EXTRACT(EPOCH FROM p.last_heartbeat) AS beat, p.id IS NOT NULL AS registered"
            " FROM team_workers t LEFT JOIN procrastinate_workers p ON p.id = t.worker_id"
            " WHERE COALESCE(t.stopped, t.lost) IS NULL OR COALESCE(t.stopped, t.lost) > %s ORDER BY t.started DESC",
            (time.time() - 3600,)).fetchall()
        running = db.execute("SELECT worker_id, workspace, id, workflow FROM team_runs WHERE state = 'running'"
                             " ORDER BY started").fetchall()
        parts = db.execute("SELECT s.worker_id, s.workspace, s.run_id, s.step, s.idx, s.total, s.hosts, r.workflow"
                           " FROM team_slices s LEFT JOIN team_runs r ON r.workspace = s.workspace AND r.id = s.run_id"
                           " WHERE s.state = 'running' ORDER BY s.started, s.idx").fetchall()
    finally:
        db.close()
    out = []
    seen: set[tuple[str, str, int]] = set()
    for r in rows:
        if (r["name"], r["host"], r["pid"]) in seen:  # the same process, an older life of it
            continue
        seen.add((r["name"], r["host"], r["pid"]))
        beat = r["beat"] if r["beat"] is not None else r["last_heartbeat"]
        ids = {r["worker_id"], r["slice_worker_id"]} - {None}
        out.append({"name": r["name"], "host": r["host"], "pid": r["pid"], "queues": list(r["queues"]),
                    "slice_queues": [slice_queue(q) for q in r["queues"]],
                    "concurrency": r["concurrency"], "started": r["started"],
                    "last_heartbeat": float(beat) if beat is not None else None,
                    "state": "stopped" if r["stopped"] else "lost" if r["lost"] else "alive" if r["registered"]
                    else "gone",
                    "runs": [{"workspace": x["workspace"], "run_id": x["id"], "workflow": x["workflow"]}
                             for x in running if x["worker_id"] == r["worker_id"]],
                    "parts": [{"workspace": x["workspace"], "run_id": x["run_id"], "workflow": x["workflow"],
                               "step": x["step"], "slice": x["idx"], "slices": x["total"], "hosts": list(x["hosts"])}
                              for x in parts if x["worker_id"] in ids]})
    return out


def served_queues(dsn: str) -> set[str]:
    """The queues some alive worker serves: a run launched onto another waits until a worker of it starts."""
    return {queue for w in workers(dsn) if w["state"] == "alive" for queue in w["queues"]}


__all__ = ["WorkerSettings", "default_name", "reap", "serve", "served_queues", "workers"]
