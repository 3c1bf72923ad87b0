"""Stop signals around the writes that make a run's record: a SIGINT, SIGTERM or SIGHUP that arrives
while the record is being finished waits until the write is done, then stops polycrate as usual.

Found by tests/integration/test_signal_stress.py: a signal between opening the record and the first
step, or inside the finish, left the run 'running' until the next command's reconcile called it
"ended without recording a result (killed?)".

Once the record says how the run ended (``settle``), a stop signal changes nothing of it: the handler notes
it (``late_stop``) instead of interrupting, the after-run phases not yet begun are skipped, the clean-up runs,
and the exit code is the recorded one. Before, a signal held while the record was written as succeeded was
raised after it, and polycrate exited 130 beside a record of success (the signal stress test, under load).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)  # SIGUSR2: a cron entry's timeout


_SETTLED: list[bool] = []  # this process's run has its outcome recorded
_LATE: list[str] = []  # the stop signal that came after that (its name), at most one


def settle() -> None:
    """The run's outcome is recorded: from now on a stop signal is noted, not raised."""
    _SETTLED[:] = [True]


def unsettle() -> None:
    """A new run (or command) in this process: stop signals interrupt again."""
    _SETTLED.clear()
    _LATE.clear()


def stop_after_settled(signum: int) -> bool:
    """For the stop handler: when the outcome is recorded, note the signal and say so (True: do not raise)."""
    if not _SETTLED:
        return False
    if not _LATE:
        _LATE.append(signal.Signals(signum).name)
    return True


def late_stop() -> str | None:
    """The stop signal that came after the outcome was recorded (its name), if one did."""
    return _LATE[0] if _LATE else None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold the stop signals for the block; the first one that came is handled after it (raising as
    its handler does). Only the main thread can swap handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    saved: dict[int, Any] = {}
    for sig in map(int, STOP_SIGNALS):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_IGN, signal.SIG_DFL, None):
            continue  # ignored stays ignored; the default (death) cannot be deferred by a handler anyway
        saved[sig] = previous
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
        if held and callable(saved.get(held[0])):
            saved[held[0]](held[0], None)


__all__ = ["STOP_SIGNALS", "late_stop", "settle", "signals_deferred", "stop_after_settled", "unsettle"]
