"""Why a step failed, in words: the one place that writes a failure's text.

The engine stores what ``describe`` returns as the step's (and run's) message; the summary,
``runs show`` and webhooks show that same text. Inputs are what the step left behind: its exit
status, the events file (our Ansible callback's JSON lines, or a script's ERR trap), and the last
lines of its output.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.runtime.events import EventKind, no_hosts_message
from polycrate.config.record import MutableRecord

# ansible-playbook's exit statuses (ansible.errors.ExitCode and TaskQueueManager); 4 means both
# "unreachable hosts" and "parser error": the events tell which.
ANSIBLE_EXIT_CODES = {
    1: "Ansible reported an error",
    2: "one or more hosts failed",
    3: "one or more hosts were unreachable",
    4: "Ansible could not parse the playbook, or hosts were unreachable",
    5: "bad or incomplete options to ansible-playbook",
    6: "one or more hosts failed and some were unreachable",
    8: "the play was aborted (any_errors_fatal or max_fail_percentage)",
    99: "ansible-playbook was interrupted",
    250: "an unexpected error inside Ansible",
    255: "an unexpected error inside Ansible",
}
_ERROR_LINE = re.compile(r"^\s*\[?(ERROR|FATAL)\]?:?\s*(.*)$")


@dataclass(eq=False, repr=False)
class StepEvents(MutableRecord):
    """What the events file says beyond per-host counts: plays without hosts, unreachable hosts,
    the failing script line."""

    no_hosts: list[dict[str, Any]] = field(default_factory=list)  # {"play", "pattern"}
    unreachable: list[dict[str, Any]] = field(default_factory=list)  # {"host", "task", "message"}
    script_failed: dict[str, Any] | None = None  # {"line", "status"}: the first (innermost) failing line
    script_exit: dict[str, Any] | None = None  # {"line", "status"}: the last line started, when the script ended non-zero


def read_step_events(path: Path | None) -> StepEvents:
    found = StepEvents()
    if path is None:
        return found
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return found
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind == EventKind.NO_HOSTS:
            found.no_hosts.append({"play": event.get("play", ""), "pattern": event.get("pattern", "")})
        elif kind == EventKind.UNREACHABLE:
            found.unreachable.append(
                {"host": event.get("host", ""), "task": event.get("task", ""), "message": event.get("message", "")}
            )
        elif kind == EventKind.SCRIPT_FAILED and found.script_failed is None:
            found.script_failed = {"line": int(event.get("line", 0)), "status": int(event.get("status", 1))}
        elif kind == EventKind.SCRIPT_EXIT:
            found.script_exit = {"line": int(event.get("line", 0)), "status": int(event.get("status", 1))}
    return found


def exit_meaning(code: int | None, unreachable: bool = False) -> str:
    if code is None:
        return ""
    if code == 4 and unreachable:
        return ANSIBLE_EXIT_CODES[3]
    if code < 0:
        return killed_by(code) or ""
    return ANSIBLE_EXIT_CODES.get(code, "")


def killed_by(code: int | None) -> str | None:
    """'killed by SIGKILL' for a process's negative exit status (a signal ended it); else None."""
    name = signal_name(code)
    return f"killed by {name}" if name else None


def signal_name(code: int | None) -> str | None:
    """The signal a negative exit status stands for ('SIGKILL'), None for a plain exit."""
    from polycrate.states import signal_of

    return signal_of(code)


def _error_lines(lines: list[str]) -> list[str]:
    """Ansible's own error lines ("[ERROR]: ...", "ERROR! ...", "Origin: file:line:col")."""
    picked = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("[ERROR]", "ERROR!", "FATAL")):
            match = _ERROR_LINE.match(stripped)
            text = match.group(2) if match else stripped
            picked.append(text.removeprefix("! ").strip())
        elif stripped.startswith("Origin:") and picked:
            picked[-1] += f" ({stripped.removeprefix('Origin:').strip()})"
    return picked


def describe_ansible(exit_code: int | None, failure: dict[str, str] | None, events: StepEvents, output: list[str]) -> str:
    """An ansible step that failed: the failing task's message (task and host are stored beside it),
    unreachable hosts by name, else Ansible's exit status in words with Ansible's error line."""
    if events.unreachable and (failure is None or failure.get("message") == "host unreachable"
                               or failure.get("host") in {u["host"] for u in events.unreachable}):
        hosts = sorted({u["host"] for u in events.unreachable})
        first = events.unreachable[0]
        reason = first["message"].strip().splitlines()[0] if first["message"].strip() else ""
        text = f"unreachable: {', '.join(hosts)}" + (f" ({reason})" if reason else "")
        return text
    if failure is not None and failure.get("message"):
        return failure["message"]
    meaning = exit_meaning(exit_code)
    errors = _error_lines(output)
    if exit_code == 4 and errors:
        meaning = ANSIBLE_EXIT_CODES[4].split(",")[0]  # an error line printed: it was the parser
    killed = killed_by(exit_code)
    text = f"ansible-playbook {killed}" if killed else \
        f"ansible-playbook exit status {exit_code}" + (f" ({meaning})" if meaning else "")
    if errors:
        text += f": {errors[0]}"
    elif failure is not None:
        text += f": task '{failure.get('task', '')}' failed on {failure.get('host', '')}"
    elif output:
        text += f": {output[-1].strip()}"
    return text


def describe_script(lines: tuple[str, ...], exit_code: int | None, events: StepEvents, output: list[str]) -> str:
    """A script step that failed: its failing line (number, text) and that line's exit status."""
    from polycrate.runtime.script import script_line

    failed = events.script_failed or events.script_exit
    if failed:
        where = script_line(lines, failed["line"])
        if where:
            index, text = where
            status = failed["status"]
            # bash's 128+N: the line's command was killed by signal N
            killed = killed_by(128 - status) if 128 < status < 160 else None
            return f"script line {index} `{text.strip()}` failed with exit status {status}" + \
                (f" ({killed})" if killed else "")
    text = killed_by(exit_code) or f"exit status {exit_code}"
    tail = next((line for line in reversed(output) if not line.startswith("+ ")), "")
    return text + (f": {tail.strip()}" if tail.strip() else "")


def describe_no_hosts(events: StepEvents) -> str | None:
    if not events.no_hosts:
        return None
    return "; ".join(no_hosts_message(e["play"], e["pattern"]) for e in events.no_hosts)
