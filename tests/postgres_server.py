"""A real PostgreSQL for the team-mode tests: Debian's server binaries, a throw-away cluster (initdb), started
with pg_ctl on a free loopback port and stopped by its postmaster's PID. Nothing else on the machine is touched.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def pg_bin() -> Path | None:
    """The newest installed Debian PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    data: Path
    port: int
    bin: Path
    user: str  # the OS user the server runs as (PostgreSQL refuses root)
    pid: int | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://polycrate@127.0.0.1:{self.port}/polycrate"

    def _as_user(self, argv: list[str]) -> list[str]:
        return argv if os.geteuid() != 0 else ["runuser", "-u", self.user, "--", *argv]

    def start(self) -> None:
        log = self.data.parent / "postgres.log"
        subprocess.run(self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60",
                                      "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start"]),
                       check=True, capture_output=True)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """SIGINT to our postmaster (PostgreSQL's fast shutdown), waiting until it is gone."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None


def start_postgres(base: Path) -> PostgresServer:
    """A new cluster under ``base`` (a new folder the server's user can reach: not below pytest's 0700 folders
    when we are root) with a database ``polycrate`` owned by the role ``polycrate`` (trust on loopback)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError("Debian's postgresql is not installed (make setup installs it)")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, user)
        os.chmod(base.parent, 0o755)
    subprocess.run(["runuser", "-u", user, "--"] * (os.geteuid() == 0) + [
        str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
        "--locale=C.UTF-8"], check=True, capture_output=True)
    server = PostgresServer(data, free_port(), bin_dir, user)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
    server.start()
    psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(psql + ["-c", "CREATE ROLE polycrate LOGIN", "-c", "CREATE DATABASE polycrate OWNER polycrate"],
                   check=True, capture_output=True)
    return server


def running_postgres() -> Iterator[PostgresServer]:
    """For a fixture: a started server with polycrate's schema (``backend init``'s migrations); stopped and
    removed after."""
    import tempfile

    from polycrate.history.postgres import migrate

    base = Path(tempfile.mkdtemp(prefix="polycrate-pg-"))
    try:
        server = start_postgres(base / "cluster")
        try:
            migrate(server.dsn)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
