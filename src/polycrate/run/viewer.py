"""The run outlives its viewer: a reporter whose stream went away (`| head`, `| less` and `q`, a closed
terminal, a full disk under `> file`) stops being called, and the run goes on to its end.

What the reporter would have shown is in the step logs anyway (the engine writes every line there
first); the run's record gets one notice saying when the viewer went. Nothing about the run's steps,
status or exit code depends on whether anyone is watching.
"""
from __future__ import annotations

import errno
from pathlib import Path
from collections.abc import Callable
from typing import Any


def describe_gone(exc: BaseException) -> str:
    """Why the viewer's stream refused a write, for people: 'closed pipe', 'terminal hung up', ..."""
    if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
        return "the output pipe was closed"
    if getattr(exc, "errno", None) == errno.EIO:
        return "the terminal hung up"
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "the output file's disk is full"
    if isinstance(exc, ValueError):
        return "the output stream was closed"
    return f"the output stream failed ({exc})"


class GuardedReporter:
    """An engine Reporter (by its methods) in front of the caller's: the first write that fails with
    OSError or ValueError (I/O on a closed file) calls `on_gone` once; every later call is dropped."""

    def __init__(self, inner: Any, on_gone: Callable[[str], None]):
        self.inner = inner
        self.on_gone = on_gone
        self.gone: str | None = None  # why the viewer went, once it did

    def _call(self, method: str, *args: Any) -> None:
        if self.gone is not None:
            return
        try:
            getattr(self.inner, method)(*args)
        except (OSError, ValueError) as exc:
            self.gone = describe_gone(exc)
            self.on_gone(self.gone)

    def output(self, line: str) -> None:
        self._call("output", line)

    def step_started(self, step: Any, index: int, total: int) -> None:
        self._call("step_started", step, index, total)

    def step_finished(self, step: Any, index: int, total: int) -> None:
        self._call("step_finished", step, index, total)

    def notice(self, message: str) -> None:
        self._call("notice", message)

    def toolchain(self, line: str) -> None:
        self._call("toolchain", line)

    def preparing(self, message: str) -> None:
        self._call("preparing", message)

    def run_started(self, kind: str, name: str, run_id: str, total: int) -> None:
        self._call("run_started", kind, name, run_id, total)

    def runtime(self, line: str) -> None:
        self._call("runtime", line)

    def attempt_started(self, step: Any, events_file: Path | None) -> None:
        self._call("attempt_started", step, events_file)


__all__ = ["GuardedReporter", "describe_gone"]


# The toolchain's known noise: Python warnings of its libraries that say nothing about the run
# (paramiko under a newer cryptography). Each is a "FILE:LINE: CategoryWarning: text" line and the
# source line Python prints under it, indented. Hidden from the viewer; the step log keeps them.
KNOWN_NOISE = ("CryptographyDeprecationWarning",)


class NoiseFilter:
    """Which output lines the viewer sees: all but the toolchain's known warnings (KNOWN_NOISE)."""

    def __init__(self) -> None:
        self.in_warning = False
        self.hidden = 0

    def shown(self, line: str) -> bool:
        if any(f": {category}: " in line for category in KNOWN_NOISE):
            self.in_warning = True
            self.hidden += 1
            return False
        if self.in_warning and line.startswith((" ", "\t")) and line.strip():
            self.hidden += 1  # the warned-about source line, printed under the warning
            return False
        self.in_warning = False
        return True
