"""Which state a server gets: the backend's PostgreSQL when this host has one, else SQLite in the state folder.

The backend setting is read by ``cli/`` only and arrives here as an argument; without one nothing of
PostgreSQL is imported (as ``history/backends.py`` chooses the run store).
"""
from __future__ import annotations

from pathlib import Path

from polycrate.server.state import ServerState, StateStore


def open_state(folder: Path | None = None, backend: str | None = None) -> StateStore:
    """The server's state: in the backend's PostgreSQL when there is one (every server on it shares its users,
    sessions and audit), else in SQLite in ``folder``."""
    if backend:
        from polycrate.server.state_postgres import PostgresServerState

        return PostgresServerState(backend)
    return ServerState(folder)
