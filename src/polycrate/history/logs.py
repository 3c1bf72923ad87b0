"""Step logs: plain files under ``.polycrate/runs/<run id>/``, one line per output line, flushed as it comes,
so a run killed half-way keeps everything it printed (the store holds each file's path)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from polycrate.config.record import MutableRecord


@dataclass(eq=False, repr=False)
class StepLog(MutableRecord):
    """A step's log file: one line per output line, flushed as it comes."""

    path: Path

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()

    def touch(self) -> None:
        """Its time set to now: the run's last sign of life while the step is silent (store.found_gone)."""
        try:
            os.utime(self.path)
        except OSError:  # a sign of life, never a reason for a step to fail
            pass

    def close(self) -> None:
        self._handle.close()
