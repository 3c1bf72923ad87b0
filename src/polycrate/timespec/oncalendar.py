"""systemd OnCalendar expressions: checked and stepped by ``systemd-analyze calendar`` where it works,
else by our parser of the common subset (the same answers, see tests/unit/test_schedule.py)."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, tzinfo, UTC
from functools import cache

from polycrate.timespec.times import ScheduleError, local_zone, zone_key, zone_named

_ENV_ANALYZE = "POLYCRATE_SYSTEMD_ANALYZE"  # path of systemd-analyze; empty disables it (tests of our parser)


@cache
def _analyze_binary(setting: str | None) -> str | None:
    binary = setting if setting is not None else shutil.which("systemd-analyze")
    if not binary:
        return None
    import subprocess

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
    key = zone_key(tz)
    if key:
        env["TZ"] = key
    base = int(now.timestamp())
    import subprocess

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
        times.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
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
        zone = zone_named(tokens[-1])
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

    hours: tuple[int, ...] | None = None
    minutes: tuple[int, ...] | None = None
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
    base_utc = now.astimezone(UTC)
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
                            utc = moment.astimezone(UTC)
                            if utc.astimezone(zone).replace(tzinfo=None) != moment.replace(tzinfo=None):
                                continue  # inside a DST gap: the time does not exist, systemd skips it
                            if utc <= base_utc or (found and utc <= found[-1]):
                                continue
                            found.append(utc)
                            if len(found) == count:
                                return found
    return found


def validate_calendar(expression: str) -> None:
    """Refuse an OnCalendar expression systemd would refuse (or that never elapses).

    Our parser answers first (it matches systemd-analyze on the forms the tests hold it to): every command
    that loads a scheduled workspace checks its schedules, and two runs of systemd-analyze cost `workflows
    list` more than the rest of it. Only what our parser refuses goes to systemd-analyze, when there is one:
    its grammar is the wider, and its answer is final. Six or seven fields without a time of day are cron with
    seconds, as Quartz and Spring write it (no OnCalendar expression has more than four parts): refused with
    the advice cron: gets (cron.seconds_advice)."""
    from polycrate.timespec.cron import seconds_advice

    advice = seconds_advice(expression, cron_key="cron: ")
    if advice is not None:
        raise ScheduleError(f"invalid OnCalendar expression {expression!r}: it reads as cron with seconds first; "
                            + advice)
    now = datetime.now(UTC)
    try:
        times = calendar_next(expression, now, 1)
    except ScheduleError as exc:
        if not systemd_analyze():
            raise ScheduleError(f"invalid OnCalendar expression {expression!r}: {exc}") from None
        _, times = analyze_calendar(expression, now, 1)
    if not times:
        raise ScheduleError(f"OnCalendar expression {expression!r} never elapses")
