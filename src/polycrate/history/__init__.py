"""The run store: every run, its steps, per-host task counts and its log.

``store`` (RunStore: SQLite at ``.polycrate/runs.db``, writing and reading runs), ``migrations``
(the schema as an ordered list of migrations, its version in ``PRAGMA user_version``), ``logs``
(the step log files under ``.polycrate/runs/<run id>/``).
"""
from __future__ import annotations

from polycrate.history.logs import StepLog
from polycrate.history.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    store_version,
)
from polycrate.runtime.events import HOST_COUNTS
from polycrate.history.store import (
    DB_NAME,
    LOGS_DIR,
    STATE_DIR,
    RunStore,
    current_user,
    new_run_id,
    open_store,
    run_dict,
    state_dir,
)

__all__ = [
    "DB_NAME", "HOST_COUNTS", "LOGS_DIR", "MIGRATIONS", "SCHEMA_VERSION", "STATE_DIR", "RunStore", "StepLog",
    "current_user", "migrate", "new_run_id", "open_store", "run_dict", "state_dir", "store_version",
]  # fmt: skip
