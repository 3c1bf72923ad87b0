"""The workspace, its workers and the backend of one team test (tests/team/test_workers.py, test_schedules.py):
real `polycrate worker` processes, each with its log file, stopped by SIGTERM and, failing that, by its group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers import run_cli


class Team:
    def __init__(self, ws: Path, marks: Path, env: dict[str, str], tmp: Path):
        self.ws, self.marks, self.env, self.tmp = ws, marks, env, tmp
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, name: str, *extra: str, home: Path | None = None, prefix: Sequence[str] = (),
                     env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``home``: the worker's host of its own there (its folder, HOME, config and cache), nothing shared;
        ``prefix``: what the worker runs under (``ip netns exec NS``); ``env``: its environment instead of the
        team's (another DSN)."""
        out = open(self.tmp / f"worker-{name}.log", "wb")
        own = {} if home is None else self.host_env(home)
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "polycrate", "worker", "--name", name, "--lost-after",
                                 "4", "--heartbeat", "0.5", *extra], cwd=home or self.tmp,
                                env=os.environ | (self.env if env is None else env) | own,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.workers[name] = proc
        return proc

    @staticmethod
    def host_env(home: Path) -> dict[str, str]:
        """The environment of a process on another host, whose files are all under ``home``."""
        home.mkdir(parents=True, exist_ok=True)
        return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
                "XDG_STATE_HOME": str(home / "state")}

    def worker_log(self, name: str) -> str:
        return (self.tmp / f"worker-{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        """SIGTERM (the worker lets its runs end first), then its whole group if it does not end in time."""
        proc = self.workers[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for proc in self.workers.values():  # all asked at once: they end side by side
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in self.workers:
            self.stop(name)

    def cli(self, *argv: str):
        return run_cli(*argv, cwd=self.ws, env=self.env)

    def show(self, run_id: str) -> dict[str, Any]:
        shown = self.cli("runs", "show", run_id, "-o", "json")
        assert shown.returncode == 0, shown.output
        data: dict[str, Any] = json.loads(shown.stdout)
        return data

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        from polycrate.history.postgres import connect

        db = connect(self.env["POLYCRATE_BACKEND"])
        try:
            return list(db.execute(query, args).fetchall())
        finally:
            db.close()
