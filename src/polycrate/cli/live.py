"""The live view of a run: what a person sees while it runs.

Which stream carries what (the one rule):
  * stdout carries the run's story: the header, each step's banner, the actions' output,
    polycrate's notices, the heartbeat and the summary, in the order they happen, so that
    `| less`, `> file` and the systemd journal keep them together;
  * stderr carries only errors that stop the command (`polycrate: error: ...`);
  * with `--output json`, stdout carries the JSON document alone and the story moves to stderr.

On a terminal (the story's stream is a TTY): the terminal's width passes through to Ansible, and a
status line at the bottom shows step i/n, the current task and host and the elapsed time, redrawn in
place every second; with colour allowed (`NO_COLOR` unset, no `--no-color`) Ansible's colours pass
through and polycrate's banners are coloured. Anywhere else: no escape code at all (also none that an action
prints itself; Ansible colours all the same, for the run's log, unless colour is turned off), and after
each `--heartbeat` seconds of silence (default 60, `POLYCRATE_HEARTBEAT`, 0 turns it off) one plain line
naming the step, the task and the elapsed time. The store keeps the colours (SGR codes only) for the web
page; `runs logs` and every other plain reader strip them (polycrate.ansi).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from polycrate.cli.render import BOLD, DIM, RESET, YELLOW
from polycrate.errors import PolycrateError

DEFAULT_HEARTBEAT = 60.0
TICK = 1.0  # seconds between redraws of the status line (and checks for the heartbeat)



def story_stream(output: str) -> TextIO:
    return sys.stderr if output == "json" else sys.stdout


def colour_allowed(stream: TextIO, no_color: bool = False) -> bool:
    """Colour only on a terminal, and never with NO_COLOR (any value, https://no-color.org) or --no-color."""
    if no_color or "NO_COLOR" in os.environ:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def heartbeat_from(value: float | None) -> float:
    if value is None:
        text = os.environ.get("POLYCRATE_HEARTBEAT", "").strip()
        if not text:
            return DEFAULT_HEARTBEAT
        try:
            value = float(text)
        except ValueError:
            raise PolycrateError(f"POLYCRATE_HEARTBEAT must be a number of seconds, not {text!r}") from None
    if value < 0:
        raise PolycrateError(f"--heartbeat must be >= 0 seconds (0: off), not {value:g}")
    return value


def add_view_options(parser) -> None:
    parser.add_argument("--no-color", action="store_true", help="no colour even on a terminal (as NO_COLOR=1)")
    parser.add_argument("--heartbeat", metavar="SECONDS", type=float, default=None,
                        help="off a terminal: a progress line after each SECONDS of silence "
                             f"(default {DEFAULT_HEARTBEAT:g}, or POLYCRATE_HEARTBEAT; 0: off)")


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class _Activity:
    """The current task and hosts of an ansible step, from its event stream (tailed, never blocking)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.task: str | None = None
        self.hosts: list[str] = []

    def poll(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        from polycrate.runtime.events import EventKind  # here: `--help` builds the parser from this module

        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == EventKind.TASK_START:
                self.task, self.hosts = event.get("task") or self.task, []
            elif kind == EventKind.RUNNER_START:
                self.task = event.get("task") or self.task
                host = event.get("host")
                if host and host not in self.hosts:
                    self.hosts.append(host)
            elif kind in (EventKind.OK, EventKind.FAILED, EventKind.UNREACHABLE, EventKind.SKIPPED):
                host = event.get("host")
                if host in self.hosts:
                    self.hosts.remove(host)

    def where(self) -> str:
        if not self.task:
            return ""
        text = f"task '{self.task}'"
        if self.hosts:
            text += f" on {self.hosts[0]}" + (f" (+{len(self.hosts) - 1})" if len(self.hosts) > 1 else "")
        return text


class LiveReporter:
    """An engine Reporter (by its methods): the story of a run on one stream, as the module says."""

    def __init__(self, output: str = "text", no_color: bool = False, heartbeat: float | None = None,
                 stream: TextIO | None = None):
        self.stream = stream or story_stream(output)
        self.tty = _isatty(self.stream)
        self.colour = colour_allowed(self.stream, no_color)
        self.no_color = no_color
        self.heartbeat = heartbeat_from(heartbeat)
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.kind = ""
        self.name = ""
        self.run_id = ""
        self.step = None
        self.index = 0
        self.total = 0
        self.step_started_at = 0.0
        self.activity = _Activity(None)
        self.last_output = time.monotonic()
        self.status_shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- what the engine's actions get: colour and width of this terminal ----------------------

    def environment(self) -> tuple[tuple[str, str], ...]:
        env: list[tuple[str, str]] = []
        if self.tty:
            env.append(("POLYCRATE_COLUMNS", str(shutil.get_terminal_size((80, 24)).columns)))
        from polycrate import ansi

        # colour also off a terminal: the story written here is stripped, the run's log keeps it
        return (*env, *ansi.ansible_colour(os.environ, self.no_color))

    # --- writing --------------------------------------------------------------------------------

    def _paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{RESET}" if self.colour else text

    def _write(self, line: str) -> None:
        """One line of the story; on a terminal the status line is taken away first and redrawn after."""
        with self.lock:
            if not self.colour:
                from polycrate import ansi

                line = ansi.strip(line)
            if self.status_shown:
                self.stream.write("\r\x1b[K")
                self.status_shown = False
            self.stream.write(line + "\n")
            self._draw_status()
            self.stream.flush()
            self.last_output = time.monotonic()

    def _status_text(self, separator: str) -> str:
        if self.step is None:
            return ""
        parts = [f"[{self.index}/{self.total}] {self.step.name}"]
        where = self.activity.where()
        if where:
            parts.append(where)
        now = time.monotonic()
        parts.append(f"{elapsed(now - self.step_started_at)} elapsed (run {elapsed(now - self.started)})")
        return separator.join(parts)

    def _draw_status(self) -> None:
        """The status line (a terminal only, also without colour): drawn in place, never a line of its own."""
        if not self.tty or self.step is None:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        text = self._status_text(" · ")[: max(10, width - 1)]
        self.stream.write(f"\r\x1b[K{self._paint(text, DIM)}")
        self.status_shown = True

    def _tick(self) -> None:
        try:
            self._ticks()
        except (OSError, ValueError):  # the stream went away: the engine hears it at its next write
            return

    def _ticks(self) -> None:
        while not self._stop.wait(TICK):
            self.activity.poll()
            with self.lock:
                if self.step is None:
                    continue
                if self.tty:
                    self._draw_status()
                    self.stream.flush()
                    continue
                text = self._status_text(", ")
            silent = time.monotonic() - self.last_output
            if self.heartbeat and silent >= self.heartbeat:
                self._write(f"polycrate: still running: {text}")

    def close(self) -> None:
        """Stop the ticker and take the status line away (the summary follows on a clean line)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        with self.lock:
            self.step = None
            try:
                if self.status_shown:
                    self.stream.write("\r\x1b[K")
                    self.status_shown = False
                self.stream.flush()
            except (OSError, ValueError):  # nobody is watching any more; the run's result stands
                pass

    # --- the engine's Reporter --------------------------------------------------------------------

    def run_started(self, kind: str, name: str, run_id: str, total: int) -> None:
        self.kind, self.name, self.run_id, self.total = kind, name, run_id, total
        what = f"workflow {name}" if kind == "workflow" else f"action {name}"
        steps = f"{total} step{'s' if total != 1 else ''}" if kind == "workflow" else "1 step"
        self._write(self._paint(f"==> {what}: {steps}, run {run_id}", BOLD))
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def runtime(self, line: str) -> None:
        self._write(self._paint(f"==> {line}", DIM))

    def step_started(self, step, index: int, total: int) -> None:
        self.step, self.index, self.total = step, index, total
        self.step_started_at = time.monotonic()
        self.activity = _Activity(None)
        self._write(self._paint(f"==> [{index}/{total}] {step.name}: {step.block} {step.action}", BOLD))

    def attempt_started(self, step, events_file: Path | None) -> None:
        self.activity = _Activity(events_file)

    def step_finished(self, step, index: int, total: int) -> None:
        from polycrate.cli.summary import status_colour, step_status_text

        attempts = f", {step.attempts} attempts" if step.attempts > 1 else ""
        text = f"==> [{index}/{total}] {step.name}: "
        status = step_status_text(step)
        line = text + self._paint(status, status_colour(step.status)) + f" after {step.duration:.1f}s{attempts}"
        self.step = None
        self._write(line)

    def output(self, line: str) -> None:
        self._write(line)

    def notice(self, message: str) -> None:
        self._write(self._paint(f"polycrate: {message}", YELLOW))

    def toolchain(self, line: str) -> None:
        # preparing the container runtime happens before the run: on stderr, as block pulls
        print(f"[toolchain] {line}", file=sys.stderr, flush=True)

    def preparing(self, message: str) -> None:
        # the preparation before a run (block pulls) goes to stderr: the README's stream rule
        print(f"polycrate: {message}", file=sys.stderr, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def drop_closed_streams() -> None:
    """After a reader went away (`| head`, a closed terminal): point stdout/stderr whose flush fails at
    /dev/null, so that what is still buffered does not turn the exit into a traceback at shutdown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, stream.fileno())
                finally:
                    os.close(devnull)
            except (OSError, ValueError):
                pass
