"""A step's process: started supervised in its own process group, its output streamed line by
line, stopped (SIGINT, SIGTERM, SIGKILL) with its whole group."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable



# How long a child gets to end after SIGINT/SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0

class ActionTimedOut(Exception):
    """The action ran longer than its step's timeout; its process group was stopped."""

    def __init__(self, seconds: float):
        super().__init__(f"timed out after {seconds:g}s")
        self.seconds = seconds


class ZygoteUnavailable(Exception):
    """The run's zygote cannot serve this step: it starts as a plain process."""


SUPERVISOR = Path(__file__).with_name("supervise.py")


def supervised(argv: list[str]) -> list[str]:
    """``argv`` run under the step supervisor (runtime/supervise.py): isolated, no site-packages."""
    return [sys.executable, "-I", "-S", str(SUPERVISOR), *argv]


def _read_lines(pipe, lines: queue.SimpleQueue) -> None:
    try:
        for raw in pipe:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    finally:
        lines.put(None)


def die_with_parent() -> None:
    """In the child: get SIGTERM when polycrate dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG).

    Ansible ends its workers and their commands on SIGTERM, so a killed run leaves no play behind.
    """
    try:
        libc().prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except Exception:
        pass


_LIBC: list = []


def libc():
    """libc through ctypes, loaded on first use (not at import: the CLI's startup does not need it)."""
    if not _LIBC:
        try:
            import ctypes

            try:
                _LIBC.append(ctypes.CDLL("libc.so.6", use_errno=True))  # glibc; find_library runs ldconfig
            except OSError:
                import ctypes.util

                _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True))
        except Exception:
            _LIBC.append(None)
    return _LIBC[0]


def stream(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    output: Callable[[str], None],
    timeout: float | None = None,
    keep_fds: tuple[int, ...] = (),
    zygote=None,
    alive: Callable[[], None] | None = None,
) -> int:
    """Run ``argv`` to its end, each output line to ``output``; its exit status. ``alive`` is called while
    the process runs silently (every half second): the step's record uses it as a sign of life."""
    proc = None
    if zygote is not None:

        try:
            proc = zygote.spawn(argv, env, cwd, keep_fds)  # the same contract, forked from a warm process
        except ZygoteUnavailable:
            proc = None
    if proc is None:
        # Own process group: a stop reaches the whole tree (ansible forks, ssh, scripts' children);
        # under a supervisor that ends every descendant when polycrate dies, however it dies.
        proc = subprocess.Popen(
            supervised(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=keep_fds,
            preexec_fn=die_with_parent if libc() is not None else None,
        )
    # A reader thread fills a queue; the main thread (the one that gets KeyboardInterrupt on
    # SIGINT/SIGTERM) hands lines to `output` and watches the deadline.
    # SimpleQueue: its get() waits in C. queue.Queue waits in threading.Condition, where a
    # KeyboardInterrupt between releasing and re-taking its lock ends in "release unlocked lock"
    lines: queue.SimpleQueue = queue.SimpleQueue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    try:
        reader.start()
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = ""
                if alive is not None:
                    alive()
                if deadline is not None and time.monotonic() >= deadline:
                    stop_process_group(proc)
                    drain(lines, output)
                    raise ActionTimedOut(timeout or 0) from None
                continue
            if line is None:
                break
            output(line)
        return proc.wait()
    except ActionTimedOut:
        raise
    except BaseException:
        stop_process_group(proc)
        drain(lines, output)  # what it printed while it stopped (its clean-up, Ansible's last words) is kept
        raise


def drain(lines: queue.SimpleQueue, output: Callable[[str], None]) -> None:
    """Hand over what the stopped process still printed (the reader ends at EOF)."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            return
        output(line)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGINT the group (Ansible cleans up on it), then SIGTERM, then SIGKILL."""
    if proc.pid <= 0:  # a step in the run's container that ended before its pid could be seen here
        proc.wait()
        return
    for sig, grace in ((signal.SIGINT, STOP_GRACE_SECONDS / 2), (signal.SIGTERM, STOP_GRACE_SECONDS / 2)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        pass
    proc.wait()


