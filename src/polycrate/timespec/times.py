"""Time spans and time zones: the ground the cron and OnCalendar modules share."""
from __future__ import annotations

import os
import re
from datetime import datetime, tzinfo, UTC
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ScheduleError(ValueError):
    """An expression or value is invalid; turned into a ConfigError with file and line by the caller."""


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


MAX_SPAN_SECONDS = 366 * 86400  # a delay, timeout or interval beyond a year is a typo, not a plan


def parse_timespan(value: Any) -> int:
    """Seconds from an int or a systemd time span ("90", "15m", "1h 30min", "2 weeks"); whole seconds only."""
    if isinstance(value, bool):
        raise ScheduleError("expected seconds or a time span like '15m'")
    if isinstance(value, int):
        if value < 0:
            raise ScheduleError("must not be negative")
        if value >= MAX_SPAN_SECONDS:
            raise ScheduleError(f"{value} seconds is longer than {MAX_SPAN_SECONDS // 86400:,} days")
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
    if not total < MAX_SPAN_SECONDS:  # also inf and nan: "1e400s", a thousand digits of years
        raise ScheduleError(f"time span {value!r} is longer than {MAX_SPAN_SECONDS // 86400:,} days")
    if abs(total - round(total)) > 1e-6:
        raise ScheduleError(f"time span {value!r} is not a whole number of seconds")
    return int(round(total))


def zone_named(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return UTC
    if not re.match(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)+$", name):
        return None  # only Area/City names: "Mon" or "EST" are not taken for zones
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_zone() -> tzinfo:
    """The machine's time zone (what cron and systemd use), DST-aware where possible."""
    key = os.environ.get("TZ", "").lstrip(":")
    if key:
        zone = zone_named(key) or (UTC if key in ("UTC", "Etc/UTC", "UTC0") else None)
        if zone is not None:
            return zone
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except OSError:
        return datetime.now().astimezone().tzinfo or UTC


def zone_key(tz: tzinfo | None) -> str | None:
    if tz is None:
        return None
    if tz is UTC:
        return "UTC"
    key = getattr(tz, "key", None)
    return key if key and key != "localtime" else None
