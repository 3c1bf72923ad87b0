"""The supervisor of one step: ``python -I -S supervise.py COMMAND...`` (issue 14).

Polycrate can die in ways it cannot clean up after (SIGKILL, the OOM killer, a lost terminal).
PR_SET_PDEATHSIG alone reaches only the direct child: a script's ``sleep 30`` or ``apt-get
upgrade`` survived its bash, held the workflow's lock and ran unsupervised. So every step runs
under this small process, which

- is a child subreaper (``PR_SET_CHILD_SUBREAPER``): whatever the step starts stays its
  descendant even when the middle of the tree dies or double-forks;
- gets SIGTERM when polycrate dies (``PR_SET_PDEATHSIG``), and then ends the whole tree: SIGTERM
  to every descendant, a short grace, SIGKILL to whatever is left, until no child remains;
- otherwise stays out of the way: it runs the command in its own process group (the group
  polycrate's stop reaches), passes SIGINT on by being in that group, ends the tree on SIGTERM
  (polycrate's second stop signal), and exits with the command's status (a signal as a signal);
- after a stop (polycrate's SIGINT to the group), once the command has ended, ends what is left
  of the tree: a playbook's task runs in a session of Ansible's worker, out of the group's reach.

A normal end leaves the step's daemons alone (a script may start a service). Self-contained:
it runs without site-packages (``-S``) and imports nothing from polycrate. A warm step (the
zygote's, runtime/zygote.py) is supervised the same way: its first process calls
``fork_supervised`` and stays as the supervisor.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time

import _signal as signal  # type: ignore[import-not-found]  # the C module: `signal` would import enum (a tenth of our start-up)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 0.5


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first found through /proc/*/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def _reap() -> bool:
    """Reap every finished child; False once no child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def end_tree() -> None:
    """SIGTERM to every descendant, a grace, then SIGKILL until none is left."""
    me = os.getpid()
    for sig, grace in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        for pid in _descendants(me):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _reap():
                return
            if sig == signal.SIGKILL:
                for pid in _descendants(me):  # children born since the last sweep
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)


class _Stop(Exception):
    pass


def fork_supervised(parent: int) -> None:
    """Fork the step's command off this process: the call returns in the child, which then becomes the
    command (exec, or the zygote's warm ansible-playbook); this process stays as the command's supervisor
    and exits, when it is done, with the command's status. ``parent``: the process whose death ends the
    step (polycrate; for a warm step, the zygote)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    stops: list[int] = []

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: end_tree is not to be interrupted
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, lambda s, f: stops.append(s))  # the command got it too (same group); it decides
    if os.getppid() != parent:  # polycrate died before PDEATHSIG was armed
        os._exit(143)
    child = os.fork()
    if child == 0:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        return
    os._exit(_supervise(child, parent, stops))


def _supervise(child: int, parent: int, stops: list[int]) -> int:
    # The step's output pipe is the command's, not ours: polycrate sees EOF when the command's
    # tree closes it.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    status = None
    try:
        while status is None:
            if os.getppid() != parent:
                raise _Stop()
            try:
                pid, code = os.waitpid(-1, 0)
            except ChildProcessError:
                return 127
            if pid == child:
                status = code
        if stops:
            # polycrate stopped the step (its SIGINT) and the command has ended: what it leaves behind goes
            # too. Ansible's workers run each task in a session of their own and pass the SIGINT on to it
            # only: a task's process that ignores SIGINT (a shell's background job) outlived the stop.
            end_tree()
    except _Stop:  # polycrate died, or stops the step for good: nothing of it stays behind
        end_tree()
        return 143
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset: it was `exit 1`
            pass
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: supervise.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    fork_supervised(os.getppid())
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"polycrate: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
    os._exit(127)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
