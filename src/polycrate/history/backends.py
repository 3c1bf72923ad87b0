"""Which run store a caller gets: the workspace's SQLite store, or PostgreSQL when the user set a backend.

The backend setting (``POLYCRATE_BACKEND`` or ``/etc/polycrate/config.yml``) is read by ``cli/`` only and
reaches here as an argument; without one nothing of PostgreSQL is imported.
"""
from __future__ import annotations

from pathlib import Path

from polycrate.history.protocol import RunStore
from polycrate.history.store import SQLiteRunStore


def open_store(root: Path, *, backend: str | None = None, workspace: str | None = None,
               reconcile: bool = True) -> RunStore:
    """The run store of the workspace at ``root`` (named ``workspace`` in a shared backend); opening
    reconciles: runs whose process is known to be gone read 'interrupted'."""
    store: RunStore
    if backend:
        from polycrate.history.postgres import PostgresRunStore

        store = PostgresRunStore(backend, workspace=workspace or root.name, root=root)
    else:
        store = SQLiteRunStore(root)
    if reconcile:
        store.reconcile()
    return store
