"""Five-field cron expressions: checked as Debian's cron reads them, next times, the OnCalendar form."""
from __future__ import annotations

import re
from datetime import datetime, tzinfo

from polycrate.timespec.times import ScheduleError, local_zone

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
    """Five fields or an alias; or six or seven, cron with seconds (and a year) as Quartz and Spring write it,
    which no OnCalendar expression is (it has at most four parts): checked as cron, which says how to write it."""
    return expression.startswith("@") or len(expression.split()) == 5 or _with_seconds(expression)


def _with_seconds(expression: str) -> bool:
    """Six or seven fields and no time of day (an OnCalendar expression's HH:MM): Quartz's or Spring's cron."""
    return len(expression.split()) in (6, 7) and ":" not in expression


def seconds_advice(expression: str, cron_key: str = "") -> str | None:
    """For a cron expression with seconds first (and a year last), as Quartz and Spring write it: that cron takes
    five fields, and the same time as cron and as an OnCalendar expression where it can be said unambiguously
    (a day of the week given as a number is not: Quartz counts 1-7 from Sunday, cron 0-7 from Sunday, 7 again).
    ``cron_key``: how the cron form is introduced where it was given as something else ("cron: " under
    on_calendar:). None for any other expression. The one rule for cron: and for on_calendar: (oncalendar.py)."""
    if not _with_seconds(expression):
        return None
    fields = expression.split()
    seconds, rest, year = fields[0], fields[1:6], fields[6] if len(fields) == 7 else "*"
    message = (f"cron takes 5 fields (minute hour day-of-month month day-of-week), not {len(fields)} "
               + ("(Quartz puts seconds first and a year last)" if len(fields) == 7 else "(Quartz and Spring put "
                                                                                          "seconds first)"))
    minute, hour, dom, month, weekday = ("*" if f == "?" else f for f in rest)  # Quartz's "no specific value"
    month_n, weekday_n = _names_to_numbers(month, 3), _names_to_numbers(weekday, 4)
    numbered_weekday = weekday not in ("*", "?") and any(c.isdigit() for c in weekday)
    if (month_n is None or weekday_n is None or numbered_weekday or year not in ("*", "?")
            or not seconds.isdigit() or int(seconds) > 59):
        return message + (": write the time as cron's 5 fields (a day of the week by name, MON: Quartz numbers "
                          "them from 1), or as on_calendar, systemd's calendar form ('Mon..Fri *-*-* 02:00:00')")
    cron = f"{minute} {hour} {dom} {month_n} {weekday_n}"
    try:
        validate_cron(cron)
    except ScheduleError:
        return message + ": write the time as cron's 5 fields, or as on_calendar, systemd's calendar form"
    try:
        calendar: str | None = cron_to_calendar(cron)
    except ScheduleError:  # a day of the month or a weekday: no calendar form
        calendar = None
    if not int(seconds):
        return message + f": write {cron_key}'{cron}'" + (f", or on_calendar: '{calendar}' (systemd)" if calendar else "")
    if calendar is None:
        return message + ": cron runs at whole minutes; write on_calendar, systemd's calendar form, with the seconds"
    date, _, clock = calendar.rpartition(" ")
    return message + f": cron runs at whole minutes; write on_calendar: '{date} {clock[:-2]}{int(seconds):02d}' (systemd)"


def _names_to_numbers(text: str, index: int) -> str | None:
    """A month or day-of-week field with names in ranges and lists (Quartz: MON-FRI) in cron's numbers (cron takes
    a name only alone); None where a name is unknown."""
    names = _CRON_FIELDS[index][3]
    out = []
    for part in re.split(r"([,/-])", text):
        if part.isalpha():
            if part.lower() not in names:
                return None
            out.append(str(names[part.lower()]))
        else:
            out.append(part)
    return "".join(out)


_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (  # name, low, high, names
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
    advice = seconds_advice(expression)
    if advice is not None:
        raise ScheduleError(f"invalid cron expression {expression!r}: {advice}")
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=False):
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
    if fields[4] == "*" and not _day_exists(fields[2], fields[3]):
        # cron accepts it and never runs it: a nightly job that silently never happens
        raise ScheduleError(f"invalid cron expression {expression!r}: day of month '{fields[2]}' never occurs "
                            f"in month '{fields[3]}'")
    return expression


_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February 29 exists in leap years


def _field_values(text: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    """The numbers a checked cron field stands for."""
    if text.lower() in names:
        return {names[text.lower()]}
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        first, _, last = base.partition("-")
        start, end = (low, high) if base == "*" else (int(first), int(last or (high if step else first)))
        values.update(range(start, end + 1, int(step or 1)))
    return values


def _day_exists(day_field: str, month_field: str) -> bool:
    days = _field_values(day_field, *_CRON_FIELDS[2][1:])
    months = _field_values(month_field, *_CRON_FIELDS[3][1:])
    return any(day <= _LONGEST_MONTH[month - 1] for day in days for month in months)


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
