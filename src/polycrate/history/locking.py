"""One run of a workflow at a time: an operating-system lock per workflow.

The lock is ``fcntl.flock`` on ``.polycrate/locks/<kind>-<name>.lock``. The kernel
drops it when the holding process ends, however it ends (SIGKILL included), so a
lock file that merely exists never blocks anyone. The holder writes who it is
(pid, host, start, run id) into the file, so a refused run can name it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path
from collections.abc import Callable

from polycrate.errors import CLI, WEB, LockedError
from polycrate.config.record import Record, record

LOCKS_DIR = Path(".polycrate") / "locks"


def run_lock_key(name: str, action: str | None = None) -> str:
    """The lock a run holds: its workflow's (``name``), or with ``action`` one action of block ``name``."""
    return f"action-{name}-{action}" if action else f"workflow-{name}"


def lock_path(root: Path, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    return root / LOCKS_DIR / f"{safe}.lock"


@record(frozen=True, eq=False, repr=False)
class Holder(Record):
    pid: int | None
    host: str
    started: float | None
    run_id: str | None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "unknown time"
        run = f", run {self.run_id}" if self.run_id else ""
        return f"pid {self.pid} on {self.host or 'unknown host'} since {when}{run}"


def stop_note_path(path: Path) -> Path:
    """Beside a lock: who asked its holder's run to stop (written before the stop's SIGTERM)."""
    return path.with_name(path.name + ".stop")


def request_stop(path: Path, run_id: str, pid: int, by: str) -> None:
    """Say who stops the run ``run_id`` of process ``pid`` that holds the lock at ``path``: the run reads it
    when the SIGTERM that follows arrives, so its record names them from its first write."""
    from polycrate.atomicfile import write_atomic

    write_atomic(stop_note_path(path), json.dumps({"run_id": run_id, "pid": pid, "by": by, "at": time.time()}))


def read_stop_request(path: Path, run_id: str, pid: int) -> str | None:
    """Who asked the run ``run_id`` of process ``pid`` to stop (a note for another run or process: None)."""
    try:
        data = json.loads(stop_note_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("run_id") != run_id or data.get("pid") != pid:
        return None
    by = data.get("by")
    return by if isinstance(by, str) and by else None


def read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None
    if not data:
        return None
    return Holder(data.get("pid"), data.get("host", ""), data.get("started"), data.get("run_id"))


class RunLock:
    """An exclusive lock for one workflow (or action); a context manager."""

    def __init__(self, root: Path, key: str, what: str):
        self.path = lock_path(root, key)
        self.what = what  # "workflow 'nightly'", for messages
        self._fd: int | None = None
        self.started = time.time()

    @property
    def fd(self) -> int | None:
        """The locked descriptor; a child that inherits it keeps the lock while it lives."""
        return self._fd

    def _try(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise

    def acquire(self, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        announced = False
        while not self._try():
            holder = self._holder()
            if not wait:
                os.close(self._fd)
                self._fd = None
                raise LockedError(
                    f"{self.what} is already running ({holder.describe() if holder else 'holder unknown'})",
                    self.path, hints={CLI: "use --wait to wait for it",
                                      WEB: "launch it again when that run has ended (or stop it on its page)"},
                )
            if on_wait and not announced:
                on_wait(f"waiting for {self.what}: held by {holder.describe() if holder else 'another run'}")
                announced = True
            time.sleep(0.2)  # polling keeps Ctrl-C/SIGTERM prompt while waiting
        self.started = time.time()
        self.write_holder(None)

    def _holder(self) -> Holder | None:
        # the holder writes its record right after locking: give it a moment
        for _ in range(10):
            holder = read_holder(self.path)
            if holder is not None:
                return holder
            time.sleep(0.05)
        return None

    def write_holder(self, run_id: str | None) -> None:
        assert self._fd is not None
        data = {"pid": os.getpid(), "host": socket.gethostname(), "started": self.started, "run_id": run_id}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(data).encode(), 0)

    def stop_request(self, run_id: str) -> str | None:
        """Who asked this process's run ``run_id`` to stop (`polycrate runs stop`, the server's stop), if anyone."""
        return read_stop_request(self.path, run_id, os.getpid())

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            try:
                stop_note_path(self.path).unlink(missing_ok=True)  # the stopped run is over: its note with it
            except OSError:
                pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_held(path: Path) -> bool:
    """Whether some process holds the lock now. Probes by locking briefly when free."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
