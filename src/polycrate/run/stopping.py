"""Stop signals around the writes that make a run's record: a SIGINT, SIGTERM or SIGHUP that arrives
while the record is being finished waits until the write is done, then stops polycrate as usual.

Found by tests/integration/test_signal_stress.py: a signal between opening the record and the first
step, or inside the finish, left the run 'running' until the next command's reconcile called it
"ended without recording a result (killed?)".
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


__all__ = ["STOP_SIGNALS", "signals_deferred"]
