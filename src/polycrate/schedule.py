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
          log_file: /var/log/acme.log      # cron: where output is appended (default /var/log/polycrate/<ws>-<wf>.log);
                                           # systemd: output goes to the journal unless this is set

In the short form a string with five space-separated fields (or an ``@daily``-style alias) is a cron
expression; anything else is an OnCalendar expression (OnCalendar has at most four parts).

What gets written (``polycrate schedules apply``):

- systemd (default ``/etc/systemd/system``): ``polycrate-<workspace>-<workflow>.service`` (``Type=oneshot``,
  ``WorkingDirectory`` = workspace root, ``ExecStart`` = this polycrate executable with ``--workspace ROOT
  workflows run NAME``) and a ``.timer`` with ``OnCalendar``, ``Persistent``, ``RandomizedDelaySec``.
- cron (``--cron``, default ``/etc/cron.d``): one file ``polycrate-<workspace>-<workflow>`` (dots become
  underscores: cron ignores file names with dots) running the same command, output appended to the log file.

A scheduled run never waits for input: ``--force`` is never added, so a workflow with a prompt fails its
scheduled run with a clear message (the core refuses to prompt without a terminal) and a non-zero exit.
Overlapping runs need no extra locking: the run itself takes the workflow's lock.

Every file we write starts with a header naming the workspace root; apply only ever rewrites or removes
files carrying that header with the same root, never anything else.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from polycrate.atomicfile import write_atomic
from polycrate.errors import ConfigError, NotFoundError, PolycrateError

SYSTEMD_DEST = Path("/etc/systemd/system")
CRON_DEST = Path("/etc/cron.d")
LOG_DIR = "/var/log/polycrate"
SCHEDULE_KEYS = ("on_calendar", "cron", "randomized_delay", "user", "group", "persistent", "timeout", "log_file")

ORIGIN_WORKSPACE = "workspace"  # declared in workspace.poly: apply removes it when no longer declared
ORIGIN_ONE_OFF = "workflows-schedule"  # written by `workflows schedule`: apply leaves it alone

_MARK = "# polycrate-managed: schedule"
_HEADER_KEY = re.compile(r"^# (polycrate-[a-z-]+): (.*)$")


class ScheduleError(ValueError):
    """An expression or value is invalid; turned into a ConfigError with file and line by the caller."""


# --- the declared schedule ------------------------------------------------------------------


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
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def looks_like_cron(expression: str) -> bool:
    return expression.startswith("@") or len(expression.split()) == 5


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
        if not isinstance(log_file, str) or not log_file.startswith("/") or _has_control(log_file):
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


# --- time spans -----------------------------------------------------------------------------

_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "µs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2629800, "month": 2629800, "months": 2629800,
    "y": 31557600, "year": 31557600, "years": 31557600,
}  # fmt: skip
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-zµ]*)")


def parse_timespan(value: Any) -> int:
    """Seconds from an int or a systemd time span ("90", "15m", "1h 30min", "2 weeks"); whole seconds only."""
    if isinstance(value, bool):
        raise ScheduleError("expected seconds or a time span like '15m'")
    if isinstance(value, int):
        if value < 0:
            raise ScheduleError("must not be negative")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError("expected seconds or a time span like '15m'")
    text, total, pos = value.strip(), 0.0, 0
    while pos < len(text):
        match = _SPAN_PART.match(text, pos)
        if not match or match.end() == pos:
            raise ScheduleError(f"invalid time span {value!r}")
        number, unit = match.groups()
        if unit not in _SPAN_UNITS and unit != "":
            raise ScheduleError(f"invalid time span {value!r}: unknown unit '{unit}'")
        total += float(number) * _SPAN_UNITS.get(unit, 1)
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if abs(total - round(total)) > 1e-6:
        raise ScheduleError(f"time span {value!r} is not a whole number of seconds")
    return int(round(total))


# --- cron -----------------------------------------------------------------------------------

_CRON_FIELDS = (  # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_CRON_ITEM = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def validate_cron(expression: str) -> str:
    """Check a five-field cron expression against what Debian's cron accepts; the 5-field form back."""
    if expression.startswith("@"):
        if expression not in _ALIASES:
            raise ScheduleError(
                f"invalid cron expression {expression!r}: known aliases are {', '.join(sorted(_ALIASES))}"
            )
        return _ALIASES[expression]
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS):
        if text.lower() in names:  # crontab(5): names only as a single value, not in ranges or lists
            continue
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            if not match:
                raise ScheduleError(f"invalid cron expression {expression!r}: bad {what} field '{text}'")
            base, step = match.groups()
            numbers = [] if base == "*" else [int(n) for n in base.split("-")]
            if any(n < low or n > high for n in numbers):
                raise ScheduleError(
                    f"invalid cron expression {expression!r}: {what} '{item}' is out of range {low}-{high}"
                )
            if len(numbers) == 2 and numbers[0] > numbers[1]:
                raise ScheduleError(f"invalid cron expression {expression!r}: {what} range '{item}' is backwards")
            if step is not None and int(step) == 0:
                raise ScheduleError(f"invalid cron expression {expression!r}: {what} step must not be 0")
    return expression


def cron_next(expression: str, now: datetime, count: int = 3, tz: tzinfo | None = None) -> list[datetime]:
    """The next ``count`` times (aware, in ``tz``, default local time as cron uses) after ``now``."""
    from croniter import croniter  # lazy: only schedules need it

    fields = validate_cron(expression)
    zone = tz or local_zone()
    iterator = croniter(fields, now.astimezone(zone))
    return [iterator.get_next(datetime) for _ in range(count)]


def cron_to_calendar(expression: str) -> str:
    """The OnCalendar form of a cron expression, so a cron schedule can become a systemd timer."""
    fields = validate_cron(expression).split()
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise ScheduleError(
            f"cron expression {expression!r} runs on a day of the month OR a weekday, which a systemd "
            "timer cannot express; use on_calendar, or write it with --cron"
        )

    def convert(text: str, names: dict[str, int]) -> str:
        if text.lower() in names:
            return f"{names[text.lower()]:02d}"
        items = []
        for item in text.split(","):
            base, _, step = item.partition("/")
            if base == "*":
                base = "00" if step else "*"
            else:
                base = "..".join(f"{int(n):02d}" for n in base.split("-"))
            items.append(base + (f"/{step}" if step else ""))
        return ",".join(items)

    months = _CRON_FIELDS[3][3]
    calendar = f"*-{convert(month, months)}-{convert(dom, {})} {convert(hour, {})}:{convert(minute, {})}:00"
    if dow == "*":
        return calendar
    days: set[int] = set()  # cron: 0 and 7 are Sunday
    if dow.lower() in _CRON_FIELDS[4][3]:
        days.add(_CRON_FIELDS[4][3][dow.lower()])
    else:
        for item in dow.split(","):
            base, _, step = item.partition("/")
            if base == "*":
                first, last = 0, 7
            elif "-" in base:
                first, last = (int(n) for n in base.split("-"))
            else:
                first = int(base)
                last = 7 if step else first
            days.update(range(first, last + 1, int(step) if step else 1))
    names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    ordered = [d for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun") if d in {names[n] for n in days}]
    return ",".join(ordered) + " " + calendar


# --- systemd OnCalendar ---------------------------------------------------------------------

_ENV_ANALYZE = "POLYCRATE_SYSTEMD_ANALYZE"  # path of systemd-analyze; empty disables it (tests of our parser)


@lru_cache(maxsize=None)
def _analyze_binary(setting: str | None) -> str | None:
    binary = setting if setting is not None else shutil.which("systemd-analyze")
    if not binary:
        return None
    try:
        probe = subprocess.run(
            [binary, "calendar", "--iterations=1", "--base-time=@0", "daily"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return binary if probe.returncode == 0 else None


def systemd_analyze() -> str | None:
    """The path of a working ``systemd-analyze`` (calendar with --base-time), else None."""
    return _analyze_binary(os.environ.get(_ENV_ANALYZE))


_ELAPSE = re.compile(r"^\s*(Next elapse|Iter\. #\d+|\(in UTC\)):\s+(.*)$")
_UTC_STAMP = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$")


def analyze_calendar(
    expression: str, now: datetime, count: int = 3, tz: tzinfo | None = None, binary: str | None = None
) -> tuple[str, list[datetime]]:
    """``systemd-analyze calendar``: (normalized form, next times in UTC). ScheduleError if it refuses."""
    binary = binary or systemd_analyze()
    if binary is None:
        raise RuntimeError("systemd-analyze is not available")
    env = dict(os.environ)
    key = _zone_key(tz)
    if key:
        env["TZ"] = key
    base = int(now.timestamp())
    proc = subprocess.run(
        [binary, "calendar", f"--iterations={count}", f"--base-time=@{base}", "--", expression],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    if proc.returncode != 0:
        raise ScheduleError(f"invalid OnCalendar expression {expression!r} (systemd-analyze refuses it)")
    normalized = expression
    stamps: list[str] = []
    for text in proc.stdout.splitlines():
        if text.strip().startswith("Normalized form:"):
            normalized = text.split(":", 1)[1].strip()
            continue
        match = _ELAPSE.match(text)
        if not match:
            continue
        label, value = match.groups()
        if label == "(in UTC)":
            stamps[-1] = value  # the UTC form of the line before
        else:
            stamps.append(value)
    times = []
    for value in stamps:
        stamp = _UTC_STAMP.match(value.strip())
        if stamp is None:
            if value.strip() == "never":
                break
            raise RuntimeError(f"cannot read systemd-analyze output: {value!r}")
        times.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc))
    return normalized, times


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
}
_COMPONENT = re.compile(r"^(\*|\d+)(?:\.\.(\d+))?(?:/(\d+))?$")


@dataclass(frozen=True)
class CalendarSpec:
    """The common OnCalendar subset, parsed: each field a sorted tuple of allowed values (None = any)."""

    weekdays: frozenset[int] | None  # 0 = Monday
    years: tuple[int, ...] | None
    months: tuple[int, ...]
    days: tuple[int, ...]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]
    zone: tzinfo | None = None  # an explicit time zone at the end of the expression


def _component(text: str, low: int, high: int, what: str, year: bool = False) -> tuple[int, ...] | None:
    values: set[int] = set()
    for item in text.split(","):
        match = _COMPONENT.match(item)
        if not match:
            raise ScheduleError(f"bad {what} '{text}'")
        start, end, step = match.groups()
        if start == "*":
            if end is not None or step is not None:
                raise ScheduleError(f"bad {what} '{text}'")  # systemd refuses '*/N'
            if text != "*":
                raise ScheduleError(f"bad {what} '{text}'")
            return None
        first = int(start)
        last = int(end) if end is not None else None
        if year:  # two-digit years, as systemd reads them
            first = first + (2000 if first < 70 else 1900) if first < 100 else first
            last = last + (2000 if last < 70 else 1900) if last is not None and last < 100 else last
        if not low <= first <= high or (last is not None and not first <= last <= high):
            raise ScheduleError(f"{what} '{item}' is out of range {low}..{high}")
        if step is not None and int(step) == 0:
            raise ScheduleError(f"{what} step must not be 0")
        stop = last if last is not None else (high if step is not None else first)
        values.update(range(first, stop + 1, int(step) if step else 1))
    return tuple(sorted(values))


def _parse_weekdays(text: str) -> frozenset[int]:
    def day(name: str) -> int:
        low = name.lower()
        if low in _WEEKDAYS:
            return _WEEKDAYS.index(low)
        if low in _WEEKDAY_FULL:
            return _WEEKDAY_FULL.index(low)
        raise ScheduleError(f"unknown weekday '{name}'")

    result: set[int] = set()
    for item in text.split(","):
        if not item:
            continue
        parts = re.split(r"\.\.|-", item)
        if len(parts) == 1:
            result.add(day(parts[0]))
        elif len(parts) == 2:
            first, last = day(parts[0]), day(parts[1])
            if first > last:
                raise ScheduleError(f"weekday range '{item}' goes backwards (the week starts on Monday)")
            result.update(range(first, last + 1))
        else:
            raise ScheduleError(f"bad weekday range '{item}'")
    if not result:
        raise ScheduleError("empty weekday list")
    return frozenset(result)


def _zone_named(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return timezone.utc
    if not re.match(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)+$", name):
        return None  # only Area/City names: "Mon" or "EST" are not taken for zones
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_calendar(expression: str) -> CalendarSpec:
    """Our parser of the common OnCalendar subset (used where systemd-analyze is missing).

    Supported: weekday names/lists/ranges; ``[YEAR-]MONTH-DAY``; ``HH:MM[:SS]``; ``*``, lists, ``a..b``
    ranges and ``/step`` in every numeric field; the shorthands (``daily``, ``weekly``, ``hourly``,
    ``monthly``, ...); a trailing ``UTC`` or Area/City time zone. Not supported: ``~`` (last days of the
    month), fractional seconds, ``@epoch``.
    """
    tokens = expression.split()
    if not tokens:
        raise ScheduleError("empty expression")
    zone = None
    if len(tokens) > 1:
        zone = _zone_named(tokens[-1])
        if zone is not None:
            tokens = tokens[:-1]
    if len(tokens) == 1 and tokens[0].lower() in _SHORTHANDS:
        tokens = _SHORTHANDS[tokens[0].lower()].split()
    if len(tokens) > 3:
        raise ScheduleError("too many parts (expected [WEEKDAYS] [DATE] [TIME] [TIMEZONE])")

    weekdays = None
    if tokens and re.match(r"^[A-Za-z]", tokens[0]):
        weekdays = _parse_weekdays(tokens.pop(0))
    date_text = time_text = None
    for token in tokens:
        if ":" in token and time_text is None:
            time_text = token
        elif ":" not in token and time_text is None and date_text is None and ("-" in token or "~" in token):
            date_text = token
        else:
            raise ScheduleError(f"unexpected '{token}'")
    if weekdays is None and date_text is None and time_text is None:
        raise ScheduleError("nothing to schedule")

    years: tuple[int, ...] | None = None
    months: tuple[int, ...] | None = None
    days: tuple[int, ...] | None = None
    if date_text is not None:
        if "~" in date_text:
            raise ScheduleError("'~' (last days of the month) needs systemd-analyze to check")
        parts = date_text.split("-")
        if len(parts) == 3:
            years = _component(parts[0], 1970, 2199, "year", year=True)
            parts = parts[1:]
        if len(parts) != 2:
            raise ScheduleError(f"bad date '{date_text}' (expected [YEAR-]MONTH-DAY)")
        months = _component(parts[0], 1, 12, "month")
        days = _component(parts[1], 1, 31, "day")

    hours = minutes = None
    seconds: tuple[int, ...] | None = (0,)
    if time_text is None:
        hours, minutes = (0,), (0,)
    else:
        parts = time_text.split(":")
        if len(parts) not in (2, 3):
            raise ScheduleError(f"bad time '{time_text}' (expected HH:MM[:SS])")
        if len(parts) == 3 and "." in parts[2]:
            raise ScheduleError("fractional seconds need systemd-analyze to check")
        hours = _component(parts[0], 0, 23, "hour")
        minutes = _component(parts[1], 0, 59, "minute")
        if len(parts) == 3:
            seconds = _component(parts[2], 0, 59, "second")

    def every(values, low, high):
        return values if values is not None else tuple(range(low, high + 1))

    return CalendarSpec(
        weekdays=weekdays,
        years=years,
        months=every(months, 1, 12),
        days=every(days, 1, 31),
        hours=every(hours, 0, 23),
        minutes=every(minutes, 0, 59),
        seconds=every(seconds, 0, 59),
        zone=zone,
    )


def calendar_next(expression: str, now: datetime, count: int = 3, tz: tzinfo | None = None) -> list[datetime]:
    """Our own next-elapse computation for the OnCalendar subset: the next ``count`` times (UTC) after ``now``."""
    import calendar as _calendar

    spec = parse_calendar(expression)
    zone = spec.zone or tz or local_zone()
    base = now.astimezone(zone)
    base_utc = now.astimezone(timezone.utc)
    found: list[datetime] = []
    for year in range(base.year, 2200):
        if spec.years is not None and year not in spec.years:
            continue
        for month in spec.months:
            if (year, month) < (base.year, base.month):
                continue
            last_day = _calendar.monthrange(year, month)[1]
            for day in spec.days:
                if day > last_day or (year, month, day) < (base.year, base.month, base.day):
                    continue
                if spec.weekdays is not None and _calendar.weekday(year, month, day) not in spec.weekdays:
                    continue
                for hour in spec.hours:
                    for minute in spec.minutes:
                        for second in spec.seconds:
                            moment = datetime(year, month, day, hour, minute, second, tzinfo=zone)
                            utc = moment.astimezone(timezone.utc)
                            if utc.astimezone(zone).replace(tzinfo=None) != moment.replace(tzinfo=None):
                                continue  # inside a DST gap: the time does not exist, systemd skips it
                            if utc <= base_utc or (found and utc <= found[-1]):
                                continue
                            found.append(utc)
                            if len(found) == count:
                                return found
    return found


def validate_calendar(expression: str) -> None:
    """Refuse an OnCalendar expression systemd would refuse (or that never elapses)."""
    now = datetime.now(timezone.utc)
    if systemd_analyze():
        _, times = analyze_calendar(expression, now, 1)
    else:
        try:
            times = calendar_next(expression, now, 1)
        except ScheduleError as exc:
            raise ScheduleError(f"invalid OnCalendar expression {expression!r}: {exc}") from None
    if not times:
        raise ScheduleError(f"OnCalendar expression {expression!r} never elapses")


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


def local_zone() -> tzinfo:
    """The machine's time zone (what cron and systemd use), DST-aware where possible."""
    key = os.environ.get("TZ", "").lstrip(":")
    if key:
        zone = _zone_named(key) or (timezone.utc if key in ("UTC", "Etc/UTC", "UTC0") else None)
        if zone is not None:
            return zone
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except OSError:
        return datetime.now().astimezone().tzinfo or timezone.utc


def _zone_key(tz: tzinfo | None) -> str | None:
    if tz is None:
        return None
    if tz is timezone.utc:
        return "UTC"
    key = getattr(tz, "key", None)
    return key if key and key != "localtime" else None


# --- what gets written ----------------------------------------------------------------------


def executable_command() -> list[str]:
    """How a scheduled run calls this polycrate: POLYCRATE_EXECUTABLE, else the running script, else PATH.

    The path is made absolute but symlinks are kept: /usr/local/bin/polycrate pointing into a venv keeps
    working after an upgrade repoints the link.
    """
    override = os.environ.get("POLYCRATE_EXECUTABLE")
    if override:
        return [os.path.abspath(override)]
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and os.path.basename(argv0) == "polycrate" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    found = shutil.which("polycrate")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "polycrate"]  # `python -m polycrate` in a checkout


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def unit_basename(workspace: str, workflow: str) -> str:
    """``polycrate-<workspace>-<workflow>``, with anything a unit name cannot hold replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9:_.-]", "-", f"polycrate-{workspace}-{workflow}")


def cron_filename(workspace: str, workflow: str) -> str:
    """Like the unit name, but cron (run-parts rules) ignores names with anything but [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"polycrate-{workspace}-{workflow}")


def default_log_file(workspace: str, workflow: str) -> str:
    return f"{LOG_DIR}/{workspace}-{workflow}.log"


def _header(root: Path, workflow: str, origin: str) -> str:
    return (
        "# Written by polycrate (polycrate schedules apply); changes here are overwritten.\n"
        f"{_MARK}\n"
        f"# polycrate-workspace-root: {root}\n"
        f"# polycrate-workflow: {workflow}\n"
        f"# polycrate-origin: {origin}\n"
    )


def _systemd_escape(value: str) -> str:
    """A value for a unit file: specifiers ('%') and variables ('$') taken literally."""
    return value.replace("%", "%%")


def _systemd_word(word: str) -> str:
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_env(assignment: str) -> str:
    value = assignment.replace("%", "%%")  # Environment= expands specifiers but not $VARIABLES
    if not re.search(r"[\s\"'\\]", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_command(root: Path, workflow: str, command: list[str]) -> list[str]:
    # no --force: a scheduled run must never answer prompts on the user's behalf
    return [*command, "--workspace", str(root), "workflows", "run", workflow]


def _path_env(command: list[str]) -> str:
    folder = os.path.dirname(command[0])
    default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return default if folder in default.split(":") else f"{folder}:{default}"


def render_systemd(workspace: str, root: Path, schedule: Schedule, command: list[str]) -> dict[str, str]:
    """{file name: content} of the service and timer units for one schedule."""
    if schedule.kind == "cron":
        try:
            on_calendar = cron_to_calendar(schedule.expression)
        except ScheduleError as exc:
            raise ConfigError(f"workflow '{schedule.workflow}': schedule: {exc}") from None
    else:
        on_calendar = schedule.expression
    name = unit_basename(workspace, schedule.workflow)
    header = _header(root, schedule.workflow, schedule.origin)
    argv = _run_command(root, schedule.workflow, command)
    service = [
        header,
        "[Unit]",
        f"Description=Polycrate workflow {schedule.workflow} (workspace {workspace})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_systemd_escape(str(root))}",
        "Environment=" + _systemd_env(f"PATH={_path_env(command)}"),
        "ExecStart=" + " ".join(_systemd_word(w) for w in argv),
    ]
    if schedule.user:
        service.append(f"User={schedule.user}")
    if schedule.group:
        service.append(f"Group={schedule.group}")
    if schedule.timeout:
        service.append(f"TimeoutStartSec={schedule.timeout}")
    if schedule.log_file:
        service.append(f"StandardOutput=append:{_systemd_escape(schedule.log_file)}")
        service.append("StandardError=inherit")
    timer = [
        header,
        "[Unit]",
        f"Description=Run polycrate workflow {schedule.workflow} (workspace {workspace}) on "
        + _systemd_escape(schedule.expression),
        "",
        "[Timer]",
        f"OnCalendar={_systemd_escape(on_calendar)}",
        f"Persistent={'true' if schedule.persistent else 'false'}",
    ]
    if schedule.randomized_delay:
        timer.append(f"RandomizedDelaySec={schedule.randomized_delay}")
    timer += ["", "[Install]", "WantedBy=timers.target"]
    return {f"{name}.service": "\n".join(service) + "\n", f"{name}.timer": "\n".join(timer) + "\n"}


def _cron_quote(word: str) -> str:
    return shlex.quote(word).replace("%", "\\%")  # an unescaped % ends a cron command


def render_cron(workspace: str, root: Path, schedule: Schedule, command: list[str]) -> dict[str, str]:
    """{file name: content} of the /etc/cron.d file for one schedule."""
    if schedule.kind != "cron":
        raise ConfigError(
            f"workflow '{schedule.workflow}': schedule: an OnCalendar expression cannot be written for cron; "
            "use a cron expression (schedule.cron) or systemd timers (without --cron)",
        )
    if schedule.group:
        raise ConfigError(
            f"workflow '{schedule.workflow}': schedule: 'group' is not available with cron "
            "(cron runs as the user's primary group); remove it or use systemd timers",
        )
    log_file = schedule.log_file or default_log_file(workspace, schedule.workflow)
    run = " ".join(_cron_quote(w) for w in _run_command(root, schedule.workflow, command))
    if schedule.timeout:
        run = f"timeout {schedule.timeout} {run}"
    parts = []
    if schedule.randomized_delay:
        parts.append(f"sleep $(shuf -i 0-{schedule.randomized_delay} -n 1)")
    parts += [
        f"mkdir -p {_cron_quote(os.path.dirname(log_file))}",
        f"cd {_cron_quote(str(root))}",
        f"{run} >> {_cron_quote(log_file)} 2>&1",
    ]
    entry = f"{schedule.expression} {schedule.user or 'root'} " + " && ".join(parts)
    content = (
        _header(root, schedule.workflow, schedule.origin)
        + "SHELL=/bin/sh\n"
        + f"PATH={_path_env(command)}\n"
        + entry
        + "\n"
    )
    return {cron_filename(workspace, schedule.workflow): content}


# --- what is installed ----------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A file in a destination folder that carries our header."""

    path: Path
    workspace_root: str
    workflow: str
    origin: str
    expression: str | None  # OnCalendar= of a timer, the time fields of a cron entry

    @property
    def kind(self) -> str:
        if self.path.suffix == ".service":
            return "service"
        if self.path.suffix == ".timer":
            return "timer"
        return "cron"


def read_marker(path: Path) -> Installed | None:
    """Our header of ``path`` (None when the file is not ours or cannot be read)."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    keys: dict[str, str] = {}
    lines = text.splitlines()
    for line in lines:
        if not line.startswith("#"):
            break
        match = _HEADER_KEY.match(line)
        if match:
            keys[match.group(1)] = match.group(2)
    if keys.get("polycrate-managed") != "schedule" or "polycrate-workspace-root" not in keys:
        return None
    expression = None
    for line in lines:
        if line.startswith("OnCalendar="):
            expression = line.split("=", 1)[1].replace("%%", "%")
        elif path.suffix or not line.strip() or line.startswith("#"):
            continue
        elif "=" not in line.split(" ", 1)[0]:  # a cron entry, not a VARIABLE=value line
            fields = line.split()
            expression = fields[0] if fields[0].startswith("@") else " ".join(fields[:5])
    return Installed(
        path=path,
        workspace_root=keys["polycrate-workspace-root"],
        workflow=keys.get("polycrate-workflow", ""),
        origin=keys.get("polycrate-origin", ORIGIN_WORKSPACE),
        expression=expression,
    )


def installed(dest: Path) -> list[Installed]:
    """Every file of ours in ``dest`` (only names starting with ``polycrate-`` are read)."""
    if not dest.is_dir():
        return []
    found = []
    for path in sorted(dest.glob("polycrate-*")):
        marker = read_marker(path)
        if marker is not None:
            found.append(marker)
    return found


# --- plan and apply -------------------------------------------------------------------------


@dataclass
class FileChange:
    path: Path
    status: str  # "create" | "update" | "unchanged" | "remove" | "keep" (a one-off we leave alone)
    content: str | None = None
    workflow: str = ""


@dataclass
class ScheduleEntry:
    schedule: Schedule
    next_runs: list[datetime]
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass
class SchedulePlan:
    workspace: str
    root: Path
    dest: Path
    mode: str  # "systemd" | "cron"
    entries: list[ScheduleEntry]
    changes: list[FileChange]
    removes_all_others: bool = True  # False for the one-off form: it only touches its own workflow

    @property
    def timers(self) -> list[str]:
        return [p for e in self.entries for p in e.files if p.endswith(".timer")]

    @property
    def removed_timers(self) -> list[str]:
        return [c.path.name for c in self.changes if c.status == "remove" and c.path.suffix == ".timer"]

    def enable_command(self) -> str | None:
        if self.mode != "systemd":
            return None
        if self.timers:
            return "systemctl daemon-reload && systemctl enable --now " + " ".join(self.timers)
        if self.removed_timers:
            return "systemctl daemon-reload"
        return None

    def stop_command(self) -> str | None:
        if self.mode == "systemd" and self.removed_timers:
            return "systemctl stop " + " ".join(self.removed_timers)
        return None


def default_dest(cron: bool) -> Path:
    return CRON_DEST if cron else SYSTEMD_DEST


def plan_schedules(
    ws,
    dest: Path | None = None,
    cron: bool = False,
    now: datetime | None = None,
    command: list[str] | None = None,
    schedules: list[Schedule] | None = None,
    only_workflow: str | None = None,
) -> SchedulePlan:
    """What apply would write and remove. Validates every schedule first; writes nothing.

    ``schedules``/``only_workflow`` serve the one-off form (``workflows schedule NAME``): only that
    workflow's files are touched and nothing else is removed.
    """
    root = Path(ws.root).resolve()
    if _has_control(str(root)):
        raise ConfigError("the workspace path contains control characters; cannot schedule it", root)
    dest = Path(dest) if dest is not None else default_dest(cron)
    mode = "cron" if cron else "systemd"
    if schedules is None:
        schedules = workspace_schedules(ws)
    command = command or executable_command()
    render = render_cron if cron else render_systemd

    entries: list[ScheduleEntry] = []
    wanted: dict[str, tuple[str, str]] = {}  # file name -> (content, workflow)
    for schedule in schedules:
        try:
            files = render(ws.name, root, schedule, command)
        except ConfigError as exc:
            raise ConfigError(exc.message, ws.file, schedule.line) from None
        for name, content in files.items():
            if name in wanted:
                raise ConfigError(
                    f"workflows '{wanted[name][1]}' and '{schedule.workflow}' both map to the file name "
                    f"'{name}'; rename one of them",
                    ws.file,
                    schedule.line,
                )
            wanted[name] = (content, schedule.workflow)
        notes = []
        prompts = prompts_of(ws, schedule.workflow) if schedule.workflow in ws.workflows else []
        if prompts:
            notes.append(
                "prompts in " + ", ".join(prompts) + ": a scheduled run never answers prompts, so it will fail"
            )
        if cron and schedule.persistent_set and schedule.persistent:
            notes.append("'persistent' has no effect with cron: a run missed while the machine was off is skipped")
        entries.append(ScheduleEntry(schedule, next_runs(schedule, now), files, notes))

    ours = {m.path.name: m for m in installed(dest)}
    changes: list[FileChange] = []
    for name, (content, workflow) in wanted.items():
        path = dest / name
        marker = ours.get(name)
        if path.exists() or path.is_symlink():
            if marker is None:
                raise PolycrateError(f"{path} exists and was not written by polycrate; refusing to overwrite it")
            if marker.workspace_root != str(root):
                raise PolycrateError(
                    f"{path} belongs to the workspace at {marker.workspace_root}; a workspace named "
                    f"'{ws.name}' there and here cannot both schedule '{workflow}' (rename one)"
                )
            try:
                same = path.read_bytes() == content.encode("utf-8")
            except OSError as exc:
                raise PolycrateError(f"cannot read {path}: {exc.strerror}") from None
            changes.append(FileChange(path, "unchanged" if same else "update", content, workflow))
        else:
            changes.append(FileChange(path, "create", content, workflow))
    for name, marker in ours.items():
        if name in wanted or marker.workspace_root != str(root):
            continue
        if only_workflow is not None:
            continue  # the one-off form never removes anything else
        status = "keep" if marker.origin == ORIGIN_ONE_OFF else "remove"
        changes.append(FileChange(marker.path, status, None, marker.workflow))
    return SchedulePlan(ws.name, root, dest, mode, entries, changes, only_workflow is None)


def apply_plan(plan: SchedulePlan) -> SchedulePlan:
    """Write what changed (atomically: temp file + rename) and remove what is no longer declared."""
    if any(c.status in ("create", "update") for c in plan.changes) and not plan.dest.is_dir():
        raise PolycrateError(
            "destination folder does not exist" + (" (is cron installed?)" if plan.mode == "cron" else ""),
            plan.dest,
        )
    for change in plan.changes:
        if change.status in ("create", "update"):
            assert change.content is not None
            try:
                # the dot-prefix keeps systemd and cron from reading the file half-written
                write_atomic(change.path, change.content, prefix=".polycrate-")
            except OSError as exc:
                raise PolycrateError(f"cannot write {change.path}: {exc.strerror}") from None
    for change in plan.changes:
        if change.status == "remove":
            _remove_ours(change.path, plan)
    return plan


def remove_one_off(ws, workflow: str, dest: Path | None = None, cron: bool = False) -> list[Path]:
    """Remove a workflow's files of this workspace from ``dest`` (``workflows schedule NAME --remove``)."""
    root = str(Path(ws.root).resolve())
    dest = Path(dest) if dest is not None else default_dest(cron)
    removed = []
    for marker in installed(dest):
        if marker.workspace_root == root and marker.workflow == workflow:
            _remove_ours(marker.path, None)
            removed.append(marker.path)
    return removed


def _remove_ours(path: Path, plan: SchedulePlan | None) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PolycrateError(f"cannot remove {path}: {exc.strerror}") from None
    # `systemctl enable` linked the timer into timers.target.wants; a link to the file we removed dangles
    link = path.parent / "timers.target.wants" / path.name
    if path.suffix == ".timer" and link.is_symlink():
        target = Path(os.readlink(link))
        if not target.is_absolute():
            target = link.parent / target
        if os.path.normpath(target) == os.path.normpath(path):
            link.unlink()


def one_off_schedule(ws, workflow: str, on_calendar: str | None, cron: str | None, **options: Any) -> Schedule:
    """The Schedule of ``workflows schedule NAME --on-calendar SPEC | --cron SPEC``, validated."""
    if workflow not in ws.workflows:
        from polycrate.workspace import get_workflow

        get_workflow(ws, workflow)  # raises NotFoundError with a suggestion
        raise NotFoundError(f"unknown workflow '{workflow}'", ws.file)
    raw: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if on_calendar is not None:
        raw["on_calendar"] = on_calendar
    if cron is not None:
        raw["cron"] = cron
    try:
        schedule = parse_schedule(raw, workflow, None, None, origin=ORIGIN_ONE_OFF)
    except ConfigError as exc:
        raise ConfigError(exc.message) from None
    assert schedule is not None
    return schedule


def iter_times(times: Iterable[datetime], tz: tzinfo | None = None) -> list[str]:
    """ISO 8601 strings in local time (for JSON and text output)."""
    zone = tz or local_zone()
    return [t.astimezone(zone).isoformat() for t in times]
