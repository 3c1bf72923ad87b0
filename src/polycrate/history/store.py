"""The run store: every run, its steps, per-host task counts and its log.

SQLite at ``.polycrate/runs.db`` inside the workspace (``.polycrate/`` carries its
own ``.gitignore``); step logs are plain files under ``.polycrate/runs/<run id>/``
so a run killed half-way keeps everything it printed. Nothing here prints.

Only masked text reaches this module: the engine passes every line, message and
notice through its one masking function first.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from polycrate import ansi
from polycrate.errors import ConfigError, NotFoundError, PolycrateError
from polycrate.runtime.events import HOST_COUNTS
from polycrate.history.logs import StepLog
from polycrate.history.migrations import migrate
from polycrate.history.locking import is_held, lock_path, pid_alive, read_holder
from polycrate.history.records import RUN_COLUMNS, HostCounts, LogPiece, RunRecord, StepRecord, WorkflowStatus
from polycrate.states import Phase, RunKind, RunState, StepState
from polycrate.success import FULL_RUN_SQL, WORKFLOW_SUCCESS_SQL, exit_code_of, run_state

STATE_DIR = ".polycrate"
DB_NAME = "runs.db"
LOGS_DIR = "runs"


# A caller that starts a `polycrate` process for someone else (`polycrate serve`) names the run and who
# launched it through these; the run consumes them, so nothing the run starts inherits them.
_RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")



def state_dir(root: Path) -> Path:
    folder = root / STATE_DIR
    if not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise ConfigError("is not a folder: polycrate keeps its run store, logs and locks in a folder of this "
                              "name (move the file away)", folder)
        folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# polycrate's local state: run store, logs, locks, metrics\n*\n", encoding="utf-8")
    return folder


def new_run_id(now: float | None = None) -> str:
    """Sortable and short enough to type: 20250614-021500-3fa9c1."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time())) + "-" + secrets.token_hex(3)


def claim_identity(started: float, run_id: str | None, user: str | None) -> tuple[str, str]:
    """The new run's id and launching user: as the caller chose them (the server's launch), else a new id
    and the user running polycrate."""
    if run_id is not None and not _RUN_ID_RE.match(run_id):
        raise PolycrateError(f"invalid run id {run_id!r}: expected YYYYMMDD-HHMMSS-xxxxxx")
    return run_id or new_run_id(started), (user or "").strip() or current_user()


def current_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


# SQLITE_CORRUPT, SQLITE_NOTADB: the file is damaged. Busy, read-only, I/O and full-disk errors are
# not damage: they are reported, and the store is left as it is.
_DAMAGED = (11, 26)
_CHECK_LIMIT = 64 * 2**20  # a full quick_check on stores up to this size; a lighter probe above


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit; explicit BEGIN
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a broken header fails here
        try:
            db.execute("PRAGMA journal_mode = WAL")  # readers never block a running night
        except sqlite3.OperationalError:
            pass
        # In WAL mode NORMAL keeps the store consistent through any crash and every commit through a
        # crash of polycrate (SIGKILL, OOM); only a power loss can take the latest commits back. The
        # records that matter are written at FULL (RunStore._durably: a run's start, each step's
        # end, the run's end), which syncs every commit before them too: one fsync per step instead
        # of four (~5 ms each here).
        db.execute("PRAGMA synchronous = NORMAL")
        migrate(db, path)
        size = path.stat().st_size if path.exists() else 0
        if size <= _CHECK_LIMIT:
            result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if result != "ok":
                exc = sqlite3.DatabaseError(f"integrity check: {result}")
                exc.sqlite_errorcode = 11
                raise exc
        else:
            db.execute("SELECT count(*) FROM runs").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _move_aside(path: Path) -> Path:
    """``runs.db`` (and its -wal/-shm) renamed to ``runs.db.corrupt-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


class SQLiteRunStore:
    """The default store: SQLite at ``.polycrate/runs.db``, step logs as files beside it."""

    def __init__(self, root: Path):
        self.root = root
        folder = state_dir(root)
        self.path = folder / DB_NAME
        self.logs_dir = folder / LOGS_DIR
        self.recovered: list[str] = []  # what happened to a damaged store on this open, for notices
        try:
            self.db = _connect(self.path)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _DAMAGED:
                raise
            # A damaged history must never stop the nightly run: keep it for forensics, start afresh.
            aside = _move_aside(self.path)
            self.recovered.append(f"the run store {self.path} was damaged ({exc}); moved aside to {aside.name} "
                                  "and a fresh store started: earlier runs are not listed")
            self.db = _connect(self.path)
        os.chmod(self.path, 0o600)

    @property
    def set_aside(self) -> list[Path]:
        """Damaged stores moved aside earlier (``runs.db.corrupt-<time>``), oldest first."""
        return sorted(p for p in self.path.parent.glob(DB_NAME + ".corrupt-*") if not p.name.endswith(("-wal", "-shm")))

    def close(self) -> None:
        self.db.close()

    # --- writing ---------------------------------------------------------------------------

    def _durably(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement committed with an fsync (and so every commit before it)."""
        self.db.execute("PRAGMA synchronous = FULL")
        try:
            self.db.execute(sql, params)
        finally:
            self.db.execute("PRAGMA synchronous = NORMAL")

    def start_run(
        self,
        *,
        kind: str,
        name: str,
        workflow: str | None = None,
        block: str | None = None,
        action: str | None = None,
        only_step: str | None = None,
        lock_key: str | None = None,
        check: bool = False,
        diff: bool = False,
        resumed_from: str | None = None,
        ansible_options: dict[str, Any] | None = None,
        runtime: str | None = None,
        image: str | None = None,
        image_digest: str | None = None,
        run_id: str | None = None,
        user: str | None = None,
    ) -> str:
        """Record a new run as running; `run_id` the caller chose (the server's launch) or a new one,
        `user` who launched it (default: the user running polycrate)."""
        started = time.time()
        run_id, user = claim_identity(started, run_id, user)
        self._durably(
            "INSERT INTO runs (id, kind, name, workflow, block, action, only_step, user, host, pid, lock_key,"
            " started, status, check_mode, diff_mode, resumed_from, ansible_options, runtime, image, image_digest)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id, kind, name, workflow, block, action, only_step, user, socket.gethostname(),
                os.getpid(), lock_key, started, RunState.RUNNING, int(check), int(diff), resumed_from,
                json.dumps(ansible_options or {}), runtime, image, image_digest,
            ),
        )
        return run_id

    def record_never_started(self, run_id: str, *, workflow: str, only_step: str | None, user: str, status: str,
                             message: str) -> None:
        """The record of a workflow run that stopped before it started (a scheduled run refused by its lock or
        its preflight): ended now, with ``status`` and why, no steps, no pid; ``never_started`` says it never
        started, and its stored ``started`` is its end, its place in the history (history.records.RunRecord)."""
        now = time.time()
        self._durably(
            "INSERT INTO runs (id, kind, name, workflow, only_step, user, host, started, ended, status, exit_code,"
            " message, never_started) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1)",
            (run_id, RunKind.WORKFLOW, workflow, workflow, only_step, user, None, now, now, str(status),
             exit_code_of(RunState(status)), message),
        )

    def add_steps(self, run_id: str, steps: list[dict[str, Any]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for s in steps:
                self.db.execute(
                    "INSERT INTO steps (run_id, position, name, block, action, phase, status, note)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (run_id, s["position"], s["name"], s["block"], s["action"], s.get("phase", Phase.MAIN), s["status"],
                     s.get("note")),
                )

    def step_log(self, run_id: str, position: int, name: str) -> StepLog:
        path = self.logs_dir / run_id / f"{position:02d}-{name}.log"
        self.db.execute("UPDATE steps SET log = ? WHERE run_id = ? AND position = ?",
                        (str(path.relative_to(self.root)), run_id, position))
        return StepLog(path)

    def update_step(self, run_id: str, position: int, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        execute = self._durably if "ended" in fields else self.db.execute  # a step's end is a record that matters
        execute(f"UPDATE steps SET {cols} WHERE run_id = ? AND position = ?", (*fields.values(), run_id, position))

    def set_hosts(self, run_id: str, position: int, hosts: dict[str, dict[str, int]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM step_hosts WHERE run_id = ? AND position = ?", (run_id, position))
            for host, counts in hosts.items():
                self.db.execute(
                    "INSERT INTO step_hosts (run_id, position, host, ok, changed, failed, unreachable, skipped,"
                    " rescued, ignored) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (run_id, position, host, *(int(counts.get(k, 0)) for k in HOST_COUNTS)),
                )

    def add_notice(self, run_id: str, text: str) -> None:
        row = self.db.execute("SELECT notices FROM runs WHERE id = ?", (run_id,)).fetchone()
        notices = json.loads(row["notices"]) if row else []
        notices.append({"time": time.time(), "text": text})
        self.db.execute("UPDATE runs SET notices = ? WHERE id = ?", (json.dumps(notices), run_id))

    def finish_run(self, run_id: str, *, status: str, exit_code: int, **fields: Any) -> None:
        # The stored status is polycrate.success's, from the recorded steps, whatever the caller says:
        # a run with a failed or interrupted step is never stored as succeeded.
        steps = self.db.execute("SELECT status, phase FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        if steps:
            stated = status
            status = run_state(((s["status"], s["phase"]) for s in steps), status == RunState.INTERRUPTED)
            exit_code = exit_code if status == stated else exit_code_of(status)
        fields.update(status=status, exit_code=exit_code, ended=time.time())
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._durably(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    # --- stale runs ------------------------------------------------------------------------

    def _alive(self, row: sqlite3.Row) -> bool:
        return run_process_alive(self.root, row["id"], row["host"], row["pid"], row["lock_key"])

    def reconcile(self) -> int:
        """Mark 'running' rows whose process is gone (SIGKILL, power loss) as interrupted, ended at their last
        sign of life (found_gone)."""
        marked = 0
        for row in self.db.execute("SELECT * FROM runs WHERE status = ?", (RunState.RUNNING,)).fetchall():
            if self._alive(row):
                continue
            steps = [dict(s) for s in self.db.execute("SELECT * FROM steps WHERE run_id = ?", (row["id"],))]
            end = found_gone(row["started"], steps, json.loads(row["notices"] or "[]"),
                             (self.logs_dir / row["id"]).glob("*.log"))
            with self.db:
                self.db.execute("BEGIN")
                for step in steps:
                    self.db.execute(f"UPDATE steps SET {', '.join(f'{k} = ?' for k in FOUND_GONE_STEP)}"
                                    " WHERE run_id = ? AND position = ?",
                                    (*(step[k] for k in FOUND_GONE_STEP), row["id"], step["position"]))
                self.db.execute(
                    "UPDATE runs SET status = ?, ended = COALESCE(ended, ?), exit_code = COALESCE(exit_code, 137),"
                    " message = COALESCE(message, ?), failed_step = COALESCE(failed_step, ?) WHERE id = ? AND status = ?",
                    (RunState.INTERRUPTED, end.ended, end.message, end.step, row["id"], RunState.RUNNING),
                )
            marked += 1
        return marked

    # --- reading ---------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        name: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 20,
    ) -> list[RunRecord]:
        """Runs newest first; a running run carries its current step and the time so far."""
        sql = "SELECT * FROM runs"
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("name", name), ("kind", kind), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started >= ?")
            args.append(since)
        if until is not None:
            where.append("started < ?")
            args.append(until)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_record(r, current_step=self._current_step(r["id"]) if r["status"] == RunState.RUNNING else None)
                for r in self.db.execute(sql, args).fetchall()]

    def count_runs(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"])

    def _current_step(self, run_id: str) -> str | None:
        row = self.db.execute(
            "SELECT name FROM steps WHERE run_id = ? AND status = ? ORDER BY position DESC LIMIT 1", (run_id, StepState.RUNNING)
        ).fetchone()
        return row["name"] if row else None

    def resolve_id(self, ref: str) -> str:
        """A run id, a unique prefix of one or of its random part (the hex after the time), 'latest',
        or 'latest~N' (the N-th run before the latest)."""
        match = re.fullmatch(r"latest(?:~(\d+))?", ref)
        if match:
            back = int(match.group(1) or 0)
            row = self.db.execute(
                "SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT 1 OFFSET ?", (back,)
            ).fetchone()
            if row is None:
                total = self.count_runs()
                if total == 0:
                    raise NotFoundError("no runs recorded yet", self.path)
                raise NotFoundError(f"no run '{ref}': only {total} run(s) recorded (latest~{total - 1} is the oldest)",
                                    self.path)
            return str(row["id"])
        like = re.sub(r"([%_\\])", r"\\\1", ref) + "%"
        rows = self.db.execute(
            "SELECT id FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' OR substr(id, 17) LIKE ? ESCAPE '\\'"
            " ORDER BY id LIMIT 4",
            (ref, like, like),
        ).fetchall()
        return pick_id(ref, [r["id"] for r in rows], self.path)

    def find_run(self, run_id: str) -> RunRecord | None:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row) if row is not None else None

    def get_run(self, ref: str) -> RunRecord:
        run_id = self.resolve_id(ref)
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        hosts: dict[int, dict[str, HostCounts]] = {}
        for h in self.db.execute("SELECT * FROM step_hosts WHERE run_id = ? ORDER BY host", (run_id,)):
            hosts.setdefault(h["position"], {})[h["host"]] = HostCounts.from_mapping(dict(h))
        steps = tuple(StepRecord.from_mapping(dict(s), hosts.get(s["position"], {}))
                      for s in self.db.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY position", (run_id,)))
        return _record(row, steps=steps)

    def _log_file(self, run_id: str, position: int) -> Path | None:
        row = self.db.execute("SELECT log FROM steps WHERE run_id = ? AND position = ?", (run_id, position)).fetchone()
        return self.root / row["log"] if row is not None and row["log"] else None

    def read_log(self, run_id: str, position: int, cursor: int = 0) -> LogPiece:
        path = self._log_file(run_id, position)
        if path is None:
            return LogPiece(b"", cursor)
        try:
            with open(path, "rb") as handle:
                handle.seek(cursor)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        return LogPiece(data, cursor + len(data))

    def step_logs(self, ref: str, step: str | None = None) -> tuple[str, list[tuple[StepRecord, str]]]:
        run = self.get_run(ref)
        chosen = choose_steps(run, step, self.path)
        # plain text: the stored colour codes are for the web page only (read_log keeps them)
        return run.id, [(s, ansi.strip(self.read_log(run.id, s.position).data.decode("utf-8", "replace"))
                         if s.log else "") for s in chosen]

    def latest_full_run(self, workflow: str) -> RunRecord | None:
        """The newest real run of the whole workflow (not --check, not --step)."""
        row = self.db.execute(
            f"SELECT id FROM runs WHERE {FULL_RUN_SQL} AND name = ?"
            " AND status != ? ORDER BY started DESC, id DESC LIMIT 1",
            (workflow, RunState.RUNNING),
        ).fetchone()
        return self.get_run(row["id"]) if row else None

    def workflow_status(self, workflow: str) -> WorkflowStatus:
        last = self.db.execute(
            f"SELECT * FROM runs WHERE {FULL_RUN_SQL} AND name = ? AND status != ? ORDER BY started DESC LIMIT 1",
            (workflow, RunState.RUNNING)).fetchone()
        success = self.db.execute(  # the one rule (polycrate.success): a --check or --step run is no success
            f"SELECT MAX(ended) AS t FROM runs WHERE {WORKFLOW_SUCCESS_SQL} AND name = ?", (workflow,)).fetchone()["t"]
        running = self.db.execute(
            "SELECT * FROM runs WHERE kind = ? AND name = ? AND status = ? ORDER BY started DESC LIMIT 1",
            (RunKind.WORKFLOW, workflow, RunState.RUNNING)).fetchone()
        return WorkflowStatus(_record(last) if last else None, success, _record(running) if running else None)

    def workflow_metrics(self) -> list[dict[str, Any]]:
        """Per workflow: its last full run and its last success (polycrate.success: --step and
        check-mode runs are neither)."""
        names = [r["name"] for r in self.db.execute(f"SELECT DISTINCT name FROM runs WHERE {FULL_RUN_SQL} ORDER BY name")]
        return [m for m in (metrics_row(name, self.workflow_status(name)) for name in names) if m is not None]

    # --- moving runs between stores ---------------------------------------------------------

    def export_runs(self) -> Iterator[tuple[RunRecord, dict[int, bytes]]]:
        ids = [r["id"] for r in self.db.execute("SELECT id FROM runs ORDER BY started, id")]
        for run_id in ids:
            run = self.get_run(run_id)
            yield run, {s.position: self.read_log(run_id, s.position).data for s in run.steps if s.log}

    def import_run(self, run: RunRecord, logs: dict[int, bytes]) -> bool:
        if self.find_run(run.id) is not None:
            return False
        values = run_columns(run)
        values["notices"] = json.dumps(values["notices"])
        values["ansible_options"] = json.dumps(values["ansible_options"])
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                            tuple(values.values()))
            for s in run.steps:
                step = step_columns(s)
                if s.position in logs:
                    path = self.logs_dir / run.id / f"{s.position:02d}-{s.name}.log"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(logs[s.position])
                    step["log"] = str(path.relative_to(self.root))
                self.db.execute(f"INSERT INTO steps (run_id, {', '.join(step)}) VALUES (?, {', '.join('?' * len(step))})",
                                (run.id, *step.values()))
                for host, counts in s.hosts.items():
                    self.db.execute(
                        "INSERT INTO step_hosts (run_id, position, host, ok, changed, failed, unreachable, skipped,"
                        " rescued, ignored) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (run.id, s.position, host, *(getattr(counts, k) for k in HOST_COUNTS)))
        return True

    # --- retention -------------------------------------------------------------------------

    def prune(self, keep_runs: int | None = None, keep_days: float | None = None) -> list[str]:
        """Remove finished runs beyond the newest `keep_runs` or older than `keep_days`, with their logs."""
        doomed: set[str] = set()
        if keep_runs is not None:
            rows = self.db.execute(
                "SELECT id FROM runs WHERE status != ? ORDER BY started DESC, id DESC LIMIT -1 OFFSET ?",
                (RunState.RUNNING, keep_runs),
            )
            doomed.update(r["id"] for r in rows)
        if keep_days is not None:
            cutoff = time.time() - keep_days * 86400
            rows = self.db.execute("SELECT id FROM runs WHERE status != ? AND started < ?", (RunState.RUNNING, cutoff))
            doomed.update(r["id"] for r in rows)
        if not doomed:
            return []
        with self.db:
            self.db.execute("BEGIN")
            for run_id in doomed:
                self.db.execute("DELETE FROM step_hosts WHERE run_id = ?", (run_id,))
                self.db.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                self.db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        for run_id in doomed:
            shutil.rmtree(self.logs_dir / run_id, ignore_errors=True)
        return sorted(doomed)


def _record(row: sqlite3.Row, *, steps: tuple[StepRecord, ...] = (), current_step: str | None = None) -> RunRecord:
    data = dict(row)
    data["notices"] = json.loads(data["notices"] or "[]")
    data["ansible_options"] = json.loads(data.get("ansible_options") or "{}")
    return RunRecord.from_columns(data, steps=steps, current_step=current_step)


# --- shared by the stores: the same rules and wording in SQLite and PostgreSQL ---------------------------


def run_process_alive(root: Path | None, run_id: str, host: str | None, pid: int | None, lock_key: str | None) -> bool:
    """Whether a 'running' run's process still runs. Decidable only on the host that ran it."""
    if host != socket.gethostname():
        return True
    if not pid_alive(pid):
        return False
    if lock_key and root is not None:
        path = lock_path(root, lock_key)
        holder = read_holder(path)
        if not is_held(path):
            return False
        return holder is None or holder.run_id in (None, run_id)
    return True


MISSING_PROCESS = "the run's process ended without recording a result (killed?)"


FOUND_GONE_STEP = ("status", "ended", "attempts", "duration", "message")  # the step columns found_gone sets


class FoundGone(NamedTuple):
    ended: float  # the run's last sign of life
    step: str | None  # the step that was running then
    message: str  # what happened, and between which times (the record's end is the earlier one)


def found_gone(started: float, steps: list[dict[str, Any]], notices: list[dict[str, Any]],
               logs: Iterable[Path] = (), also: Iterable[float] = (),
               say: Callable[[float], str] | None = None) -> FoundGone:
    """A 'running' run whose process is gone (SIGKILL, the OOM killer, a power loss), as both stores record it
    when they find it: ended at its last sign of life (the last time it wrote: a record, a notice, a line of a
    step's log), never when it was found, which may be hours later (its message gives both times: it ended
    between them); the step that was running interrupted with that end, its duration and (at least) its one
    attempt; the main steps after it skipped, as after a stop (run/drive.py). Updates ``steps`` (store rows,
    as dicts) in place. ``also``: other signs of life (a team worker's last heartbeat); ``say``: the message,
    given the end (by default: the process ended without recording a result, last seen, found gone)."""
    times = [started] + [t for s in steps for t in (s.get("started"), s.get("ended")) if t]
    times += [float(n["time"]) for n in notices if isinstance(n, dict) and n.get("time")]
    for log in logs:
        try:
            times.append(log.stat().st_mtime)
        except OSError:
            pass
    times += [t for t in also if t]
    ended = min(max(times), time.time())
    message = say(ended) if say is not None else f"{MISSING_PROCESS}: last seen {shown(ended)}, found gone {shown()}"
    stopped: str | None = None
    for step in sorted(steps, key=lambda s: s["position"]):
        if step["status"] == StepState.RUNNING:
            stopped = stopped or step["name"]
            step.update(status=str(StepState.INTERRUPTED), ended=ended, attempts=max(step.get("attempts") or 0, 1),
                        message=step.get("message") or message)
            if step.get("started"):
                step["duration"] = round(ended - step["started"], 3)
        elif step["status"] == StepState.NOT_RUN and step.get("phase", Phase.MAIN) == Phase.MAIN:
            step["status"] = str(StepState.SKIPPED)
    return FoundGone(ended, stopped, message)


def shown(when: float | None = None) -> str:
    """A time of the record as a message says it (local time, to the second; None: now)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def pick_id(ref: str, ids: list[str], where: Path | str) -> str:
    """The one id ``ref`` names among the candidates its prefix matched (at most 4), or a one-line error."""
    if ref in ids:
        return ref
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise NotFoundError(f"no run '{ref}' (see: polycrate runs list)", where)
    raise NotFoundError(f"run '{ref}' is ambiguous ({', '.join(ids[:3])}, ...): give more of the id", where)


def choose_steps(run: RunRecord, step: str | None, where: Path | str) -> tuple[StepRecord, ...]:
    if step is None:
        return run.steps
    chosen = tuple(s for s in run.steps if s.name == step)
    if not chosen:
        from polycrate.config.workspace import closest

        raise NotFoundError(f"run {run.id} has no step '{step}'" + closest(step, [s.name for s in run.steps]), where)
    return chosen


def metrics_row(name: str, status: WorkflowStatus) -> dict[str, Any] | None:
    last = status.last
    if last is None:
        return None
    return {
        "workflow": name,
        "last_run": last.ended or last.started,
        "last_started": last.started,
        "last_success": status.last_success,
        "last_duration": last.duration or 0.0,  # 0 for a run that never started (stopped while queued)
        "last_status": last.status,
        "last_exit_code": last.exit_code,
    }


STEP_COLUMNS = ("position", "name", "block", "action", "phase", "status", "exit_code", "attempts", "started", "ended",
                "duration", "failed_task", "failed_host", "message", "note", "log")


def run_columns(run: RunRecord) -> dict[str, Any]:
    """A run's stored columns (enums as their values, notices and options as plain data)."""
    data: dict[str, Any] = {k: getattr(run, k) for k in RUN_COLUMNS}
    for key in ("kind", "status"):
        data[key] = str(data[key])
    data["check_mode"] = int(run.check_mode)
    data["diff_mode"] = int(run.diff_mode)
    data["never_started"] = int(run.never_started)
    data["notices"] = [n.as_dict() for n in run.notices]
    data["ansible_options"] = dict(run.ansible_options)
    return data


def step_columns(step: StepRecord) -> dict[str, Any]:
    data: dict[str, Any] = {k: getattr(step, k) for k in STEP_COLUMNS}
    for key in ("phase", "status"):
        data[key] = str(data[key])
    return data
