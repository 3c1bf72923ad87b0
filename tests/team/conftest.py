"""Team mode: a real PostgreSQL for the whole session (Debian's server, started by tests/postgres_server.py)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


@pytest.fixture
def fresh_database(postgres) -> str:
    """A database of its own (no schema yet) on the session's server: its DSN."""
    import subprocess

    name = f"t_{uuid.uuid4().hex[:10]}"
    subprocess.run([str(postgres.bin / "psql"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name} OWNER polycrate"],
                   check=True, capture_output=True)
    return f"postgresql://polycrate@127.0.0.1:{postgres.port}/{name}"


@pytest.fixture
def team_dsn(fresh_database) -> str:
    """A database of its own with polycrate's schema (``backend init``): tests share the server, not a history."""
    from polycrate.history.postgres import migrate

    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def team_env(team_dsn, tmp_path) -> dict[str, str]:
    """The environment of a polycrate on a team host: its backend, no host configuration file."""
    config = tmp_path / "host-config.yml"
    config.write_text("# this host's configuration: the backend comes from POLYCRATE_BACKEND\n")
    return {"POLYCRATE_BACKEND": team_dsn, "POLYCRATE_CONFIG": str(config)}


def no_backend(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "no-backend.yml"
    config.write_text("# no backend\n")
    return {"POLYCRATE_BACKEND": "", "POLYCRATE_CONFIG": str(config)}
