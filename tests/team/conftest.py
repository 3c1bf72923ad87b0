"""Team mode: a real PostgreSQL for the whole session (Debian's server, started by tests/postgres_server.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write
from tests.browser.conftest import browser  # noqa: F401  (its Chromium, for the team server's pages)
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


def committed(root: Path) -> Path:
    """The workspace at ``root`` as a git repository with everything committed (a worker runs a commit)."""
    write(root / ".gitignore", ".polycrate/\nartifacts/\ngate\ngate2\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    return root


@pytest.fixture
def serve_worker(team_env, tmp_path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `polycrate worker` (named w-serve) on the queue `default` of the test's backend: its name and process."""
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "worker", "--name", "w-serve", "--queue", "default",
                             "--lost-after", "10", "--heartbeat", "0.5"], cwd=tmp_path, env=os.environ | team_env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        yield "w-serve", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
