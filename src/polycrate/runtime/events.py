"""The Ansible event contract: written by our callback plugin, read by the engine.

Our callback (``runtime/plugins/callback/polycrate_events.py``, enabled next to the stdout callback
through ``ANSIBLE_CALLBACKS_ENABLED``) appends one JSON object a line to the file named by
``POLYCRATE_EVENTS_FILE``. Every line has ``event`` (an ``EventKind``) and ``time`` (epoch seconds):

- ``play_start``: ``play``
- ``task_start``: ``play``, ``task``
- ``ok``: ``play``, ``task``, ``action``, ``host``, ``changed`` (bool)
- ``failed``: the same without ``changed``, plus ``ignore_errors`` (bool) and ``message``
- ``unreachable``: ``play``, ``task``, ``action``, ``host``, ``message``
- ``skipped``: ``play``, ``task``, ``action``, ``host``
- ``no_hosts``: ``play``, ``pattern`` (a play whose hosts pattern matched no host; Ansible goes on)
- ``stats`` (the play recap, last): ``hosts``: {host: {count: n for count in HOST_COUNTS}}
- ``if_stopped``: ``host``, ``message``: what a stop from now on would leave on that host, as the playbook
  says it by setting the fact ``polycrate_if_stopped`` (IF_STOPPED_FACT: a sentence, or a dict of them by topic,
  joined with "; "; "" when a stop would leave nothing);
  the record of a stopped step says the last one of each host (``if_stopped``)

Script actions write to the same file (from their bash prelude, ``runtime/script.py``):

- ``script_failed``: ``line`` (of the generated script), ``status`` (the ERR trap: a failing command)
- ``script_exit``: ``line`` (the last line started), ``status`` (the EXIT trap, when non-zero)

A ``message`` is at most MAX_MESSAGE characters; for a ``no_log`` result it is HIDDEN, never the
text. A run killed half-way leaves a last line cut short: readers skip lines that do not parse.

This module is loaded by the callback inside ``ansible-playbook`` (which polycrate always starts with
``polycrate`` importable, also in the container) and by the engine: it imports nothing of polycrate.
"""
from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

EVENTS_CALLBACK = "polycrate_events"  # the callback's name, for ANSIBLE_CALLBACKS_ENABLED
EVENTS_FILE_ENV = "POLYCRATE_EVENTS_FILE"
HIDDEN = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
MAX_MESSAGE = 2000
# the fact a playbook sets to say what a stop from that moment on would leave on a host (a service it stopped
# and has not started again, a database half-replaced): a stopped run's record says it
IF_STOPPED_FACT = "polycrate_if_stopped"


class EventKind(StrEnum):
    PLAY_START = "play_start"
    TASK_START = "task_start"
    RUNNER_START = "runner_start"  # a task starts on a host: the live view's current task and host
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"
    NO_HOSTS = "no_hosts"
    STATS = "stats"
    IF_STOPPED = "if_stopped"  # a task set IF_STOPPED_FACT: what a stop would leave on its host
    SCRIPT_FAILED = "script_failed"  # written by a script action's ERR trap
    SCRIPT_EXIT = "script_exit"  # written by a script action's EXIT trap


# The per-host counts of a step, in the order the run store keeps them.
HOST_COUNTS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
# Ansible's stats.summarize() keys -> ours
ANSIBLE_STATS = {"ok": "ok", "changed": "changed", "failures": "failed", "unreachable": "unreachable",
                 "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
_RESULTS = (EventKind.OK, EventKind.FAILED, EventKind.UNREACHABLE, EventKind.SKIPPED)


def event_line(kind: EventKind, **data: Any) -> str:
    """One line of the events file (with its newline)."""
    data.update(event=str(kind), time=time.time())
    return json.dumps(data, default=str) + "\n"


def host_counts(summary: dict[str, int]) -> dict[str, int]:
    """Our counts from one host's ``stats.summarize(host)``."""
    return {ours: summary.get(theirs, 0) for theirs, ours in ANSIBLE_STATS.items()}


def read_events(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, str] | None]:
    """Per-host counts and the failing task (the last failure not ignored) from an events file.

    The counts are Ansible's own recap when the play got that far, else tallied from the results."""
    hosts: dict[str, dict[str, int]] = {}
    tally: dict[str, dict[str, int]] = {}
    failure = None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return hosts, None
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        kind = event.get("event")
        if kind == EventKind.STATS:
            hosts = event.get("hosts", {})
        elif kind in _RESULTS:
            counts = tally.setdefault(event.get("host", ""),
                                      dict.fromkeys(("ok", "changed", "failed", "unreachable", "skipped"), 0))
            if kind == EventKind.OK:
                counts["ok"] += 1
                counts["changed"] += int(bool(event.get("changed")))
            elif kind == EventKind.FAILED and event.get("ignore_errors"):
                counts["ok"] += 1
            else:
                counts[kind] += 1
            if kind in (EventKind.FAILED, EventKind.UNREACHABLE) and not event.get("ignore_errors"):
                failure = {
                    "task": event.get("task", ""),
                    "host": event.get("host", ""),
                    "message": event.get("message", "") or ("host unreachable" if kind == EventKind.UNREACHABLE else ""),
                }
    return (hosts or tally), failure


def if_stopped(path: Path) -> list[str]:
    """What the playbook said a stop would leave (IF_STOPPED_FACT), the last word of each host that still has
    one, in the order the hosts first said one: for the record of a step that was stopped."""
    said: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by the stop
        if isinstance(event, dict) and event.get("event") == EventKind.IF_STOPPED:
            said[str(event.get("host", ""))] = str(event.get("message") or "").strip()
    return [message for message in said.values() if message]


def no_hosts_message(play: str, pattern: str) -> str:
    """The one wording of a play that matched no host (at run time and in the preflight)."""
    return f"play '{play}' matched no hosts (pattern '{pattern}')"
