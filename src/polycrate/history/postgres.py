"""Team mode's run store: one PostgreSQL database holds the history of many workspaces and hosts.

Every row carries its workspace's name, so the hosts that run a workspace (each its own checkout) share
one history, and ``runs list/show/logs`` read the same from any of them. Step logs are rows of chunks
(masked text, as the engine writes it), flushed within ``FLUSH_SECONDS`` so another host shows a live log.
Times are epoch seconds (double precision), as in the SQLite store, so a run moves between them unchanged.

The schema is an ordered list of migrations (``MIGRATIONS``), applied by ``polycrate backend init`` under an
advisory lock; the numbers applied are rows of ``polycrate_schema``. Opening a store never changes the schema:
a database without it, or behind or ahead of this polycrate, is refused with one line that says what to do.

psycopg is imported here only: nothing imports this module without a backend setting.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from polycrate import ansi
from polycrate.errors import EXIT_SYSTEM, PolycrateError
from polycrate.history.records import (
    HostCounts,
    LogPiece,
    RunRecord,
    StepRecord,
    WorkflowStatus,
)
from polycrate.history.store import (
    FOUND_GONE_STEP,
    LOGS_DIR,
    STATE_DIR,
    STEP_COLUMNS,
    choose_steps,
    claim_identity,
    found_gone,
    metrics_row,
    pick_id,
    run_columns,
    run_process_alive,
    step_columns,
)
from polycrate.runtime.events import HOST_COUNTS
from polycrate.states import Phase, RunKind, RunState, StepState
from polycrate.success import FULL_RUN_SQL, WORKFLOW_SUCCESS_SQL, exit_code_of, run_state

FLUSH_SECONDS = 0.2  # a live log's lines reach other hosts at most this late
CHUNK_BYTES = 256 * 1024  # a log chunk's size at most (imports split longer logs)
CONNECT_TIMEOUT = 10
# the one advisory lock key of `backend init` (two inits at once apply each migration once)
MIGRATION_LOCK = 0x706F6C79  # "poly"


Connection = psycopg.Connection[dict[str, Any]]  # rows as dicts (dict_row)


class BackendError(PolycrateError):
    """The backend's schema does not fit this polycrate (bad input: exit 2)."""


class BackendUnreachable(BackendError):
    """The backend cannot be reached: like an unreadable run store, the system refused (exit 74)."""

    exit_code = EXIT_SYSTEM


def safe_dsn(dsn: str) -> str:
    """The DSN as it may be shown: without its password."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "the backend"
    if parts.password is None:
        return re.sub(r"password\s*=\s*\S+", "password=********", dsn)
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(dsn: str) -> Connection:
    try:
        return psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT,
                               application_name="polycrate")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnreachable(f"cannot connect to the backend {safe_dsn(dsn)}: {reason.replace(dsn, safe_dsn(dsn))}") from None


# --- the schema -------------------------------------------------------------------------------------

_V1 = (
    """CREATE TABLE runs (
    workspace TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    workflow TEXT,
    block TEXT,
    action TEXT,
    only_step TEXT,
    "user" TEXT,
    host TEXT,
    pid INTEGER,
    lock_key TEXT,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    status TEXT NOT NULL,
    exit_code INTEGER,
    check_mode SMALLINT NOT NULL DEFAULT 0,   -- 0/1 as in SQLite: polycrate.success's SQL reads both
    diff_mode SMALLINT NOT NULL DEFAULT 0,
    resumed_from TEXT,
    failed_step TEXT,
    failed_task TEXT,
    failed_host TEXT,
    message TEXT,
    notices JSONB NOT NULL DEFAULT '[]',
    ansible_options JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (workspace, id)
)""",
    "CREATE INDEX runs_by_started ON runs (workspace, started)",
    "CREATE INDEX runs_by_status ON runs (workspace, status, started)",
    "CREATE INDEX runs_by_outcome ON runs (workspace, kind, name, status, ended)",
    """CREATE TABLE steps (
    workspace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    block TEXT,
    action TEXT,
    phase TEXT NOT NULL DEFAULT 'main',
    status TEXT NOT NULL,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    started DOUBLE PRECISION,
    ended DOUBLE PRECISION,
    duration DOUBLE PRECISION,
    failed_task TEXT,
    failed_host TEXT,
    message TEXT,
    note TEXT,
    log TEXT,
    PRIMARY KEY (workspace, run_id, position),
    FOREIGN KEY (workspace, run_id) REFERENCES runs (workspace, id) ON DELETE CASCADE
)""",
    """CREATE TABLE step_hosts (
    workspace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    host TEXT NOT NULL,
    ok INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    rescued INTEGER NOT NULL DEFAULT 0,
    ignored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace, run_id, position, host),
    FOREIGN KEY (workspace, run_id) REFERENCES runs (workspace, id) ON DELETE CASCADE
)""",
    """CREATE TABLE log_chunks (
    workspace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    seq INTEGER NOT NULL,          -- 1, 2, ... per step; a reader's cursor is the next seq
    data BYTEA NOT NULL,
    PRIMARY KEY (workspace, run_id, position, seq),
    FOREIGN KEY (workspace, run_id) REFERENCES runs (workspace, id) ON DELETE CASCADE
)""",
)


def _v1_history(db: Connection) -> None:
    for statement in _V1:
        db.execute(statement)


Migration = tuple[str, Callable[[Connection], None]]

# To change the schema: append a migration; never edit or reorder one that has shipped.
def _v2_run_runtime(db: Connection) -> None:
    # where a run's actions ran (as runs.db's version 5): 'local' or 'container', the image and its ID
    for column in ("runtime", "image", "image_digest"):
        db.execute(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {column} TEXT")


def _v3_workers(db: Connection) -> None:
    # The queue and its workers (team/): procrastinate's own schema, as the pinned procrastinate ships it
    # (its jobs, locks, workers and heartbeats), and ours beside it. A newer procrastinate brings its own
    # migrations: they come here as a later version of ours, never by editing this one.
    from importlib import resources

    db.execute(resources.files("procrastinate").joinpath("sql/schema.sql").read_text(encoding="utf-8"))
    # A run launched in team mode, from its launch to its end: where it queued, which commit of which
    # workspace folder, who launched it, which worker and process ran it, who asked it to stop.
    db.execute("""CREATE TABLE team_runs (
    workspace TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    only_step TEXT,
    queue TEXT NOT NULL,
    root TEXT NOT NULL,                 -- the workspace folder the worker runs (same path on its host)
    git_commit TEXT NOT NULL,           -- HEAD at launch: the worker refuses any other
    options JSONB NOT NULL DEFAULT '{}',
    launched_by TEXT NOT NULL,
    launched_host TEXT,
    launched DOUBLE PRECISION NOT NULL,
    job_id BIGINT,                      -- procrastinate_jobs.id
    state TEXT NOT NULL,                -- queued, running, done, lost
    worker TEXT,                        -- the worker's name, host and procrastinate id
    worker_host TEXT,
    worker_id BIGINT,
    pid INTEGER,                        -- the run's own process on the worker's host
    started DOUBLE PRECISION,
    stop_requested_by TEXT,
    stop_requested DOUBLE PRECISION,
    reason TEXT,                        -- why it ended other than by its steps (stopped, lost, refused)
    PRIMARY KEY (workspace, id)
)""")
    # one launched, queued or running run per workflow: a second launch is refused by the database
    db.execute("CREATE UNIQUE INDEX team_runs_one_active ON team_runs (workspace, workflow)"
               " WHERE state IN ('queued', 'running')")
    db.execute("CREATE INDEX team_runs_by_job ON team_runs (job_id)")
    db.execute("""CREATE TABLE team_workers (
    worker_id BIGINT PRIMARY KEY,       -- procrastinate_workers.id (its heartbeat)
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    queues TEXT[] NOT NULL,
    concurrency INTEGER NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    last_heartbeat DOUBLE PRECISION,    -- the last one seen, kept after procrastinate forgets the worker
    stopped DOUBLE PRECISION,           -- ended by a signal
    lost DOUBLE PRECISION               -- found silent by another worker (its runs were marked lost)
)""")


def _v4_slices(db: Connection) -> None:
    # One part of a sliced step (`slices: N`, team/slices.py): its hosts, the job and worker that ran it, how
    # it ended and what it printed; the run's own process combines the parts into the step's record.
    db.execute("""CREATE TABLE team_slices (
    batch TEXT NOT NULL,                -- one sliced step's execution in one run
    idx INTEGER NOT NULL,               -- 1..total
    total INTEGER NOT NULL,
    workspace TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    hosts TEXT[] NOT NULL,
    job_id BIGINT,                      -- procrastinate_jobs.id
    state TEXT NOT NULL,                -- queued, running, done, lost
    worker TEXT,
    worker_host TEXT,
    worker_id BIGINT,
    lost_after DOUBLE PRECISION,        -- the taking worker's: its slice is lost after this long without a heartbeat
    pid INTEGER,
    started DOUBLE PRECISION,
    ended DOUBLE PRECISION,
    outcome JSONB,                      -- status, exit_code, attempts, counts, failed_task, failed_host, message
    log TEXT NOT NULL DEFAULT '',       -- masked; colour codes (SGR) kept, as in the run store
    stop_requested DOUBLE PRECISION,
    PRIMARY KEY (batch, idx)
)""")
    db.execute("CREATE INDEX team_slices_by_run ON team_slices (workspace, run_id)")


def _v5_server_state(db: Connection) -> None:
    # `polycrate serve`'s own state (server/state.py's tables, in a schema of their own): with a backend every
    # server shares its users, tokens, sessions, grants, teams, launches and audit
    db.execute("CREATE SCHEMA IF NOT EXISTS polycrate_server")
    db.execute("SET LOCAL search_path TO polycrate_server, public")  # the tables below go there
    for statement in (
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL,"
        " created DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,"
        " created DOUBLE PRECISION NOT NULL, last_used DOUBLE PRECISION)",
        'CREATE TABLE sessions (hash TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,'
        " csrf TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, time DOUBLE PRECISION NOT NULL,"
        " actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, client TEXT, detail TEXT)",
        "CREATE INDEX audit_by_time ON audit (time)",
        'CREATE TABLE login_failures (time DOUBLE PRECISION NOT NULL, "user" TEXT NOT NULL, client TEXT)',
        "CREATE INDEX login_failures_by_time ON login_failures (time)",
        "CREATE TABLE grants (principal TEXT NOT NULL, workspace TEXT NOT NULL, role TEXT NOT NULL,"
        " created DOUBLE PRECISION NOT NULL, PRIMARY KEY (principal, workspace))",
        "CREATE TABLE teams (name TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL)",
        'CREATE TABLE team_members (team TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE, "user" TEXT NOT NULL'
        ' REFERENCES users (name) ON DELETE CASCADE, created DOUBLE PRECISION NOT NULL, PRIMARY KEY (team, "user"))',
        "CREATE TABLE launches (run_id TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,"
        " workspace TEXT NOT NULL, workflow TEXT NOT NULL, shown TEXT NOT NULL, options TEXT NOT NULL, vars_file TEXT)",
    ):
        db.execute(statement)
    db.execute("SET LOCAL search_path TO DEFAULT")


def _v6_run_sources(db: Connection) -> None:
    # Where a worker fetches a launched run's commit from (team/source.py): the remote's URL and the workspace's
    # folder in the repository. A launched run without a row here is run from the same folder on the worker.
    db.execute("""CREATE TABLE team_run_sources (
    workspace TEXT NOT NULL,
    id TEXT NOT NULL,                   -- team_runs.id
    remote TEXT NOT NULL,               -- the URL (or path) the worker fetches from
    subdir TEXT NOT NULL DEFAULT '',    -- the workspace's folder in the repository ('' at its top)
    PRIMARY KEY (workspace, id)
)""")


def _v7_schedules(db: Connection) -> None:
    # Schedules in team mode (team/scheduler.py): a workspace's declared schedules as `schedules apply` wrote
    # them, and one row per slot a scheduler handled. The slot row's primary key is what makes a slot fire once
    # across every worker: it is inserted in the transaction that launches the run.
    db.execute("""CREATE TABLE team_schedules (
    workspace TEXT NOT NULL,
    workflow TEXT NOT NULL,             -- the schedule's name: one schedule per workflow
    kind TEXT NOT NULL,                 -- on_calendar or cron
    expression TEXT NOT NULL,
    zone TEXT,                          -- the applying host's time zone (NULL: each worker's own)
    missed TEXT NOT NULL,               -- run-once or skip: a slot missed while no worker was alive
    max_delay DOUBLE PRECISION,         -- run-once: not later than this many seconds (NULL: however late)
    queue TEXT NOT NULL,
    root TEXT NOT NULL,
    git_commit TEXT NOT NULL,           -- the commit its runs run (HEAD at apply)
    remote TEXT,                        -- where a worker fetches that commit (team/source.py; NULL: the folder)
    subdir TEXT NOT NULL DEFAULT '',    -- the workspace's folder in that repository
    prompts TEXT,                       -- where the workflow would prompt: its slots are refused
    applied DOUBLE PRECISION NOT NULL,  -- since when this expression holds: earlier slots are not its own
    applied_by TEXT NOT NULL,
    PRIMARY KEY (workspace, workflow)
)""")
    db.execute("""CREATE TABLE team_schedule_slots (
    workspace TEXT NOT NULL,
    workflow TEXT NOT NULL,
    slot DOUBLE PRECISION NOT NULL,     -- the slot's time (epoch seconds)
    fired DOUBLE PRECISION NOT NULL,    -- when a scheduler handled it
    worker TEXT NOT NULL,
    outcome TEXT NOT NULL,              -- launched, refused (the workflow was running) or skipped (missed)
    run_id TEXT,
    late_by DOUBLE PRECISION,           -- seconds after its time it was launched
    reason TEXT,                        -- why it was late, refused or skipped
    PRIMARY KEY (workspace, workflow, slot)
)""")
    db.execute("CREATE INDEX team_schedule_slots_by_run ON team_schedule_slots (workspace, run_id)")


def _v8_run_values(db: Connection) -> None:
    # A launched run's launch values (team/values.py), so that a worker on any host gets them: plain ones as
    # JSON (``value``) or a terminal's --extra-vars file as its text (``text``); secret ones only as age
    # ciphertext to the workspace's recipients (``sealed``). ``position``: its place among the run's --extra-vars.
    db.execute("""CREATE TABLE team_run_values (
    workspace TEXT NOT NULL,
    id TEXT NOT NULL,                   -- team_runs.id
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,                 -- data (launched over HTTP: every text !unsafe) or file (a terminal's @FILE)
    names JSONB NOT NULL DEFAULT '[]',  -- the variables' names, never their values
    value JSONB,                        -- data, not secret
    text TEXT,                          -- file, not secret
    sealed BYTEA,                       -- secret: age ciphertext (the worker's identity opens it)
    origin TEXT,                        -- file: its path on the launching host
    PRIMARY KEY (workspace, id, position)
)""")


def _v9_anonymous_audit_budget(db: Connection) -> None:
    # The audit budget of people not logged in (server/state.py's audit_anonymous), one for every server on the
    # backend: the rows written in the last minute, per address, and how many were left out since the last one
    db.execute("CREATE TABLE polycrate_server.anonymous_audit (time DOUBLE PRECISION NOT NULL, client TEXT)")
    db.execute("CREATE INDEX anonymous_audit_by_time ON polycrate_server.anonymous_audit (time)")
    db.execute("CREATE TABLE polycrate_server.anonymous_left_out (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),"
               " count BIGINT NOT NULL)")
    db.execute("INSERT INTO polycrate_server.anonymous_left_out (count) VALUES (0)")


def _v10_slice_workers(db: Connection) -> None:
    # A worker takes the parts of sliced steps with a second procrastinate worker of its own (team/worker.py):
    # its id, so that `worker list` shows one row per worker with its parts and the reaper knows its jobs.
    db.execute("ALTER TABLE team_workers ADD COLUMN slice_worker_id BIGINT")
    db.execute("CREATE INDEX team_slices_by_job ON team_slices (job_id)")


def _v11_dangling_grants(db: Connection) -> None:
    # Grants whose user, token or team no longer exists (written before a grant needed its principal and before a
    # removed token took its grants along): a later user, token or team of that name would inherit them. Each is
    # audited, then removed. The same statement as server.db's first migration (server/state.py), frozen here.
    dangling = (
        "FROM polycrate_server.grants WHERE CASE WHEN substr(principal, 1, 6) = 'token:' THEN NOT EXISTS"
        " (SELECT 1 FROM polycrate_server.tokens WHERE name = substr(principal, 7))"
        " WHEN substr(principal, 1, 5) = 'team:' THEN NOT EXISTS"
        " (SELECT 1 FROM polycrate_server.teams WHERE name = substr(principal, 6))"
        " ELSE NOT EXISTS (SELECT 1 FROM polycrate_server.users WHERE name = principal) END")
    db.execute("INSERT INTO polycrate_server.audit (time, actor, action, target, outcome, detail)"
               " SELECT extract(epoch FROM clock_timestamp()), 'polycrate', 'grant-remove', principal || '@' || workspace,"
               " 'ok', json_build_object('role', role, 'reason',"
               " 'its user, token or team no longer exists (removed by a schema migration)')::text " + dangling)
    db.execute("DELETE " + dangling)


def _v12_never_started(db: Connection) -> None:
    # a launched run stopped or refused before any process took it: 1, and its `started` is its end (its place in
    # the history), never a start (history.records.RunRecord.never_started)
    db.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS never_started SMALLINT NOT NULL DEFAULT 0")


MIGRATIONS: tuple[Migration, ...] = (
    ("runs, steps, step_hosts, log_chunks (the run history of many workspaces)", _v1_history),
    ("runs: runtime, image, image_digest", _v2_run_runtime),
    ("procrastinate's queue, team_runs, team_workers (workers)", _v3_workers),
    ("team_slices (the parts of sliced steps)", _v4_slices),
    ("polycrate_server: the server's users, tokens, sessions, grants, teams, launches, audit", _v5_server_state),
    ("team_run_sources (the remote a worker fetches a launched commit from)", _v6_run_sources),
    ("team_schedules, team_schedule_slots (schedules on the workers)", _v7_schedules),
    ("team_run_values (a launched run's launch values; secret ones age-encrypted)", _v8_run_values),
    ("polycrate_server.anonymous_audit: the anonymous audit budget of every server", _v9_anonymous_audit_budget),
    ("team_workers.slice_worker_id (a worker's slice slots), team_slices by job", _v10_slice_workers),
    ("polycrate_server.grants: grants of users, tokens and teams that no longer exist removed (and audited)",
     _v11_dangling_grants),
    ("runs.never_started (a launched run stopped before any process took it)", _v12_never_started),
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Connection) -> int | None:
    """The number of migrations applied; None: not a polycrate backend yet."""
    row = db.execute("SELECT to_regclass('polycrate_schema') AS t").fetchone()
    if row is None or row["t"] is None:
        return None
    version = db.execute("SELECT COALESCE(MAX(version), 0) AS v FROM polycrate_schema").fetchone()
    return int(version["v"]) if version is not None else 0


def migrate(dsn: str) -> tuple[int, int]:
    """Apply every missing migration in order, each in its own transaction; (version before, version now)."""
    db = connect(dsn)
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS polycrate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        before = schema_version(db) or 0
        if before > SCHEMA_VERSION:
            raise BackendError(f"the backend {safe_dsn(dsn)} was set up by a newer polycrate (schema version {before};"
                               f" this polycrate knows versions up to {SCHEMA_VERSION}): upgrade polycrate")
        while True:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                version = schema_version(db) or 0
                if version >= SCHEMA_VERSION:
                    break
                name, step = MIGRATIONS[version]
                step(db)
                db.execute("INSERT INTO polycrate_schema (version, name) VALUES (%s, %s)", (version + 1, name))
        return before, SCHEMA_VERSION
    finally:
        db.close()


def _check_schema(db: Connection, dsn: str) -> None:
    version = schema_version(db)
    if version is None or version == 0:
        raise BackendError(f"the backend {safe_dsn(dsn)} has no polycrate schema yet: run `polycrate backend init`")
    if version < SCHEMA_VERSION:
        raise BackendError(f"the backend {safe_dsn(dsn)} has schema version {version}, this polycrate needs "
                           f"{SCHEMA_VERSION}: run `polycrate backend init` to migrate it")
    if version > SCHEMA_VERSION:
        raise BackendError(f"the backend {safe_dsn(dsn)} was set up by a newer polycrate (schema version {version}; "
                           f"this polycrate knows versions up to {SCHEMA_VERSION}): upgrade polycrate")


# --- the store ---------------------------------------------------------------------------------------

Params = tuple[Any, ...] | list[Any]
_UPDATABLE_STEP = frozenset(STEP_COLUMNS) - {"position"}
_UPDATABLE_RUN = frozenset(("failed_step", "failed_task", "failed_host", "message", "ended", "status", "exit_code"))


class PostgresRunStore:
    """``RunStore`` on PostgreSQL, for the workspace named ``workspace``. ``root`` (the workspace's folder on
    this host, when there is one) lets ``reconcile`` read this host's run locks."""

    def __init__(self, dsn: str, *, workspace: str, root: Path | None = None):
        self.dsn = dsn
        self.workspace = workspace
        self.root = root
        self.recovered: list[str] = []
        self.db = connect(dsn)
        self._lock = threading.Lock()  # a log's flusher thread shares the connection
        try:
            _check_schema(self.db, dsn)
        except BaseException:
            self.db.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresRunStore({safe_dsn(self.dsn)!r}, workspace={self.workspace!r})"

    def close(self) -> None:
        self.db.close()

    def _execute(self, sql: str, params: Params = ()) -> psycopg.Cursor[dict[str, Any]]:
        with self._lock:
            return self.db.execute(sql, params)

    def _all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.execute(sql, params).fetchall())

    def _one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        with self._lock:
            row: dict[str, Any] | None = self.db.execute(sql, params).fetchone()
            return row

    # --- writing ---------------------------------------------------------------------------

    def start_run(self, *, kind: str, name: str, workflow: str | None = None, block: str | None = None,
                  action: str | None = None, only_step: str | None = None, lock_key: str | None = None,
                  check: bool = False, diff: bool = False, resumed_from: str | None = None,
                  ansible_options: dict[str, Any] | None = None, run_id: str | None = None,
                  user: str | None = None, runtime: str | None = None, image: str | None = None,
                  image_digest: str | None = None) -> str:
        started = time.time()
        run_id, user = claim_identity(started, run_id, user)
        self._execute(
            'INSERT INTO runs (workspace, id, kind, name, workflow, block, action, only_step, "user", host, pid,'
            " lock_key, started, status, check_mode, diff_mode, resumed_from, ansible_options, runtime, image,"
            " image_digest) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (self.workspace, run_id, str(kind), name, workflow, block, action, only_step, user, socket.gethostname(),
             os.getpid(), lock_key, started, str(RunState.RUNNING), int(check), int(diff), resumed_from,
             json.dumps(ansible_options or {}), runtime, image, image_digest),
        )
        return run_id

    def record_never_started(self, run_id: str, *, workflow: str, only_step: str | None, user: str, status: str,
                             message: str) -> None:
        """The record of a launched workflow run that no process took (stopped or refused while queued): ended
        now, with ``status`` and why, no steps, no host or pid; ``never_started`` says it never started, and its
        stored ``started`` is its end, its place in the history (history.records.RunRecord)."""
        now = time.time()
        self._execute(
            'INSERT INTO runs (workspace, id, kind, name, workflow, only_step, "user", started, ended, status,'
            " exit_code, message, never_started) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,1)",
            (self.workspace, run_id, str(RunKind.WORKFLOW), workflow, workflow, only_step, user, now, now,
             str(status), exit_code_of(RunState(status)), message),
        )

    def add_steps(self, run_id: str, steps: list[dict[str, Any]]) -> None:
        with self._lock, self.db.transaction():
            for s in steps:
                self.db.execute(
                    "INSERT INTO steps (workspace, run_id, position, name, block, action, phase, status, note)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (self.workspace, run_id, s["position"], s["name"], s["block"], s["action"],
                     str(s.get("phase", Phase.MAIN)), str(s["status"]), s.get("note")),
                )

    def step_log(self, run_id: str, position: int, name: str) -> ChunkLog:
        log = f"{STATE_DIR}/{LOGS_DIR}/{run_id}/{position:02d}-{name}.log"  # the name the SQLite store gives it
        self._execute("UPDATE steps SET log = %s WHERE workspace = %s AND run_id = %s AND position = %s",
                      (log, self.workspace, run_id, position))
        row = self._one("SELECT COALESCE(MAX(seq), 0) AS seq FROM log_chunks WHERE workspace = %s AND run_id = %s"
                        " AND position = %s", (self.workspace, run_id, position))
        return ChunkLog(self, run_id, position, int(row["seq"]) if row else 0)

    def _add_chunk(self, run_id: str, position: int, seq: int, data: bytes) -> None:
        self._execute("INSERT INTO log_chunks (workspace, run_id, position, seq, data) VALUES (%s,%s,%s,%s,%s)",
                      (self.workspace, run_id, position, seq, data))

    def update_step(self, run_id: str, position: int, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - _UPDATABLE_STEP
        if unknown:
            raise ValueError(f"not a step column: {', '.join(sorted(unknown))}")
        cols = ", ".join(f"{k} = %s" for k in fields)
        values = [str(v) if k in ("status", "phase") and v is not None else v for k, v in fields.items()]
        self._execute(f"UPDATE steps SET {cols} WHERE workspace = %s AND run_id = %s AND position = %s",
                      (*values, self.workspace, run_id, position))

    def set_hosts(self, run_id: str, position: int, hosts: dict[str, dict[str, int]]) -> None:
        with self._lock, self.db.transaction():
            self.db.execute("DELETE FROM step_hosts WHERE workspace = %s AND run_id = %s AND position = %s",
                            (self.workspace, run_id, position))
            for host, counts in hosts.items():
                self.db.execute(
                    "INSERT INTO step_hosts (workspace, run_id, position, host, ok, changed, failed, unreachable,"
                    " skipped, rescued, ignored) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (self.workspace, run_id, position, host, *(int(counts.get(k, 0)) for k in HOST_COUNTS)),
                )

    def add_notice(self, run_id: str, text: str) -> None:
        # appended in the database: two writers never lose each other's notices
        self._execute("UPDATE runs SET notices = notices || %s::jsonb WHERE workspace = %s AND id = %s",
                      (json.dumps([{"time": time.time(), "text": text}]), self.workspace, run_id))

    def finish_run(self, run_id: str, *, status: str, exit_code: int, **fields: Any) -> None:
        # The stored status is polycrate.success's, from the recorded steps, whatever the caller says
        # (as the SQLite store): a run with a failed or interrupted step is never stored as succeeded.
        steps = self._all("SELECT status, phase FROM steps WHERE workspace = %s AND run_id = %s",
                          (self.workspace, run_id))
        if steps:
            stated = status
            status = run_state(((s["status"], s["phase"]) for s in steps), status == RunState.INTERRUPTED)
            exit_code = exit_code if status == stated else exit_code_of(status)
        fields.update(status=str(status), exit_code=exit_code, ended=time.time())
        unknown = set(fields) - _UPDATABLE_RUN
        if unknown:
            raise ValueError(f"not a run column: {', '.join(sorted(unknown))}")
        cols = ", ".join(f"{k} = %s" for k in fields)
        self._execute(f"UPDATE runs SET {cols} WHERE workspace = %s AND id = %s",
                      (*fields.values(), self.workspace, run_id))

    def reconcile(self) -> int:
        """Runs of this host whose process is gone read 'interrupted' (other hosts' runs are theirs to judge, and
        a worker's runs its fence's: their lock file is in the worker's checkout, not in this store's folder)."""
        marked = 0
        rows = self._all('SELECT id, host, pid, lock_key, started, notices FROM runs r WHERE workspace = %s AND status = %s'
                         " AND host = %s AND NOT EXISTS (SELECT 1 FROM team_runs t WHERE t.workspace = r.workspace"
                         " AND t.id = r.id)", (self.workspace, str(RunState.RUNNING), socket.gethostname()))
        for row in rows:
            if run_process_alive(self.root, row["id"], row["host"], row["pid"], row["lock_key"]):
                continue
            steps = self._all("SELECT * FROM steps WHERE workspace = %s AND run_id = %s", (self.workspace, row["id"]))
            end = found_gone(row["started"], steps, row["notices"] or [])  # the logs are rows: no time of their own
            with self._lock, self.db.transaction():
                for step in steps:
                    self.db.execute(f"UPDATE steps SET {', '.join(f'{k} = %s' for k in FOUND_GONE_STEP)}"
                                    " WHERE workspace = %s AND run_id = %s AND position = %s",
                                    (*(step[k] for k in FOUND_GONE_STEP), self.workspace, row["id"], step["position"]))
                self.db.execute(
                    "UPDATE runs SET status = %s, ended = COALESCE(ended, %s), exit_code = COALESCE(exit_code, 137),"
                    " message = COALESCE(message, %s), failed_step = COALESCE(failed_step, %s)"
                    " WHERE workspace = %s AND id = %s AND status = %s",
                    (str(RunState.INTERRUPTED), end.ended, end.message, end.step, self.workspace, row["id"],
                     str(RunState.RUNNING)))
            marked += 1
        return marked

    def prune(self, keep_runs: int | None = None, keep_days: float | None = None) -> list[str]:
        doomed: set[str] = set()
        if keep_runs is not None:
            rows = self._all("SELECT id FROM runs WHERE workspace = %s AND status != %s ORDER BY started DESC, id DESC"
                             " OFFSET %s", (self.workspace, str(RunState.RUNNING), keep_runs))
            doomed.update(r["id"] for r in rows)
        if keep_days is not None:
            rows = self._all("SELECT id FROM runs WHERE workspace = %s AND status != %s AND started < %s",
                             (self.workspace, str(RunState.RUNNING), time.time() - keep_days * 86400))
            doomed.update(r["id"] for r in rows)
        if doomed:
            self._execute("DELETE FROM runs WHERE workspace = %s AND id = ANY(%s)", (self.workspace, sorted(doomed)))
        return sorted(doomed)

    # --- reading ---------------------------------------------------------------------------

    def list_runs(self, *, name: str | None = None, kind: str | None = None, status: str | None = None,
                  since: float | None = None, until: float | None = None, limit: int | None = 20) -> list[RunRecord]:
        where: list[str] = ["workspace = %s"]
        args: list[Any] = [self.workspace]
        for column, value in (("name", name), ("kind", kind), ("status", status)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(str(value))
        if since is not None:
            where.append("started >= %s")
            args.append(since)
        if until is not None:
            where.append("started < %s")
            args.append(until)
        sql = (
            "SELECT r.*, (SELECT s.name FROM steps s WHERE s.workspace = r.workspace AND s.run_id = r.id"
            f" AND s.status = '{StepState.RUNNING.value}' ORDER BY s.position DESC LIMIT 1) AS current_step_name"
            f" FROM runs r WHERE {' AND '.join(where)} ORDER BY started DESC, id DESC"
        )
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        return [_record(r, current_step=r["current_step_name"] if r["status"] == RunState.RUNNING else None)
                for r in self._all(sql, args)]

    def count_runs(self) -> int:
        counted = self._one("SELECT COUNT(*) AS n FROM runs WHERE workspace = %s", (self.workspace,))
        return int(counted["n"]) if counted else 0

    def resolve_id(self, ref: str) -> str:
        match = re.fullmatch(r"latest(?:~(\d+))?", ref)
        if match:
            back = int(match.group(1) or 0)
            row = self._one("SELECT id FROM runs WHERE workspace = %s ORDER BY started DESC, id DESC LIMIT 1 OFFSET %s",
                            (self.workspace, back))
            if row is None:
                total = self.count_runs()
                if total == 0:
                    raise _not_found("no runs recorded yet", self)
                raise _not_found(f"no run '{ref}': only {total} run(s) recorded (latest~{total - 1} is the oldest)", self)
            return str(row["id"])
        like = re.sub(r"([%_\\])", r"\\\1", ref) + "%"
        rows = self._all(
            "SELECT id FROM runs WHERE workspace = %s AND (id = %s OR id LIKE %s ESCAPE '\\'"
            " OR substr(id, 17) LIKE %s ESCAPE '\\') ORDER BY id LIMIT 4",
            (self.workspace, ref, like, like))
        return pick_id(ref, [r["id"] for r in rows], self._where())

    def _where(self) -> str:
        return f"{safe_dsn(self.dsn)} (workspace {self.workspace})"

    def find_run(self, run_id: str) -> RunRecord | None:
        row = self._one("SELECT * FROM runs WHERE workspace = %s AND id = %s", (self.workspace, run_id))
        return _record(row) if row is not None else None

    def get_run(self, ref: str) -> RunRecord:
        run_id = self.resolve_id(ref)
        with self._lock, self.db.transaction():  # one snapshot: the run, its steps and counts agree
            row = self.db.execute("SELECT * FROM runs WHERE workspace = %s AND id = %s",
                                  (self.workspace, run_id)).fetchone()
            step_rows = self.db.execute("SELECT * FROM steps WHERE workspace = %s AND run_id = %s ORDER BY position",
                                        (self.workspace, run_id)).fetchall()
            host_rows = self.db.execute("SELECT * FROM step_hosts WHERE workspace = %s AND run_id = %s ORDER BY host",
                                        (self.workspace, run_id)).fetchall()
            slot = self.db.execute("SELECT late_by, reason FROM team_schedule_slots WHERE workspace = %s AND run_id = %s"
                                   " AND outcome = 'launched' AND reason IS NOT NULL", (self.workspace, run_id)).fetchone()
            launched = self.db.execute("SELECT git_commit FROM team_runs WHERE workspace = %s AND id = %s",
                                       (self.workspace, run_id)).fetchone()
        if row is None:  # pruned between resolving and reading
            raise _not_found(f"no run '{ref}' (see: polycrate runs list)", self)
        hosts: dict[int, dict[str, HostCounts]] = {}
        for h in host_rows:
            hosts.setdefault(h["position"], {})[h["host"]] = HostCounts.from_mapping(h)
        steps = tuple(StepRecord.from_mapping(s, hosts.get(s["position"], {})) for s in step_rows)
        from dataclasses import replace

        record = _record(row, steps=steps)
        if slot is not None:  # launched late by a schedule (team/scheduler.py)
            record = replace(record, late_by=float(slot["late_by"]), late_reason=slot["reason"])
        if launched is not None:  # launched through the queue (team/launch.py): the commit the worker ran
            record = replace(record, git_commit=launched["git_commit"])
        return record

    def read_log(self, run_id: str, position: int, cursor: int = 0) -> LogPiece:
        rows = self._all("SELECT seq, data FROM log_chunks WHERE workspace = %s AND run_id = %s AND position = %s"
                         " AND seq >= %s ORDER BY seq", (self.workspace, run_id, position, max(cursor, 1)))
        if not rows:
            return LogPiece(b"", cursor)
        return LogPiece(b"".join(bytes(r["data"]) for r in rows), rows[-1]["seq"] + 1)

    def step_logs(self, ref: str, step: str | None = None) -> tuple[str, list[tuple[StepRecord, str]]]:
        run = self.get_run(ref)
        chosen = choose_steps(run, step, self._where())
        # plain text: the stored colour codes are for the web page only (read_log keeps them)
        return run.id, [(s, ansi.strip(self.read_log(run.id, s.position).data.decode("utf-8", "replace"))
                         if s.log else "") for s in chosen]

    def latest_full_run(self, workflow: str) -> RunRecord | None:
        row = self._one(f"SELECT id FROM runs WHERE workspace = %s AND {FULL_RUN_SQL} AND name = %s AND status != %s"
                        " ORDER BY started DESC, id DESC LIMIT 1", (self.workspace, workflow, str(RunState.RUNNING)))
        return self.get_run(row["id"]) if row else None

    def workflow_status(self, workflow: str) -> WorkflowStatus:
        last = self._one(f"SELECT * FROM runs WHERE workspace = %s AND {FULL_RUN_SQL} AND name = %s AND status != %s"
                         " ORDER BY started DESC LIMIT 1", (self.workspace, workflow, str(RunState.RUNNING)))
        success = self._one(f"SELECT MAX(ended) AS t FROM runs WHERE workspace = %s AND {WORKFLOW_SUCCESS_SQL}"
                            " AND name = %s", (self.workspace, workflow))
        running = self._one("SELECT * FROM runs WHERE workspace = %s AND kind = %s AND name = %s AND status = %s"
                            " ORDER BY started DESC LIMIT 1",
                            (self.workspace, str(RunKind.WORKFLOW), workflow, str(RunState.RUNNING)))
        return WorkflowStatus(_record(last) if last else None, success["t"] if success else None,
                              _record(running) if running else None)

    def workflow_metrics(self) -> list[dict[str, Any]]:
        names = [r["name"] for r in self._all(f"SELECT DISTINCT name FROM runs WHERE workspace = %s AND {FULL_RUN_SQL}"
                                              " ORDER BY name", (self.workspace,))]
        return [m for m in (metrics_row(name, self.workflow_status(name)) for name in names) if m is not None]

    # --- moving runs between stores ---------------------------------------------------------

    def export_runs(self) -> Iterator[tuple[RunRecord, dict[int, bytes]]]:
        ids = [r["id"] for r in self._all("SELECT id FROM runs WHERE workspace = %s ORDER BY started, id",
                                          (self.workspace,))]
        for run_id in ids:
            run = self.get_run(run_id)
            yield run, {s.position: self.read_log(run_id, s.position).data for s in run.steps if s.log}

    def import_run(self, run: RunRecord, logs: dict[int, bytes]) -> bool:
        values = run_columns(run)
        values["notices"] = json.dumps(values["notices"])
        values["ansible_options"] = json.dumps(values["ansible_options"])
        columns = ", ".join('"user"' if k == "user" else k for k in values)
        with self._lock, self.db.transaction():
            inserted = self.db.execute(
                f"INSERT INTO runs (workspace, {columns}) VALUES (%s, {', '.join(['%s'] * len(values))})"
                " ON CONFLICT (workspace, id) DO NOTHING RETURNING id", (self.workspace, *values.values())).fetchone()
            if inserted is None:  # imported before: the run is there as it was, nothing is added twice
                return False
            for s in run.steps:
                step = step_columns(s)
                if s.position in logs and not step["log"]:
                    step["log"] = f"{STATE_DIR}/{LOGS_DIR}/{run.id}/{s.position:02d}-{s.name}.log"
                self.db.execute(
                    f"INSERT INTO steps (workspace, run_id, {', '.join(step)})"
                    f" VALUES (%s, %s, {', '.join(['%s'] * len(step))})", (self.workspace, run.id, *step.values()))
                for host, counts in s.hosts.items():
                    self.db.execute(
                        "INSERT INTO step_hosts (workspace, run_id, position, host, ok, changed, failed, unreachable,"
                        " skipped, rescued, ignored) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        (self.workspace, run.id, s.position, host, *(getattr(counts, k) for k in HOST_COUNTS)))
                data = logs.get(s.position, b"")
                for seq, start in enumerate(range(0, len(data), CHUNK_BYTES), 1):
                    self.db.execute(
                        "INSERT INTO log_chunks (workspace, run_id, position, seq, data) VALUES (%s,%s,%s,%s,%s)",
                        (self.workspace, run.id, s.position, seq, data[start:start + CHUNK_BYTES]))
        return True


def _not_found(message: str, store: PostgresRunStore) -> PolycrateError:
    from polycrate.errors import NotFoundError

    return NotFoundError(message, store._where())


def _record(row: dict[str, Any], *, steps: tuple[StepRecord, ...] = (), current_step: str | None = None) -> RunRecord:
    return RunRecord.from_columns(row, steps=steps, current_step=current_step)  # JSONB arrives decoded


class ChunkLog:
    """A step's log written as rows of chunks: lines are buffered and flushed within ``FLUSH_SECONDS``
    (by the next write, or by a timer while the step is quiet), and at close."""

    def __init__(self, store: PostgresRunStore, run_id: str, position: int, last_seq: int):
        self._store = store
        self._run_id = run_id
        self._position = position
        self._seq = last_seq
        self._buffer: list[bytes] = []
        self._size = 0
        self._first = 0.0  # when the oldest unflushed line came
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def write(self, line: str) -> None:
        with self._lock:
            if not self._buffer:
                self._first = time.monotonic()
            data = (line + "\n").encode("utf-8", "replace")
            self._buffer.append(data)
            self._size += len(data)
            if self._size >= CHUNK_BYTES or time.monotonic() - self._first >= FLUSH_SECONDS:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def touch(self) -> None:
        """No sign of life here: a chunk keeps no time of its own (the reconcile reads the record's times)."""

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            try:
                self._flush()
            except Exception:  # the next write or close flushes again, and reports
                pass

    def _flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._store._add_chunk(self._run_id, self._position, self._seq + 1, data)
        self._seq += 1
        self._buffer.clear()
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush()
