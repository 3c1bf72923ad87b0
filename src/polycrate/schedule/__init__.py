"""Scheduled workflow runs: systemd timers and cron entries, declared in the workspace.

A workflow in ``workspace.poly`` may carry a ``schedule``::

    workflows:
      - name: nightly-maintenance
        steps: [...]
        schedule: "*-*-* 02:00:00"        # short form: a systemd OnCalendar expression

      - name: hourly-check
        steps: [...]
        schedule:                          # long form
          on_calendar: "Mon..Fri *-*-* 02:00:00"   # systemd OnCalendar expression, or
          # cron: "0 2 * * 1-5"                    # a five-field cron expression (exactly one of the two)
          randomized_delay: 15m            # seconds or a systemd time span; RandomizedDelaySec= / a random sleep in cron
          user: automation                 # run as this user (systemd User=, the cron user field; default root)
          group: automation                # systemd Group= (not available with cron)
          persistent: true                 # catch up a run missed while the machine was off (systemd only; default true)
          timeout: 2h                      # seconds or a time span; TimeoutStartSec= / `timeout` in cron
          log_file: /var/log/acme.log      # cron: where output is appended (default /var/log/polycrate/<ws>-<wf>.log,
                                           # for a user other than root <root>/.polycrate/logs/cron-<wf>.log);
                                           # systemd: output goes to the journal unless this is set

In the short form a string with five space-separated fields (or an ``@daily``-style alias) is a cron
expression; anything else is an OnCalendar expression (OnCalendar has at most four parts).

What gets written (``polycrate schedules apply``):

- systemd (default ``/etc/systemd/system``): ``polycrate-<workspace>-<workflow>.service`` (``Type=oneshot``,
  ``WorkingDirectory`` = workspace root, ``ExecStart`` = this polycrate executable with ``--workspace ROOT
  workflows run --launched-by systemd:UNIT.service NAME``: the record names the unit) and a ``.timer`` with
  ``OnCalendar``, ``AccuracySec=1s``, ``Persistent``, ``RandomizedDelaySec``.
- cron (``--cron``, default ``/etc/cron.d``): one file ``polycrate-<workspace>-<workflow>`` (dots become
  underscores: cron ignores file names with dots) running the same command, output appended to the log file.

A scheduled run never waits for input: ``--force`` is never added, so a workflow with a prompt fails its
scheduled run with a clear message (the core refuses to prompt without a terminal) and a non-zero exit.
Overlapping runs need no extra locking: the run itself takes the workflow's lock.

Every file we write starts with a header naming the workspace root; apply only ever rewrites or removes
files carrying that header with the same root, never anything else.

Where things are: ``spec`` (the declared schedule, checked: ``parse_schedule``, ``workspace_schedules``),
``times`` (time spans, time zones), ``cron``, ``oncalendar`` (systemd-analyze and our fallback parser),
``render`` (unit and cron files, the one escaper), ``install`` (what is installed, plan, apply),
``unattended`` (what keeps a scheduled workflow from running unattended: prompts, required launch values).
"""
from __future__ import annotations

# What this package offers, and the module each name lives in: loaded on first use (PEP 562), so
# that checking a schedule while a workspace loads (schema: cron, oncalendar, times) does not import
# the unit rendering and installing (`workflows list` on a scheduled workspace).
_WHERE = {
    **dict.fromkeys((
        "cron_next", "cron_to_calendar", "looks_like_cron", "validate_cron",
    ), "polycrate.timespec.cron"),
    **dict.fromkeys((
        "CRON_DEST", "SYSTEMD_DEST", "FileChange", "Installed", "InstalledState", "ScheduleEntry", "SchedulePlan",
        "applied_state", "apply_plan", "default_dest", "installed", "installed_in", "installed_states",
        "listed_dests", "marker_of", "one_off_schedule",
        "plan_schedules", "read_marker", "remove_one_off",
    ), "install"),
    **dict.fromkeys((
        "CalendarSpec", "analyze_calendar", "calendar_next", "parse_calendar", "systemd_analyze",
        "validate_calendar",
    ), "polycrate.timespec.oncalendar"),
    **dict.fromkeys((
        "LOG_DIR", "cron_filename", "default_log_file", "executable_command", "render_cron",
        "render_systemd", "systemd_escape", "unit_basename",
    ), "render"),
    **dict.fromkeys((
        "ORIGIN_ONE_OFF", "ORIGIN_WORKSPACE", "SCHEDULE_KEYS", "Schedule", "iter_times", "next_runs",
        "parse_schedule", "prompts_of", "workspace_schedules",
    ), "spec"),
    **dict.fromkeys((
        "ScheduleError", "local_zone", "parse_timespan",
    ), "polycrate.timespec.times"),
    **dict.fromkeys((
        "unattended_problems", "unattended_refusal",
    ), "unattended"),
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CRON_DEST", "LOG_DIR", "ORIGIN_ONE_OFF", "ORIGIN_WORKSPACE", "SCHEDULE_KEYS", "SYSTEMD_DEST",
    "CalendarSpec", "FileChange", "Installed", "InstalledState", "Schedule", "ScheduleEntry", "ScheduleError", "SchedulePlan",
    "analyze_calendar", "applied_state", "apply_plan", "calendar_next", "cron_filename", "cron_next", "cron_to_calendar",
    "default_dest", "default_log_file", "executable_command", "installed", "installed_in", "installed_states", "iter_times",
    "listed_dests", "local_zone", "looks_like_cron", "marker_of", "next_runs", "one_off_schedule", "parse_calendar",
    "parse_schedule", "parse_timespan",
    "plan_schedules", "prompts_of", "read_marker", "remove_one_off", "render_cron", "render_systemd",
    "systemd_analyze", "systemd_escape", "unit_basename", "unattended_problems", "unattended_refusal",
    "validate_calendar", "validate_cron", "workspace_schedules",
]  # fmt: skip
