"""The declared schedules of a workspace and their next run times.

``workflows[].schedule`` is checked into a ``model.Schedule`` where the schema is checked
(``schema.parse_schedule``, re-exported here); this module reads the result.
"""
from __future__ import annotations

from datetime import datetime, tzinfo, UTC
from collections.abc import Iterable

from polycrate.config.model import ORIGIN_ONE_OFF, ORIGIN_WORKSPACE, Schedule
from polycrate.timespec.cron import cron_next
from polycrate.timespec.oncalendar import analyze_calendar, calendar_next, systemd_analyze
from polycrate.timespec.times import local_zone
from polycrate.config.schema import SCHEDULE_KEYS, has_control, parse_schedule

__all__ = ["ORIGIN_ONE_OFF", "ORIGIN_WORKSPACE", "SCHEDULE_KEYS", "Schedule", "has_control", "iter_times",
           "next_runs", "parse_schedule", "prompts_of", "workspace_schedules"]


def workspace_schedules(ws) -> list[Schedule]:
    """Every schedule declared in the workspace (checked when the workspace loaded)."""
    return [w.timer for w in ws.workflows.values() if w.timer is not None]


def prompts_of(ws, workflow_name: str) -> list[str]:
    """Where a workflow would prompt (the workflow, a step, an action, an on_failure step): a scheduled run of it
    fails there (no terminal, no --force). The same walk as the refusals (``unattended``)."""
    from polycrate.schedule.unattended import PROMPT, unattended_problems

    return [p.message for p in unattended_problems(ws, workflow_name) if p.kind == PROMPT]


def next_runs(schedule: Schedule, now: datetime | None = None, count: int = 3, tz: tzinfo | None = None) -> list[datetime]:
    """The next ``count`` run times (aware datetimes) of a schedule after ``now`` (default: the clock)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if schedule.kind == "cron":
        return cron_next(schedule.expression, now, count, tz)
    if systemd_analyze():
        return analyze_calendar(schedule.expression, now, count, tz)[1]
    return calendar_next(schedule.expression, now, count, tz)


def iter_times(times: Iterable[datetime], tz: tzinfo | None = None) -> list[str]:
    """ISO 8601 strings in local time (for JSON and text output)."""
    zone = tz or local_zone()
    return [t.astimezone(zone).isoformat() for t in times]
