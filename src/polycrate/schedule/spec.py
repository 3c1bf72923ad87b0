"""The declared schedule: ``workflows[].schedule`` of workspace.poly checked into a ``Schedule``.

``parse_schedule`` and ``workspace_schedules`` are the schema check of that section.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Iterable

from polycrate.errors import ConfigError
from polycrate.schedule.cron import cron_next, looks_like_cron, validate_cron
from polycrate.schedule.oncalendar import (
    analyze_calendar,
    calendar_next,
    systemd_analyze,
    validate_calendar,
)
from polycrate.schedule.times import ScheduleError, local_zone, parse_timespan

SCHEDULE_KEYS = ("on_calendar", "cron", "randomized_delay", "user", "group", "persistent", "timeout", "log_file")

ORIGIN_WORKSPACE = "workspace"  # declared in workspace.poly: apply removes it when no longer declared
ORIGIN_ONE_OFF = "workflows-schedule"  # written by `workflows schedule`: apply leaves it alone


@dataclass(frozen=True)
class Schedule:
    workflow: str
    kind: str  # "on_calendar" | "cron"
    expression: str
    randomized_delay: int | None = None  # seconds
    user: str | None = None
    group: str | None = None
    persistent: bool = True
    persistent_set: bool = False  # the key was written (so a cron plan can say it has no effect)
    timeout: int | None = None  # seconds
    log_file: str | None = None
    line: int | None = None
    origin: str = ORIGIN_WORKSPACE


_USER_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})$")


def parse_schedule(
    raw: Any,
    workflow: str,
    path: Path | str | None = None,
    line: int | None = None,
    origin: str = ORIGIN_WORKSPACE,
) -> Schedule | None:
    """Validate ``workflows[].schedule`` (a string or a mapping) into a Schedule; None when absent.

    Every problem is a ConfigError naming ``path`` and the line of the offending key where known.
    """
    if raw is None:
        return None

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = line
        if key is not None and hasattr(raw, "line_of"):
            where = raw.line_of(key) or line
        return ConfigError(f"workflow '{workflow}': schedule: {message}", path, where)

    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise fail("empty expression")
        raw_map: dict[str, Any] = {"cron" if looks_like_cron(text) else "on_calendar": text}
    elif isinstance(raw, dict):
        raw_map = raw
        for key in raw_map:
            if key not in SCHEDULE_KEYS:
                raise fail(f"unknown key '{key}' (known: {', '.join(SCHEDULE_KEYS)})", key)
    else:
        raise fail(f"must be an OnCalendar/cron string or a mapping, not {type(raw).__name__}")

    kinds = [k for k in ("on_calendar", "cron") if raw_map.get(k) is not None]
    if len(kinds) != 1:
        raise fail("give exactly one of 'on_calendar' or 'cron'")
    kind = kinds[0]
    expression = raw_map[kind]
    if not isinstance(expression, str) or not expression.strip():
        raise fail(f"'{kind}' must be a non-empty string", kind)
    expression = " ".join(expression.split())
    try:
        if kind == "cron":
            validate_cron(expression)
        else:
            validate_calendar(expression)
    except ScheduleError as exc:
        raise fail(str(exc), kind) from None

    def span(key: str, minimum: int) -> int | None:
        value = raw_map.get(key)
        if value is None:
            return None
        try:
            seconds = parse_timespan(value)
        except ScheduleError as exc:
            raise fail(f"'{key}': {exc}", key) from None
        if seconds < minimum:
            raise fail(f"'{key}' must be at least {minimum} seconds", key)
        return seconds

    def name(key: str) -> str | None:
        value = raw_map.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _USER_RE.match(value):
            raise fail(f"'{key}' must be a user/group name or number, not {value!r}", key)
        return value

    persistent = raw_map.get("persistent", True)
    if not isinstance(persistent, bool):
        raise fail("'persistent' must be true or false", "persistent")
    log_file = raw_map.get("log_file")
    if log_file is not None:
        if not isinstance(log_file, str) or not log_file.startswith("/") or has_control(log_file):
            raise fail("'log_file' must be an absolute path", "log_file")
    return Schedule(
        workflow=workflow,
        kind=kind,
        expression=expression,
        randomized_delay=span("randomized_delay", 0),
        user=name("user"),
        group=name("group"),
        persistent=persistent,
        persistent_set="persistent" in raw_map,
        timeout=span("timeout", 1),
        log_file=log_file,
        line=line,
        origin=origin,
    )


def workspace_schedules(ws) -> list[Schedule]:
    """Every schedule declared in the workspace, validated (ConfigError on the first bad one)."""
    result = []
    for workflow in ws.workflows.values():
        raw = workflow.schedule
        line = workflow.line
        if hasattr(workflow.raw, "line_of"):
            line = workflow.raw.line_of("schedule") or line
        schedule = parse_schedule(raw, workflow.name, ws.file, line)
        if schedule is not None:
            result.append(schedule)
    return result


def prompts_of(ws, workflow_name: str) -> list[str]:
    """Where a workflow would prompt: a scheduled run of it fails there (no terminal, no --force)."""
    workflow = ws.workflows[workflow_name]
    found = []
    if workflow.prompt is not None:
        found.append(f"workflow '{workflow.name}'")
    for step in workflow.steps:
        block = ws.blocks.get(step.block)
        action = block.actions.get(step.action) if block else None
        if action is not None and action.prompt is not None:
            found.append(f"step '{step.name}' ({step.block}.{step.action})")
    return found


def next_runs(schedule: Schedule, now: datetime | None = None, count: int = 3, tz: tzinfo | None = None) -> list[datetime]:
    """The next ``count`` run times (aware datetimes) of a schedule after ``now`` (default: the clock)."""
    now = now or datetime.now(timezone.utc)
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


def has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)
