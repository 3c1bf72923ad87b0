"""What the server shows: the workspaces it serves, their workflows, schedules, blocks and runs.

Read-only over polycrate's core: each workspace is loaded with ``workspace.load_workspace`` (cached
until ``workspace.poly`` changes), runs come from each workspace's own run store
(``history.RunStore``), as the store's typed records (``history.RunRecord``) with the served workspace's key.
No web framework here,
so the bench and the tests can call it directly.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from polycrate.errors import NotFoundError, PolycrateError
from polycrate.history import LogPiece, RunRecord, RunStore, StepRecord, open_store
from polycrate.runtime.ansible_options import redacted_extra_vars
from polycrate.states import RUN_STATES, RunKind, RunState
from polycrate.config.schema import WORKSPACE_FILE
from polycrate.config.workspace import load_workspace

_RUN_REF = re.compile(r"^(?:latest(?:~[0-9]{1,9})?|[0-9a-f-]{1,64})$")
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6,64}$")  # the full form of history.new_run_id
RUNNING = RunState.RUNNING
RESCAN_SECONDS = 5.0
DEFAULT_GRACE = 3600  # seconds a scheduled run may take before its workflow reads overdue


@dataclass
class Entry:
    """One served workspace: its key in URLs, its root, and the loaded workspace or why it did not load."""

    key: str
    root: Path
    ws: Any = None  # model.Workspace
    error: str | None = None
    stamp: tuple = field(default=(), repr=False)
    schedules: tuple | None = field(default=None, repr=False)  # (by workflow, error), once per load

    @property
    def name(self) -> str:
        return self.ws.name if self.ws is not None else self.root.name


def find_workspaces(sources: list[Path]) -> list[Path]:
    """Each source is a workspace root, or a folder whose subfolders are workspaces (one level)."""
    roots: list[Path] = []
    for source in sources:
        source = source.resolve()
        if (source / WORKSPACE_FILE).is_file():
            roots.append(source)
        elif source.is_dir():
            roots.extend(sorted(p for p in source.iterdir() if (p / WORKSPACE_FILE).is_file()))
    return list(dict.fromkeys(roots))  # each once, in order


def check_sources(sources: list[Path]) -> None:
    for source in sources:
        if not source.is_dir():
            raise PolycrateError(f"no such folder: {source}")
    if not find_workspaces(sources):
        raise PolycrateError(
            "no workspace to serve: give -w with a workspace folder (holding workspace.poly) or a folder of them")


def _stamp(root: Path) -> tuple[int | None, ...]:
    stamp: list[int | None] = []
    for name in (WORKSPACE_FILE, "inventory.yml", "blocks.lock", "blocks"):
        try:
            stamp.append((root / name).stat().st_mtime_ns)
        except OSError:
            stamp.append(None)
    return tuple(stamp)


class Catalog:
    def __init__(self, sources: list[Path], backend: str | None = None,
                 schedule_dests: tuple[Path, ...] | None = None):
        self.sources = sources
        # where `polycrate schedules apply` installs (systemd units, cron entries): read to tell applied schedules
        self.schedule_dests = schedule_dests
        self.backend = backend  # team mode: runs are read from PostgreSQL (None: each workspace's SQLite)
        self._entries: dict[str, Entry] = {}
        self._scanned = 0.0
        self._lock = threading.Lock()
        self._next_cache: dict[tuple, tuple[float, list[datetime]]] = {}

    # --- workspaces ------------------------------------------------------------------------

    def entries(self, who: Any = None) -> list[Entry]:
        """The served workspaces; with `who` (a server Principal), only those it may see."""
        with self._lock:
            if time.monotonic() - self._scanned > RESCAN_SECONDS:
                self._rescan()
            entries = list(self._entries.values())
        return entries if who is None else [e for e in entries if who.sees(e.key)]

    def _rescan(self) -> None:
        old = {e.root: e for e in self._entries.values()}
        loaded: list[Entry] = []
        for root in find_workspaces(self.sources):
            entry = old.get(root)
            stamp = _stamp(root)
            if entry is None or entry.stamp != stamp:
                entry = Entry(key="", root=root, stamp=stamp)
                try:
                    entry.ws = load_workspace(root)
                except PolycrateError as exc:
                    entry.error = str(exc)
            loaded.append(entry)
        names = [e.name for e in loaded]
        for entry in loaded:  # the workspace's name, unless two served workspaces share it
            entry.key = entry.name if names.count(entry.name) == 1 else f"{entry.name}@{entry.root.name}"
        self._entries = {e.key: e for e in loaded}
        self._scanned = time.monotonic()

    def entry(self, key: str, who: Any = None) -> Entry:
        for entry in self.entries(who):
            if entry.key == key:
                return entry
        raise NotFoundError(f"no workspace '{key}' is served here")

    def workflow(self, key: str, name: str, who: Any = None):
        entry = self.entry(key, who)
        if entry.ws is None:
            raise PolycrateError(f"workspace '{key}' does not load: {entry.error}")
        if name not in entry.ws.workflows:
            raise NotFoundError(f"workspace '{key}' has no workflow '{name}'")
        return entry, entry.ws.workflows[name]

    def action(self, key: str, block: str, action: str, who: Any = None):
        """A block's action in a served workspace (NotFoundError names what is missing); a template block's
        actions do not run."""
        from polycrate.config.workspace import get_action, get_block

        entry = self.entry(key, who)
        if entry.ws is None:
            raise PolycrateError(f"workspace '{key}' does not load: {entry.error}")
        try:
            found = get_block(entry.ws, block)
            return entry, found, get_action(found, action)
        except PolycrateError as exc:
            raise NotFoundError(f"workspace '{key}': {exc.message}") from None

    @contextmanager
    def store(self, entry: Entry) -> Iterator[RunStore]:
        # opening reconciles: runs whose process died read 'interrupted', as in the CLI
        store = open_store(entry.root, backend=self.backend, workspace=entry.name)
        try:
            yield store
        finally:
            store.close()

    # --- runs ------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        workspace: str | None = None,
        workflow: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        who: Any = None,
    ) -> list[RunRecord]:
        """Runs of every served workspace (or one), newest first: the rows of `polycrate runs list -o json`
        (the store's own filters), each with its `workspace` key."""
        if status is not None and status not in RUN_STATES:
            raise PolycrateError(f"unknown status '{status}' (one of: {', '.join(RUN_STATES)})")
        entries = [self.entry(workspace, who)] if workspace else self.entries(who)
        found: list[RunRecord] = []
        for entry in entries:
            with self.store(entry) as store:
                runs = store.list_runs(name=workflow, kind=RunKind.WORKFLOW if workflow else None, status=status,
                                       since=since, until=until, limit=limit)
                found.extend(_with_workspace(r, entry) for r in runs)
        found.sort(key=lambda r: (r.started, r.id), reverse=True)
        return found[:limit]

    def find_run(self, run_id: str, who: Any = None) -> tuple[Entry, RunRecord]:
        """A run by its id in whichever served workspace holds it: for whoever sees every workspace also a
        unique prefix, 'latest' and the like; for someone granted only some, its full id in those only, so
        no one learns by guessing that a run of another workspace exists."""
        if who is not None and not who.everywhere:
            if not _RUN_ID.match(run_id):
                raise NotFoundError(f"no run '{run_id[:80]}'")
            for entry in self.entries(who):
                with self.store(entry) as store:
                    try:
                        found = store.get_run(run_id)  # a full id: the store's prefix match finds only itself
                    except NotFoundError:
                        continue
                if found.id == run_id:
                    return entry, _with_workspace(found, entry)
            raise self._not_found(run_id, self.entries(who))
        if not _RUN_REF.match(run_id):  # what the store resolves: an id, a prefix of one, latest~N
            raise NotFoundError(f"no run '{run_id[:80]}'")
        hits: list[tuple[Entry, str]] = []
        for entry in self.entries():
            with self.store(entry) as store:
                try:
                    hits.append((entry, store.resolve_id(run_id)))
                except NotFoundError as exc:
                    if "ambiguous" in str(exc):
                        raise NotFoundError(str(exc).split(": ", 1)[-1]) from None
        if not hits:
            raise self._not_found(run_id[:80], self.entries())
        if len(hits) > 1:
            raise NotFoundError(f"run '{run_id}' is ambiguous across workspaces: give more of the id")
        entry, full = hits[0]
        return entry, self.get_run(entry, full)

    def _not_found(self, run_id: str, entries: list[Entry]) -> NotFoundError:
        """No record of the run: in team mode it may be launched and still queued (a worker opens its record)."""
        if self.backend and _RUN_ID.match(run_id):
            from polycrate.history.postgres import connect

            db = connect(self.backend)
            try:
                row = db.execute("SELECT queue, launched_by, state FROM team_runs WHERE id = %s AND workspace = ANY(%s)",
                                 (run_id, [e.name for e in entries])).fetchone()
            finally:
                db.close()
            if row is not None and row["state"] == "queued":
                return NotFoundError(f"run {run_id} is queued on '{row['queue']}' (launched by {row['launched_by']}): "
                                     "no worker of that queue has taken it yet; it shows here once one has")
        return NotFoundError(f"no run '{run_id}'")

    # --- runs launched through the queue and not taken yet (team mode) ---------------------------------

    def queued_runs(self, workspace: str | None = None, workflow: str | None = None, who: Any = None,
                    run_id: str | None = None) -> list[tuple[Entry, dict[str, Any]]]:
        """Runs launched through the backend's queue that no worker has taken yet (no history record), newest
        first, of the served workspaces `who` sees: their launch rows (team_runs) as the pages show them."""
        if not self.backend:
            return []
        from polycrate.team.launch import queued_runs

        entries = [self.entry(workspace, who)] if workspace else self.entries(who)
        if not entries:
            return []
        rows = queued_runs(self.backend, [e.name for e in entries], workflow, run_id)
        found = []
        for row in rows:
            named = [e for e in entries if e.name == row["workspace"]]
            # two served workspaces of one name: the one in the folder it was launched from
            entry = next((e for e in named if str(e.root) == row["root"]), named[0] if named else None)
            if entry is not None:
                found.append((entry, _queued(row, entry)))
        return found

    def find_queued(self, run_id: str, who: Any = None) -> tuple[Entry, dict[str, Any]] | None:
        """A queued run by its full id (no prefix: it has no record to resolve one against), if `who` sees it."""
        if not self.backend or not _RUN_ID.match(run_id):
            return None
        found = self.queued_runs(who=who, run_id=run_id)
        return found[0] if found else None

    def get_run(self, entry: Entry, run_id: str) -> RunRecord:
        """A run of a known workspace, by its full id (the log stream re-reads it while it runs)."""
        with self.store(entry) as store:
            return _with_workspace(store.get_run(run_id), entry)

    def run_logs(self, run_id: str, step: str | None = None, who: Any = None
                 ) -> tuple[Entry, RunRecord, list[tuple[StepRecord, str]]]:
        entry, run = self.find_run(run_id, who)
        with self.store(entry) as store:
            _, logs = store.step_logs(run.id, step)
        return entry, run, logs

    def run_log_tails(self, run_id: str, tail: int, who: Any = None) -> tuple[Entry, RunRecord, list[dict]]:
        """Each step's log, its last `tail` bytes only (from a line's start): a 50 MB log is not one 50 MB page.
        Each item: step, text, size (bytes of the whole log), skipped (bytes before the text)."""
        entry, run = self.find_run(run_id, who)
        out = []
        with self.store(entry) as store:
            for step in run.steps:
                data, size, skipped = b"", 0, 0
                path = store._log_file(run.id, step.position) if hasattr(store, "_log_file") else None
                if path is not None:  # a file: read its tail only
                    try:
                        with open(path, "rb") as handle:
                            size = handle.seek(0, 2)
                            skipped = max(0, size - tail)
                            handle.seek(skipped)
                            data = handle.read()
                    except FileNotFoundError:
                        pass
                elif step.log:  # PostgreSQL (team mode): the store's chunks
                    whole = store.read_log(run.id, step.position).data
                    size, skipped = len(whole), max(0, len(whole) - tail)
                    data = whole[skipped:]
                if skipped:
                    cut = data.find(b"\n")
                    if 0 <= cut < len(data) - 1:  # begin at a line's start
                        skipped += cut + 1
                        data = data[cut + 1:]
                out.append({"step": step, "text": data.decode("utf-8", errors="replace"), "size": size,
                            "skipped": skipped})
        return entry, run, out

    def search_log(self, run_id: str, text: str, step: str | None = None, who: Any = None):
        """Lines of the run's whole log holding `text` (bounded: see server.logview.search), step by step."""
        from polycrate.server.logview import Found, search

        entry, run = self.find_run(run_id, who)
        found = Found()
        with self.store(entry) as store:
            for record in run.steps:
                if record.log and (step is None or record.name == step) and not found.more:
                    search([(record.name, store.read_log(run.id, record.position).data)], text, found)
        return run, found

    def read_log(self, entry: Entry, run_id: str, position: int, cursor: int) -> LogPiece:
        """A step's log from ``cursor`` on (the live log stream reads on while the run runs)."""
        with self.store(entry) as store:
            return store.read_log(run_id, position, cursor)

    # --- workflows, schedules, blocks ------------------------------------------------------

    def next_runs(self, schedule, now: datetime, count: int = 3) -> list[datetime]:
        from polycrate import schedule as sched

        key = (schedule.kind, schedule.expression, count)
        cached = self._next_cache.get(key)
        if cached and cached[1] and cached[1][0] > now and time.monotonic() - cached[0] < 60:
            return cached[1]
        times = sched.next_runs(schedule, now, count, sched.local_zone())
        self._next_cache[key] = (time.monotonic(), times)
        return times

    def schedules_of(self, entry: Entry) -> tuple[dict[str, Any], str | None]:
        """The entry's schedules by workflow, or the error that makes them unreadable."""
        from polycrate import schedule as sched

        if entry.ws is None:
            return {}, entry.error
        if entry.schedules is None:  # checking may run systemd-analyze: once per load of the workspace
            try:
                entry.schedules = ({s.workflow: s for s in sched.workspace_schedules(entry.ws)}, None)
            except PolycrateError as exc:
                entry.schedules = ({}, str(exc))
        return entry.schedules

    def installed_schedules(self) -> Any:
        """Our files in the schedule destinations (markers only: a folder we may not read holds none); with a
        backend the schedules `schedules apply` wrote to PostgreSQL instead, by (workspace, workflow), each with
        its last handled slot (the workers run those, no timer or cron line does)."""
        from polycrate import schedule as sched

        if self.backend:
            from polycrate.team.scheduler import schedules_in_backend

            return {(r["workspace"], r["workflow"]): r for r in schedules_in_backend(self.backend)}

        # where `schedules list` looks without flags (schedule.listed_dests), unless `serve --schedule-dest` says
        return sched.installed_in(self.schedule_dests if self.schedule_dests is not None else sched.listed_dests())

    def applied(self, entry: Entry, schedule, found: Any, states: dict) -> tuple[str, str | None, str | None]:
        """A declared schedule's state, its timer or cron file and what to run: with a backend, the backend's row
        of it; else the state `schedules list` tells (``states``: _installed_states), the overview's and the
        Schedules page's alike."""
        if isinstance(found, dict):  # team mode: the backend's row of this workflow
            row = found.get((entry.name, schedule.workflow))
            if row is None:
                return "not applied", None, None
            same = (row["kind"], row["expression"]) == (schedule.kind, schedule.expression)
            return ("applied" if same else "differs"), None, None
        return _installed_state(entry, schedule.workflow, found, states)

    def overview(self, now: float | None = None, who: Any = None) -> list[dict]:
        """Every workflow of every workspace: last run, last success and its age, next run, overdue."""
        now = now or time.time()
        now_dt = datetime.fromtimestamp(now, UTC)
        rows: list[dict] = []
        found = self.installed_schedules()
        entries = self.entries(who)
        states = {} if isinstance(found, dict) else self._installed_states(found, entries)
        for entry in entries:
            if entry.ws is None:
                rows.append({"workspace": entry.key, "root": str(entry.root), "error": entry.error, "workflow": None})
                continue
            schedules, schedule_error = self.schedules_of(entry)
            with self.store(entry) as store:
                for workflow in entry.ws.workflows.values():
                    rows.append(self._overview_row(entry, store, workflow, schedules.get(workflow.name),
                                                   schedule_error, now, now_dt, found, states))
        return rows

    def _overview_row(self, entry, store, workflow, schedule, schedule_error, now, now_dt, found, states) -> dict:
        status = store.workflow_status(workflow.name)
        last, success, running = status.last, status.last_success, status.running
        row: dict[str, Any] = {
            "workspace": entry.key,
            "workflow": workflow.name,
            "description": workflow.description,
            "steps": len(workflow.steps),
            "last_run": last.id if last else None,
            "last_status": last.status if last else None,
            "last_started": last.started if last else None,
            "last_duration": last.duration if last else None,  # None for a run that never started
            "last_success": success,
            "success_age": round(now - success, 3) if success else None,
            "running": running.id if running else None,
            "schedule": None,
            "applied": None,  # for a declared schedule: its state as on the Schedules page (Catalog.applied)
            "next_run": None,
            "overdue": False,
            "overdue_reason": None,
            "error": schedule_error,
        }
        if schedule is not None:
            row["schedule"] = schedule.expression
            row["applied"] = self.applied(entry, schedule, found, states)[0]
        team_row = found.get((entry.name, workflow.name)) if isinstance(found, dict) else None
        if schedule is not None and row["applied"] == "applied":  # a next run only where one will happen
            try:
                times = (self.backend_slots(team_row, now_dt.timestamp(), 2) if team_row is not None
                         else self.next_runs(schedule, now_dt, 2))
            except Exception as exc:  # an expression the machine cannot compute: say so, do not fail the page
                row["error"] = f"schedule: {exc}"
                times = []
            if times:
                row["next_run"] = times[0].timestamp()
                interval = (times[1] - times[0]).total_seconds() if len(times) > 1 else 86400
                allowed = interval + (schedule.randomized_delay or 0) + (schedule.timeout or DEFAULT_GRACE)
                row["allowed_age"] = allowed
                if success is None:
                    row["overdue"], row["overdue_reason"] = True, "never succeeded"
                elif now - success > allowed:
                    row["overdue"] = True
                    row["overdue_reason"] = f"last success older than the schedule allows ({_span(allowed)})"
        return row

    def backend_slots(self, row: dict, after: float, count: int) -> list[datetime]:
        """The next slots of a schedule in the backend, as its workers compute them (its zone, its rules)."""
        from polycrate.team.scheduler import Slots

        return [datetime.fromtimestamp(t, UTC) for t in Slots(row["kind"], row["expression"], row["zone"]).after(after, count)]

    def schedules(self, now: float | None = None, who: Any = None) -> list[dict]:
        """Every declared schedule of the served workspaces, and every installed timer or cron entry of theirs
        that is no longer declared (it still fires); each with its state. Without a backend the state is the
        one `schedules list` tells (schedule.installed_states: applied, differs, stale, one-off, unknown, with
        what to run), or "not applied" for a declared one nothing installs."""
        now_dt = datetime.fromtimestamp(now or time.time(), UTC)
        rows: list[dict[str, Any]] = []
        found = self.installed_schedules()
        entries = self.entries(who)
        states = {} if isinstance(found, dict) else self._installed_states(found, entries)
        for entry in entries:
            schedules, error = self.schedules_of(entry)
            if error:
                rows.append({"workspace": entry.key, "workflow": None, "error": error})
            team = {k[1]: r for k, r in found.items() if k[0] == entry.name} if isinstance(found, dict) else {}
            for s in schedules.values():
                team_row = team.pop(s.workflow, None)
                try:
                    times = [t.timestamp() for t in (self.backend_slots(team_row, now_dt.timestamp(), 3)
                                                     if team_row is not None else self.next_runs(s, now_dt, 3))]
                    problem = None
                except Exception as exc:
                    times, problem = [], str(exc)
                applied, path, reason = self.applied(entry, s, found, states)
                installed_as = next((m.expression for m in found if str(m.path) == path), None) if path else None
                rows.append({
                    "workspace": entry.key, "workflow": s.workflow, "declared": True, "kind": s.kind,
                    "expression": s.expression, "applied": applied, "reason": reason, "installed_file": path,
                    "installed_expression": installed_as, "randomized_delay": s.randomized_delay,
                    "timeout": s.timeout, "user": s.user, "persistent": s.persistent, "next_runs": times,
                    "error": problem,
                } | (_backend_fields(team_row) if self.backend else {}))
            if not isinstance(found, dict):
                rows += self._undeclared_rows(entry, set(schedules), found, states, now_dt)
            for name, team_row in sorted(team.items()):  # applied earlier, no longer declared: still fired
                try:
                    times = [t.timestamp() for t in self.backend_slots(team_row, now_dt.timestamp(), 3)]
                    problem = None
                except Exception as exc:
                    times, problem = [], str(exc)
                rows.append({
                    "workspace": entry.key, "workflow": name, "declared": False, "kind": team_row["kind"],
                    "expression": team_row["expression"], "applied": "not declared", "reason": None,
                    "installed_file": None, "installed_expression": None, "randomized_delay": None, "timeout": None, "user": None,
                    "persistent": None, "next_runs": times, "error": problem} | _backend_fields(team_row))
        return rows

    def _installed_states(self, found: list, entries: list[Entry]) -> dict[tuple[str, str], Any]:
        """`schedules list`'s states of the installed schedules of these workspaces (no other workspace is read),
        from the workspaces as loaded here."""
        from polycrate import schedule as sched

        roots = {str(e.root.resolve()): e for e in entries}
        loaded = {root: e.ws for root, e in roots.items() if e.ws is not None}
        return sched.installed_states([m for m in found if m.workspace_root in roots], loaded)

    def _undeclared_rows(self, entry: Entry, declared: set[str], found: list, states: dict,
                         now_dt: datetime) -> list[dict]:
        """The workspace's installed timers and cron entries that no declared schedule accounts for (a renamed
        workflow's, one `workflows schedule` wrote, a workspace that does not load): each fires at its time."""
        from polycrate.config.model import Schedule

        root = str(entry.root.resolve())
        rows = []
        for m in found:
            if m.workspace_root != root or m.kind not in ("timer", "cron") or m.workflow in declared:
                continue
            state = states.get((root, m.workflow))
            kind = "on_calendar" if m.kind == "timer" else "cron"
            try:
                times = [t.timestamp() for t in self.next_runs(Schedule(workflow=m.workflow, kind=kind,
                                                                         expression=m.expression or ""), now_dt, 3)]
                problem = None
            except Exception as exc:
                times, problem = [], str(exc)
            rows.append({
                "workspace": entry.key, "workflow": m.workflow, "declared": False, "kind": kind,
                "expression": m.expression, "applied": state.state if state else "unknown",
                "reason": state.reason if state else None, "installed_file": str(m.path),
                "installed_expression": m.expression, "randomized_delay": None,
                "timeout": None, "user": None, "persistent": None, "next_runs": times, "error": problem})
        return rows

    def blocks(self, who: Any = None) -> list[dict]:
        from polycrate.blocks.store import read_lock
        from polycrate import contract  # the JSON of `polycrate blocks list -o json`

        rows = []
        for entry in self.entries(who):
            if entry.ws is None:
                continue
            lock = read_lock(entry.root)
            for block in entry.ws.blocks.values():
                rows.append({"workspace": entry.key} | contract.block(entry.ws, block, lock))
        return rows

    def workflow_runs(self, key: str, name: str, limit: int = 30, who: Any = None) -> list[RunRecord]:
        """The workflow's last finished runs, oldest first (for its chart)."""
        runs = self.list_runs(workspace=key, workflow=name, limit=limit + 5, who=who)
        return list(reversed([r for r in runs if r.status != RUNNING][:limit]))


def _queued(row: dict[str, Any], entry: Entry) -> dict[str, Any]:
    """A queued run's launch as the server shows it (the API's document of it, and its page)."""
    from polycrate.team.launch import queued_document

    return queued_document(row, entry.key)


def _installed_state(entry: Entry, workflow: str, found: list, states: dict) -> tuple[str, str | None, str | None]:
    """A declared schedule's state as `schedules list` tells it (``states``), its timer or cron file, and what
    to run; "not applied" when nothing of it is installed."""
    root = str(entry.root.resolve())
    state = states.get((root, workflow))
    if state is None:
        return "not applied", None, None
    mine = [m for m in found if (m.workspace_root, m.workflow) == (root, workflow)]
    shown = next((m for m in mine if m.kind in ("timer", "cron")), mine[0] if mine else None)
    return state.state, str(shown.path) if shown else None, state.reason


def _backend_fields(row: dict | None) -> dict[str, Any]:
    """What the backend says of a schedule (team mode): where and how its workers fire it, and its last slot."""
    if row is None:
        return {"backend": None}
    last = None
    if row.get("last_slot") is not None:
        last = {"slot": row["last_slot"], "outcome": row["last_outcome"], "run_id": row["last_run_id"],
                "late_by": row["last_late_by"], "reason": row["last_reason"], "worker": row["last_worker"]}
    return {"backend": {"expression": row["expression"], "kind": row["kind"], "zone": row["zone"],
                        "missed": row["missed"], "max_delay": row["max_delay"], "queue": row["queue"],
                        "git_commit": row["git_commit"], "applied": row["applied"], "applied_by": row["applied_by"],
                        "last_slot": last}}


def _with_workspace(run: RunRecord, entry: Entry) -> RunRecord:
    """A run with the served workspace's key (the `workspace` of its JSON); its extra vars by name only
    (a value typed at a terminal may be a password; the server's own launch values are shown from its
    launch record, secret ones masked)."""
    options = dict(run.ansible_options or {})
    if options.get("extra_vars"):
        options["extra_vars"] = redacted_extra_vars(options["extra_vars"])
    return replace(run, workspace=entry.key, ansible_options=options)


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m"

