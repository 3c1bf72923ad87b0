"""Schedules in team mode: declared in workspace.poly, written to PostgreSQL by `schedules apply`, fired by
every worker.

``apply_schedules`` replaces a workspace's set of rows in ``team_schedules`` (one per scheduled workflow). Every
`polycrate worker` runs a ``Scheduler``: every ``TICK_SECONDS`` it reads that table (so a changed set is picked
up within one tick, no restart) and, for each schedule, the slots whose time has come since the last slot any
worker handled. A slot fires exactly once because its row in ``team_schedule_slots`` (primary key workspace,
workflow, slot time) is inserted in the same transaction as the launch (``launch.defer``: the run's row and
its procrastinate job): a second worker's insert of the same slot waits for the first transaction and then
does nothing. No leader, no heartbeat of ours: PostgreSQL's unique key decides.

A slot whose workflow is still running: the launch is refused as `workflows run` refuses it, and the slot's
row says so (outcome ``refused``, naming the running run); the worker's log says it too.

A slot missed while no worker was alive (none was started and not yet stopped at its time, judged from
``team_workers``: start, stop, last heartbeat plus ``ALIVE_SLACK``) follows the schedule's ``missed`` policy:
``run-once`` launches the latest missed slot once (unless it is older than ``max_delay``), ``skip`` launches
nothing; either way one row records how many slots were missed and what was done. A slot that passed while a
worker was alive but busy is launched late, each slot once. A run launched late carries ``late_by`` and the
reason (``runs show``).

Slot times come from the same OnCalendar and cron rules as systemd timers and cron (timespec/), in the time
zone of the host that applied the schedule; OnCalendar's seconds field gives seconds-level schedules.
"""
from __future__ import annotations

import asyncio
import bisect
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polycrate.history.postgres import Connection, connect

TICK_SECONDS = 0.25  # a slot is launched this late at most while a worker is alive and idle (plus the queries)
ALIVE_SLACK = 10.0  # a worker that is not stopped counts as alive this long after its last heartbeat
LATE_SECONDS = 10.0  # a slot launched later than this says why in its run's record (late_by, late_reason)
BATCH = 120  # slot times computed at once
DUE_LIMIT = 1000  # slots of one schedule looked at one by one in a tick; a longer backlog is summed up
KEEP_SLOTS = 100  # slot rows kept per schedule however old (what an admin reads back: `schedules list`, the server)
RETENTION_SECONDS = 14 * 86400.0  # slot rows newer than this are kept however many
PRUNE_SECONDS = 300.0  # a worker's scheduler prunes the slot rows this often
PRUNE_LOCK = int.from_bytes(hashlib.sha256(b"polycrate-schedule-slots-prune").digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class TeamSchedule:
    """A row of ``team_schedules``."""

    workspace: str
    workflow: str
    kind: str  # on_calendar or cron
    expression: str
    zone: str | None
    missed: str  # run-once or skip
    max_delay: float | None
    queue: str
    root: str
    git_commit: str
    remote: str | None  # where a worker fetches the commit (team/source.py); None: the same folder
    subdir: str
    prompts: str | None
    applied: float
    applied_by: str


_COLUMNS = tuple(f.name for f in fields(TeamSchedule))


def _apply_lock(workspace: str) -> int:
    digest = hashlib.sha256(f"polycrate-schedules\0{workspace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _DryRun(Exception):
    pass


def apply_schedules(dsn: str, workspace: str, wanted: list[TeamSchedule], write: bool = True
                    ) -> list[tuple[str, TeamSchedule]]:
    """Make ``wanted`` the workspace's schedules, in one transaction: (created|updated|unchanged|removed, row).
    A schedule whose times did not change keeps its ``applied`` time (its missed slots stay its own).
    ``write`` False: what it would do (the transaction is rolled back)."""
    db = connect(dsn)
    changes: list[tuple[str, TeamSchedule]] = []
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_apply_lock(workspace),))
            old = {r["workflow"]: TeamSchedule(**{c: r[c] for c in _COLUMNS})
                   for r in db.execute("SELECT * FROM team_schedules WHERE workspace = %s", (workspace,)).fetchall()}
            for new in wanted:
                was = old.pop(new.workflow, None)
                if was is not None and (was.kind, was.expression, was.zone) == (new.kind, new.expression, new.zone):
                    new = TeamSchedule(**{**new.__dict__, "applied": was.applied})
                if was is not None:
                    same = {**was.__dict__, "applied_by": ""} == {**new.__dict__, "applied_by": ""}
                    changes.append(("unchanged" if same else "updated", new))
                    if same:
                        continue
                    db.execute("DELETE FROM team_schedules WHERE workspace = %s AND workflow = %s",
                               (workspace, new.workflow))
                else:
                    changes.append(("created", new))
                db.execute(f"INSERT INTO team_schedules ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                           [getattr(new, c) for c in _COLUMNS])
            for gone in old.values():
                db.execute("DELETE FROM team_schedules WHERE workspace = %s AND workflow = %s", (workspace, gone.workflow))
                changes.append(("removed", gone))
            if not write:
                raise _DryRun
    except _DryRun:
        pass
    finally:
        db.close()
    return changes


def schedules_in_backend(dsn: str, workspace: str | None = None) -> list[dict[str, Any]]:
    """The schedules in the backend (of one workspace, or all), each with its last handled slot."""
    db = connect(dsn)
    try:
        rows = db.execute(
            "SELECT s.*, l.slot AS last_slot, l.outcome AS last_outcome, l.run_id AS last_run_id,"
            " l.late_by AS last_late_by, l.reason AS last_reason, l.worker AS last_worker"
            " FROM team_schedules s LEFT JOIN LATERAL (SELECT * FROM team_schedule_slots x WHERE x.workspace = s.workspace"
            " AND x.workflow = s.workflow ORDER BY slot DESC LIMIT 1) l ON true"
            " WHERE %s::text IS NULL OR s.workspace = %s ORDER BY s.workspace, s.workflow",
            (workspace, workspace)).fetchall()
    finally:
        db.close()
    return [dict(r) for r in rows]


# --- slot times ---------------------------------------------------------------------------------------------


class Slots:
    """The slot times (epoch seconds) of one expression in one zone, computed in batches and kept."""

    def __init__(self, kind: str, expression: str, zone: str | None):
        from polycrate.timespec.times import zone_named

        self.kind = kind
        self.expression = expression
        self.tz = zone_named(zone) if zone else None
        self.base: float | None = None  # ``known`` is every slot after ``base``, up to its last
        self.known: list[float] = []
        self.exhausted = False  # no slot after the last known one

    def after(self, moment: float, count: int) -> list[float]:
        from polycrate.timespec.cron import cron_next
        from polycrate.timespec.oncalendar import analyze_calendar, calendar_next, systemd_analyze
        from polycrate.timespec.times import ScheduleError

        start = datetime.fromtimestamp(moment, UTC)
        if self.kind == "cron":
            times = cron_next(self.expression, start, count, self.tz)
        else:
            try:
                times = calendar_next(self.expression, start, count, self.tz)
            except ScheduleError:  # beyond our parser's subset: systemd's own answer (checked at apply)
                if not systemd_analyze():
                    raise
                times = analyze_calendar(self.expression, start, count, self.tz)[1]
        return [t.timestamp() for t in times]

    def due(self, since: float, now: float, limit: int = DUE_LIMIT) -> tuple[list[float], bool]:
        """The slots in (since, now], the first ``limit`` of them; True when more than those are due."""
        if self.base is None or since < self.base or (self.known and since > self.known[-1]) \
                or (not self.known and since > self.base):
            self.base, self.known = since, self.after(since, BATCH)
            self.exhausted = len(self.known) < BATCH
        while not self.exhausted and self.known[-1] <= now \
                and len(self.known) - bisect.bisect_right(self.known, since) <= limit:
            more = self.after(self.known[-1], BATCH)
            self.exhausted = len(more) < BATCH
            self.known.extend(more)
        first = bisect.bisect_right(self.known, since)
        if first > 4 * BATCH:  # forget what is behind every cursor
            self.known, self.base, first = self.known[first:], since, 0
        last = bisect.bisect_right(self.known, now)
        due = self.known[first:last]
        return due[:limit], len(due) > limit or (not self.exhausted and last == len(self.known))

    def latest(self, now: float) -> float | None:
        """The last slot at or before ``now``, looked for backwards in widening windows (the first window
        with a slot in it holds few)."""
        for window in (10.0, 60.0, 600.0, 3600.0, 86400.0, 7 * 86400.0, 31 * 86400.0, 366 * 86400.0):
            found: float | None = None
            batch = self.after(now - window, 32)
            while batch and batch[0] <= now:
                found = max([t for t in batch if t <= now] + ([found] if found is not None else []))
                if batch[-1] > now or len(batch) < 32:
                    break
                batch = self.after(batch[-1], 32)
            if found is not None:
                return found
        return None


# --- the scheduler of one worker ------------------------------------------------------------------------------

SCHEDULES = """
SELECT s.*, (SELECT max(slot) FROM team_schedule_slots x WHERE x.workspace = s.workspace AND x.workflow = s.workflow)
       AS last_slot
  FROM team_schedules s ORDER BY s.workspace, s.workflow
"""

LIVES = """
SELECT t.worker_id, t.started, t.stopped,
       GREATEST(t.last_heartbeat, EXTRACT(EPOCH FROM p.last_heartbeat)::double precision) AS beat
  FROM team_workers t LEFT JOIN procrastinate_workers p ON p.id = t.worker_id
 WHERE t.started <= %s
"""


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Scheduler:
    """One worker's scheduler: ``tick`` launches (or records) every slot that has come, once across workers."""

    def __init__(self, dsn: str, worker_name: str, worker_id: int | None, started: float,
                 keep_slots: int = KEEP_SLOTS, retention: float = RETENTION_SECONDS):
        self.keep_slots = max(1, keep_slots)  # the newest row of a schedule is what a tick starts from: never pruned
        self.retention = retention
        self.pruned = 0.0  # when this scheduler last pruned (it does so every PRUNE_SECONDS)
        self.dsn = dsn
        self.worker_name = worker_name
        self.worker_id = worker_id
        self.started = started  # this worker's start (team_workers.started): it is alive since then
        self.slots: dict[tuple[str, str, str | None], Slots] = {}
        self.db: Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except Exception:
                pass
            self.db = None

    def tick(self) -> list[str]:
        """Handle every due slot; what was done, for the worker's log. A failed query drops the connection
        (the next tick connects again) and raises."""
        with self._lock:
            try:
                if self.db is None or self.db.closed:
                    self.db = connect(self.dsn)
                return self._tick(self.db)
            except BaseException:
                self._drop()
                raise

    def _tick(self, db: Connection) -> list[str]:
        # shared with every other tick, exclusive with a prune: the newest slot read below stays in the table
        # until this tick has fired what follows it (see ``prune``)
        db.execute("SELECT pg_advisory_lock_shared(%s)", (PRUNE_LOCK,))
        try:
            return self._tick_locked(db)
        finally:
            db.execute("SELECT pg_advisory_unlock_shared(%s)", (PRUNE_LOCK,))

    def _tick_locked(self, db: Connection) -> list[str]:
        rows = db.execute(SCHEDULES).fetchall()
        now = time.time()
        said: list[str] = []
        lives: list[tuple[float, float]] | None = None
        for row in rows:
            schedule = TeamSchedule(**{c: row[c] for c in _COLUMNS})
            key = (schedule.kind, schedule.expression, schedule.zone)
            slots = self.slots.get(key)
            if slots is None:
                slots = self.slots[key] = Slots(*key)
            since = max(row["last_slot"] or 0.0, schedule.applied)
            due, more = slots.due(since, now)
            if not due:
                continue
            if more:  # a long backlog (no worker for a long time): its latest slot closes it
                latest = slots.latest(now)
                if latest is not None and latest > due[-1]:
                    due.append(latest)
            if lives is None and due[0] < self.started:
                lives = self._lives(db, now)
            missed: list[float] = []
            for slot in due:
                if slot >= self.started or any(start <= slot <= end for start, end in lives or ()):
                    if missed:
                        said += self._missed(db, schedule, missed, more, now)
                        missed = []
                    late = now - slot
                    reason = (f"launched {late:.0f}s after its time: the workers were alive but none launched it "
                              "sooner (busy)") if late > LATE_SECONDS else None
                    said += self._fire(db, schedule, slot, now, reason)
                else:
                    missed.append(slot)
            if missed:
                said += self._missed(db, schedule, missed, more, now)
        return said

    def _lives(self, db: Connection, now: float) -> list[tuple[float, float]]:
        """When each other worker was alive: (start, end) from team_workers."""
        out = []
        for r in db.execute(LIVES, (now,)).fetchall():
            if r["worker_id"] == self.worker_id:
                continue
            end = r["stopped"] if r["stopped"] is not None else (r["beat"] or r["started"]) + ALIVE_SLACK
            out.append((float(r["started"]), float(end)))
        return out

    def _missed(self, db: Connection, schedule: TeamSchedule, missed: list[float], more: bool,
                now: float) -> list[str]:
        latest = missed[-1]
        late = now - latest
        count = f"{len(missed)}{' or more' if more else ''} slot{'s' if len(missed) > 1 or more else ''}"
        what = (f"{count} from {when(missed[0])} to {when(latest)} passed while no worker was alive"
                if len(missed) > 1 or more else f"the slot {when(latest)} passed while no worker was alive")
        if schedule.missed == "skip":
            return self._record(db, schedule, latest, now, "skipped", f"{what}; missed: skip, nothing launched")
        if schedule.max_delay is not None and late > schedule.max_delay:
            return self._record(db, schedule, latest, now, "skipped",
                                f"{what}; the latest is {late:.0f}s old, more than max_delay {schedule.max_delay:g}s: "
                                "nothing launched")
        return self._fire(db, schedule, latest, now, f"{what}; missed: run-once launched the latest once, "
                                                     f"{late:.0f}s late")

    def _record(self, db: Connection, schedule: TeamSchedule, slot: float, now: float, outcome: str,
                reason: str) -> list[str]:
        got = db.execute(
            "INSERT INTO team_schedule_slots (workspace, workflow, slot, fired, worker, outcome, reason)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING RETURNING slot",
            (schedule.workspace, schedule.workflow, slot, now, self.worker_name, outcome, reason)).fetchone()
        return [] if got is None else [f"schedule {schedule.workspace}/{schedule.workflow}: {reason}"]

    def _fire(self, db: Connection, schedule: TeamSchedule, slot: float, now: float, reason: str | None) -> list[str]:
        """Launch the slot's run, with its slot row, in one transaction; nothing when another worker did."""
        import psycopg

        from polycrate.history.store import new_run_id
        from polycrate.team.launch import Launch, defer, describe_active

        name = f"schedule {schedule.workspace}/{schedule.workflow}: slot {when(slot)}"
        run_id = new_run_id()
        with db.transaction():
            got = db.execute(
                "INSERT INTO team_schedule_slots (workspace, workflow, slot, fired, worker, outcome, run_id, late_by,"
                " reason) VALUES (%s,%s,%s,%s,%s,'launched',%s,%s,%s) ON CONFLICT DO NOTHING RETURNING slot",
                (schedule.workspace, schedule.workflow, slot, now, self.worker_name, run_id, now - slot,
                 reason)).fetchone()
            if got is None:
                return []  # another worker handled it
            refused: str | None = None
            if schedule.prompts:  # applied before `schedules apply` refused it: a failed run says so, per slot
                refused = (f"the workflow prompts ({schedule.prompts}) and a scheduled run never answers prompts; "
                           "nothing launched")
                said = refused + (f" ({reason})" if reason else "")
                db.execute("UPDATE team_schedule_slots SET outcome = 'refused', reason = %s"
                           " WHERE workspace = %s AND workflow = %s AND slot = %s",
                           (said, schedule.workspace, schedule.workflow, slot))
                self._record_prompted(schedule, slot, run_id, said)  # the last step before the slot row commits
                return [f"{name}: run {run_id} failed: {refused}"]
            else:
                launch = Launch(workspace=schedule.workspace, root=Path(schedule.root), workflow=schedule.workflow,
                                queue=schedule.queue, git_commit=schedule.git_commit,
                                launched_by=f"schedule (applied by {schedule.applied_by})",
                                options={"scheduled_slot": slot}, remote=schedule.remote, subdir=schedule.subdir)
                try:
                    with db.transaction():
                        defer(db, launch, run_id)
                except psycopg.errors.UniqueViolation:
                    refused = f"refused: {describe_active(db, schedule.workspace, schedule.workflow)}"
            if refused is not None:
                full = refused + (f" ({reason})" if reason else "")
                db.execute("UPDATE team_schedule_slots SET outcome = 'refused', run_id = NULL, reason = %s"
                           " WHERE workspace = %s AND workflow = %s AND slot = %s",
                           (full, schedule.workspace, schedule.workflow, slot))
                return [f"{name}: {full}"]
        return [f"{name}: launched run {run_id} on queue '{schedule.queue}'" + (f" ({reason})" if reason else "")]


    def _record_prompted(self, schedule: TeamSchedule, slot: float, run_id: str, reason: str) -> None:
        """The failed run of a slot whose workflow prompts, written while this transaction holds the slot's row:
        a second worker's insert of the slot waits for it and then does nothing, so it is written once."""
        from polycrate.team.launch import record_unstarted
        from polycrate.states import RunState

        row = {"workspace": schedule.workspace, "id": run_id, "workflow": schedule.workflow, "only_step": None,
               "launched_by": f"schedule (applied by {schedule.applied_by})"}
        record_unstarted(self.dsn, row, RunState.FAILED, f"slot {when(slot)}: {reason}")

    # --- pruning the slot rows ------------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> int:
        """Delete the slot rows an admin no longer needs: those beyond the last ``keep_slots`` of their schedule
        and older than ``retention``; how many. The newest row of every schedule is always kept (``keep_slots``
        is at least 1), and a tick reads the schedule's newest slot before it fires anything after it; the prune
        runs only while no tick of any worker is under way (it takes ``PRUNE_LOCK`` exclusively, every tick holds
        it shared), so every tick that fires afterwards starts from a newest slot that is still there, and a slot
        pruned (older than that one) is never due again."""
        now = time.time() if now is None else now
        with self._lock:
            try:
                if self.db is None or self.db.closed:
                    self.db = connect(self.dsn)
                db = self.db
                with db.transaction():
                    db.execute("SET LOCAL lock_timeout = '10s'")
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
                    gone = db.execute(
                        "DELETE FROM team_schedule_slots x USING (SELECT workspace, workflow, slot, row_number() OVER"
                        " (PARTITION BY workspace, workflow ORDER BY slot DESC) AS n FROM team_schedule_slots) r"
                        " WHERE x.workspace = r.workspace AND x.workflow = r.workflow AND x.slot = r.slot"
                        " AND r.n > %s AND x.slot < %s RETURNING x.slot",
                        (max(1, self.keep_slots), now - self.retention)).fetchall()
                self.pruned = now
                return len(gone)
            except BaseException:
                self._drop()
                raise


async def run_scheduler(dsn: str, worker_name: str, worker_id: int | None, say: Callable[[str], None],
                        keep_slots: int = KEEP_SLOTS, retention: float = RETENTION_SECONDS) -> None:
    """A worker's scheduler, until cancelled: a tick every ``TICK_SECONDS``; a failing backend is said once."""
    db = connect(dsn)
    try:
        row = db.execute("SELECT started FROM team_workers WHERE worker_id = %s", (worker_id,)).fetchone()
    finally:
        db.close()
    started = float(row["started"]) if row is not None else time.time()
    scheduler = Scheduler(dsn, worker_name, worker_id, started, keep_slots=keep_slots, retention=retention)
    failing = False
    try:
        while True:
            try:
                for line in await asyncio.to_thread(scheduler.tick):
                    say(line)
                if time.time() - scheduler.pruned > PRUNE_SECONDS:
                    pruned = await asyncio.to_thread(scheduler.prune)
                    if pruned:
                        say(f"pruned {pruned} old slot row{'s' if pruned != 1 else ''} of the schedules")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    say(f"the scheduler failed ({type(exc).__name__}: {first}); trying on")
                failing = True
            await asyncio.sleep(TICK_SECONDS)
    finally:
        await asyncio.to_thread(scheduler.close)  # after a tick that is still running in its thread


__all__ = ["ALIVE_SLACK", "TICK_SECONDS", "Scheduler", "Slots", "TeamSchedule", "apply_schedules", "run_scheduler",
           "schedules_in_backend"]
