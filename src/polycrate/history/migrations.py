"""The run store's schema as an ordered list of migrations, its version in ``PRAGMA user_version``.

A store records the number of the last migration applied to it (0: a store written before versions
existed, by the first schema, possibly with ``ansible_options`` already added). Opening a store applies
every later migration in order, each in its own transaction with its version number, so a store of
any earlier polycrate opens and keeps every run, step and log. A store from a newer polycrate
(a version beyond the last migration here) is refused with one line, untouched.

To change the schema: append a migration (a name saying what it adds, and a function of the
connection); never edit or reorder one that has shipped. Each must be safe on a version-0 store
that already has its change (``CREATE ... IF NOT EXISTS``, check a column before adding it).
tests/unit/test_history_migrations.py opens the committed stores under tests/data/runstore-*/ with
the current code and checks that nothing was lost and that the result has the schema of a new store.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from polycrate.errors import PolycrateError

_V1_TABLES = (
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'workflow' | 'action'
    name TEXT NOT NULL,              -- workflow name, or 'block action'
    workflow TEXT,
    block TEXT,
    action TEXT,
    only_step TEXT,
    user TEXT,
    host TEXT,
    pid INTEGER,
    lock_key TEXT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    check_mode INTEGER NOT NULL DEFAULT 0,
    diff_mode INTEGER NOT NULL DEFAULT 0,
    resumed_from TEXT,
    failed_step TEXT,
    failed_task TEXT,
    failed_host TEXT,
    message TEXT,
    notices TEXT NOT NULL DEFAULT '[]'
)""",
    "CREATE INDEX IF NOT EXISTS runs_by_name ON runs (kind, name, started)",
    """CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    block TEXT,
    action TEXT,
    phase TEXT NOT NULL DEFAULT 'main',   -- 'main' | 'on_failure'
    status TEXT NOT NULL,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    duration REAL,
    failed_task TEXT,
    failed_host TEXT,
    message TEXT,
    note TEXT,
    log TEXT,
    PRIMARY KEY (run_id, position)
)""",
    """CREATE TABLE IF NOT EXISTS step_hosts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    host TEXT NOT NULL,
    ok INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    rescued INTEGER NOT NULL DEFAULT 0,
    ignored INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, position, host)
)""",
)


def _v1_tables(db: sqlite3.Connection) -> None:
    for statement in _V1_TABLES:
        db.execute(statement)


def _add_column(db: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if column not in columns:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _v2_ansible_options(db: sqlite3.Connection) -> None:
    # JSON: --limit, --tags, --skip-tags, --extra-vars, verbosity
    _add_column(db, "runs", "ansible_options", "TEXT")


# frozen here as shipped: a migration must not change when the code it migrates to does
_V3_STEP_STATES = {
    "not run": "not_run",
    "failed (allowed)": "failed_allowed",
    "skipped (check mode)": "skipped_check",
    "skipped (resumed)": "succeeded_before",
}


def _v3_step_state_words(db: sqlite3.Connection) -> None:
    for old, new in _V3_STEP_STATES.items():
        db.execute("UPDATE steps SET status = ? WHERE status = ?", (new, old))


def _v4_listing_indexes(db: sqlite3.Connection) -> None:
    # for `polycrate serve` over many runs: newest first, by status, a workflow's last success
    db.execute("CREATE INDEX IF NOT EXISTS runs_by_started ON runs (started)")
    db.execute("CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, started)")
    db.execute("CREATE INDEX IF NOT EXISTS runs_by_outcome ON runs (kind, name, status, ended)")


def _v5_run_runtime(db: sqlite3.Connection) -> None:
    # where a run's actions ran: 'local' or 'container', and the container's image and its ID
    for column in ("runtime", "image", "image_digest"):
        _add_column(db, "runs", column, "TEXT")


def _v6_never_started(db: sqlite3.Connection) -> None:
    # a launched run stopped or refused before any process took it (team mode's queue; kept alike here so
    # that a run moves between the stores unchanged): 1, and its `started` is its end, never a start
    _add_column(db, "runs", "never_started", "INTEGER NOT NULL DEFAULT 0")


Migration = tuple[str, Callable[[sqlite3.Connection], None]]

MIGRATIONS: tuple[Migration, ...] = (
    ("runs, steps, step_hosts (the first schema)", _v1_tables),
    ("runs.ansible_options (the Ansible pass-through options of a run)", _v2_ansible_options),
    ("steps.status: display wording ('not run', 'skipped (resumed)', ...) becomes states.py's values",
     _v3_step_state_words),
    ("indexes on runs for listing many runs (started; status, started; kind, name, status, ended)",
     _v4_listing_indexes),
    ("runs.runtime, runs.image, runs.image_digest (where a run's actions ran)", _v5_run_runtime),
    ("runs.never_started (a launched run stopped before any process took it)", _v6_never_started),
)
SCHEMA_VERSION = len(MIGRATIONS)


def store_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: Path | str, steps: Sequence[Migration] | None = None,
            what: str = "the run store") -> int:
    """Bring the SQLite database of ``db`` (autocommit mode) to the last of ``steps`` (default: the run
    store's MIGRATIONS; the server's ``server.db`` has its own); the version it had before.

    Each migration runs in a write transaction that first re-reads the version, so two processes
    opening an old store at once apply each migration once."""
    steps = MIGRATIONS if steps is None else steps
    latest = len(steps)
    before = store_version(db)
    if before > latest:
        raise PolycrateError(
            f"{what} was written by a newer polycrate (store version {before}; this polycrate knows "
            f"versions up to {latest}): upgrade polycrate to read it", path)
    while store_version(db) < latest:  # a current store is only read: no write lock
        db.execute("BEGIN IMMEDIATE")
        try:
            version = store_version(db)
            if version >= latest:
                db.execute("COMMIT")
                break
            _name, step = steps[version]
            step(db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return before
