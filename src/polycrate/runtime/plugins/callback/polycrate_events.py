"""polycrate's Ansible callback: one JSON line per event, for the run store.

Enabled by polycrate next to the stdout callback (``ANSIBLE_CALLBACKS_ENABLED``);
writes to the file named by ``POLYCRATE_EVENTS_FILE``. The events and their fields
are defined in ``polycrate.runtime.events`` (the engine reads them from there too). It records
only what the run store needs: task starts, per-result status with the failure message,
and the final per-host stats. Results arrive already censored by Ansible for
``no_log`` tasks; for those we write no message at all, only that it was hidden.

Ansible loads this file by its path; ``polycrate`` is importable because polycrate
always starts ansible-playbook as ``python -m polycrate.runtime.ansible_playbook``
(in the container too, from its read-only mount on PYTHONPATH).
"""
from __future__ import annotations

import os

from ansible.plugins.callback import CallbackBase

from polycrate.runtime.events import (
    EVENTS_CALLBACK,
    EVENTS_FILE_ENV,
    HIDDEN,
    IF_STOPPED_FACT,
    MAX_MESSAGE,
    EventKind,
    event_line,
    host_counts,
)

DOCUMENTATION = """
    name: polycrate_events
    type: notification
    short_description: JSON-lines event stream for polycrate's run store
    description:
      - Writes task results and per-host stats as JSON lines to the file named by POLYCRATE_EVENTS_FILE.
    requirements:
      - enable in ANSIBLE_CALLBACKS_ENABLED (polycrate does this)
"""

def _result_data(result) -> dict:
    data = getattr(result, "result", None)  # ansible-core >= 2.19
    if data is None:
        data = getattr(result, "_result", {})
    return data if isinstance(data, dict) else {}


def _is_no_log(result, data: dict) -> bool:
    task = getattr(result, "task", None) or getattr(result, "_task", None)
    no_log = getattr(task, "no_log", False)
    return (isinstance(no_log, bool) and no_log) or bool(data.get("_ansible_no_log")) or "censored" in data


def _message(result) -> str:
    data = _result_data(result)
    if _is_no_log(result, data):
        return HIDDEN
    parts = []
    # module_stderr: what a module that did not run said (an interpreter shim that finds no Python: "pyenv:
    # python3.13: command not found"), where msg says only "Module result deserialization failed"
    for key in ("msg", "stderr", "module_stderr", "reason"):
        value = data.get(key)
        if value and isinstance(value, str) and value not in parts:
            parts.append(value)
    if not parts and data.get("results"):  # a loop: the first failed item's message
        for item in data["results"]:
            if isinstance(item, dict) and item.get("failed"):
                if item.get("_ansible_no_log") or "censored" in item:
                    return HIDDEN
                if isinstance(item.get("msg"), str):
                    parts.append(item["msg"])
                    break
    rc = data.get("rc")
    if rc not in (None, 0):
        if not parts:
            parts.append(f"non-zero return code {rc}")
        elif parts[0] == "non-zero return code":  # the command modules' msg: say which code
            parts[0] = f"non-zero return code {rc}"
        if not data.get("stderr") and isinstance(data.get("stdout"), str) and data["stdout"].strip():
            parts.append(data["stdout"].strip().splitlines()[-1])  # a command that reports on stdout only
    return "\n".join(parts)[:MAX_MESSAGE]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = EVENTS_CALLBACK
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get(EVENTS_FILE_ENV)
        self._file = open(path, "a", encoding="utf-8") if path else None
        self._play = ""
        self._pattern = ""

    def _emit(self, event: EventKind, **data) -> None:
        if self._file is None:
            return
        self._file.write(event_line(event, **data))
        self._file.flush()

    def _task(self, result) -> dict:
        task = getattr(result, "task", None) or getattr(result, "_task", None)
        host = getattr(result, "host", None) or getattr(result, "_host", None)
        return {
            "play": self._play,
            "task": task.get_name() if task is not None else "",
            "action": getattr(task, "action", "") if task is not None else "",
            "host": host.get_name() if host is not None else "",
        }

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()
        hosts = getattr(play, "hosts", "")
        self._pattern = ",".join(map(str, hosts)) if isinstance(hosts, (list, tuple)) else str(hosts or "")
        self._emit(EventKind.PLAY_START, play=self._play)

    def v2_playbook_on_no_hosts_matched(self):
        # ansible-playbook goes on with exit 0; polycrate fails the step unless it allows no hosts
        self._emit(EventKind.NO_HOSTS, play=self._play, pattern=self._pattern)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit(EventKind.TASK_START, play=self._play, task=task.get_name())

    def v2_runner_on_start(self, host, task):
        # the live view's current task and host (a long silent task shows where it is)
        self._emit(EventKind.RUNNER_START, play=self._play, task=task.get_name(), host=host.get_name())

    def v2_runner_on_ok(self, result):
        data = _result_data(result)
        self._emit(EventKind.OK, changed=bool(data.get("changed")), **self._task(result))
        facts = data.get("ansible_facts")
        if isinstance(facts, dict) and IF_STOPPED_FACT in facts and not _is_no_log(result, data):
            # what a stop from now on would leave on this host, in the playbook's words (for a stopped run's record)
            said = facts[IF_STOPPED_FACT]
            if isinstance(said, dict):  # one sentence per topic (the service, the database: one host may have both)
                said = "; ".join(str(text).strip() for text in said.values() if text and str(text).strip())
            self._emit(EventKind.IF_STOPPED, host=self._task(result)["host"],
                       message=(said if isinstance(said, str) else "")[:MAX_MESSAGE])

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit(EventKind.FAILED, ignore_errors=bool(ignore_errors), message=_message(result), **self._task(result))

    def v2_runner_on_unreachable(self, result):
        self._emit(EventKind.UNREACHABLE, message=_message(result), **self._task(result))

    def v2_runner_on_skipped(self, result):
        self._emit(EventKind.SKIPPED, **self._task(result))

    def v2_playbook_on_stats(self, stats):
        hosts = {host: host_counts(stats.summarize(host)) for host in sorted(stats.processed)}
        self._emit(EventKind.STATS, hosts=hosts)
        if self._file is not None:
            self._file.close()
            self._file = None
