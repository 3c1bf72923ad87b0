"""The run store: every run, its steps, per-host task counts and its log.

``protocol`` (``RunStore``: what every store does), ``records`` (the typed records a store returns:
``RunRecord``, ``StepRecord``, ``HostCounts``, ``Notice``, ``WorkflowStatus``, ``LogPiece``), ``store``
(``SQLiteRunStore``: SQLite at ``.polycrate/runs.db``, the default), ``backends`` (``open_store``: which
store a caller gets), ``migrations`` (the SQLite schema as an ordered list of migrations, its version in
``PRAGMA user_version``), ``logs`` (the step log files under ``.polycrate/runs/<run id>/``).
"""
from __future__ import annotations

from polycrate.history.backends import open_store
from polycrate.history.logs import StepLog
from polycrate.history.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    store_version,
)
from polycrate.history.protocol import LogWriter, RunStore
from polycrate.history.records import (
    HostCounts,
    LogPiece,
    Notice,
    RunRecord,
    StepRecord,
    WorkflowStatus,
)
from polycrate.runtime.events import HOST_COUNTS
from polycrate.history.store import (
    DB_NAME,
    LOGS_DIR,
    STATE_DIR,
    SQLiteRunStore,
    current_user,
    new_run_id,
    state_dir,
)

__all__ = [
    "DB_NAME", "HOST_COUNTS", "LOGS_DIR", "MIGRATIONS", "SCHEMA_VERSION", "STATE_DIR",
    "HostCounts", "LogPiece", "LogWriter", "Notice", "RunRecord", "RunStore", "SQLiteRunStore", "StepLog",
    "StepRecord", "WorkflowStatus", "current_user", "migrate", "new_run_id", "open_store", "state_dir",
    "store_version",
]  # fmt: skip
