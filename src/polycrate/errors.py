"""Error types. Every error the user can cause is a PolycrateError.

The CLI has one handler (polycrate.cli.main) that turns them into a single line
``polycrate: error: FILE:LINE: message`` and the error's exit code. No module
below the CLI prints or exits.
"""
from __future__ import annotations

from pathlib import Path

# Exit codes, documented in docs/reference/exit-codes.md (generated from these names: scripts/docs_reference.py).
EXIT_ACTION_FAILED = 1  # an action, a step or a workflow failed
EXIT_BAD_INPUT = 2  # bad input, configuration or usage
EXIT_LOCKED = 3  # another run holds the lock
EXIT_SYSTEM = 74  # the system refused: disk full, read-only file system, unreadable run store (sysexits EX_IOERR)
EXIT_INTERNAL = 70  # a bug in polycrate: one line, never a traceback (sysexits EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM


# Who is told an error: someone at a terminal, someone in the web view (a launch of the server's child), the
# record of a scheduled run nobody watches. What to do about an error may differ by front end (a terminal can
# --wait; a web page has a Stop button); the refusal itself does not (PolycrateError.hints).
CLI, WEB, SCHEDULE = "cli", "web", "schedule"


class PolycrateError(Exception):
    """A user-facing error: a one-line message, optionally tied to a file and line. ``hints``: what to do about
    it, by front end (CLI, WEB, SCHEDULE); ``message`` is the statement with the terminal's hint, as the CLI
    says it, and ``said_to`` words it for another front end (the statement alone where it has no hint)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None, *,
                 hints: dict[str, str] | None = None):
        self.statement = message
        self.hints = dict(hints or {})
        message = _with_hint(message, self.hints.get(CLI))
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        return self._where() + _one_line(self.message)

    def said_to(self, front_end: str) -> str:
        """The error as ``front_end`` is told it: the statement, and that front end's hint when it has one."""
        return self._where() + _one_line(_with_hint(self.statement, self.hints.get(front_end)))

    def _where(self) -> str:
        if not self.path:
            return ""
        shown = _shorten(_display_path(self.path))
        return f"{shown}:{self.line}: " if self.line else f"{shown}: "


def _with_hint(statement: str, hint: str | None) -> str:
    return f"{statement}; {hint}" if hint else statement


def _one_line(message: str) -> str:
    # one line, always; and a readable one when it quotes a huge value back
    return " ".join(_shorten(word) for word in message.split()).strip()


def _shorten(text: str, limit: int = 200) -> str:
    """A word of a message cut in the middle when it is longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    return f"{text[:100]}...({len(text):,} characters)...{text[-40:]}"


def _display_path(path: str) -> str:
    """Relative to the current folder when inside it: what an admin would type."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return path


class ConfigError(PolycrateError):
    """workspace.poly, block.poly, inventory or another input file is invalid."""


class NotFoundError(PolycrateError):
    """A named block, action, workflow or step does not exist."""


class LockedError(PolycrateError):
    """Another run holds the lock: ``held`` says who, without the advice to the person at the terminal (its CLI
    hint), which a scheduled run's record must not repeat (nobody there can --wait)."""

    exit_code = EXIT_LOCKED

    def __init__(self, held: str, path: str | Path | None = None, *, hints: dict[str, str] | None = None):
        super().__init__(held, path, hints=hints)
        self.held = held


class SystemFault(PolycrateError):
    """The machine refused what we had to do: no space, a read-only file system, a damaged store."""

    exit_code = EXIT_SYSTEM


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the file it concerns and what the system said."""
    what = exc.strerror or exc.__class__.__name__
    where = exc.filename if exc.filename is not None else ""
    if isinstance(where, bytes):
        where = where.decode("utf-8", "replace")
    if where:
        where = _display_path(str(where))
        where = _shorten(where)
        return f"{where}: {what}"
    return what


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) as the exception the run unwinds with; it names the signal
    so that the record can say which. A plain KeyboardInterrupt is SIGINT. ``reason``: who or what
    stopped the run, when the process knows it (a team run asked to stop: team/execute.py)."""

    def __init__(self, signal_name: str = "SIGINT", reason: str | None = None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.reason = reason


def interrupt_in(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The stop signal behind an exception: the exception itself, or one in its chain. Python wraps what a
    signal handler raises in some places (a class body's ``__set_name__`` at import time gives a
    RuntimeError caused by it; a clean-up that fails while the interrupt unwinds chains it as context):
    such a run was stopped, not broken (found by the signal stress test)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def interrupt_name(exc: BaseException) -> str:
    """The signal an interrupt came from: SIGINT for Ctrl-C, else what Interrupted carries."""
    return getattr(exc, "signal_name", "SIGINT")


def interrupt_reason(exc: BaseException | None) -> str | None:
    """Who or what stopped the run, when the interrupt says it."""
    return getattr(exc, "reason", None)


def stopped_by(by: str) -> str:
    """The record's words for a run someone stopped: `by` as the stop names them (``alice@host``;
    the server's ``web:alice``), and how they asked."""
    how = "the server's stop" if by.startswith("web:") else "polycrate runs stop"
    return f"interrupted by {by} ({how})"
