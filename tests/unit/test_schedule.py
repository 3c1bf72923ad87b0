"""Schedules: validation, next run times (checked against systemd-analyze and croniter), rendering."""
from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from polycrate import schedule as sched
from polycrate.errors import ConfigError
from polycrate.config.yamlfile import parse_yaml

ANALYZE = sched.systemd_analyze()
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze calendar does not work here")
UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- validation ---------------------------------------------------------------------------


def _workflow_schedule(yaml_text: str):
    """The schedule mapping as the workspace loader hands it over (a LineMap with key lines)."""
    return parse_yaml(yaml_text, "workspace.poly")["schedule"]


def test_short_forms_pick_the_kind():
    s = sched.parse_schedule("*-*-* 02:00:00", "nightly", "workspace.poly", 7)
    assert (s.kind, s.expression, s.persistent, s.user) == ("on_calendar", "*-*-* 02:00:00", True, None)
    c = sched.parse_schedule("0 2 * * 1-5", "nightly", "workspace.poly", 7)
    assert (c.kind, c.expression) == ("cron", "0 2 * * 1-5")
    assert sched.parse_schedule("@daily", "n").kind == "cron"
    assert sched.parse_schedule("daily", "n").kind == "on_calendar"
    assert sched.parse_schedule(None, "n") is None


def test_long_form_with_every_key():
    raw = _workflow_schedule(
        "schedule:\n"
        "  on_calendar: 'Mon..Fri *-*-* 02:00'\n"
        "  randomized_delay: 15m\n"
        "  user: automation\n"
        "  group: automation\n"
        "  persistent: false\n"
        "  timeout: 7200\n"
        "  log_file: /var/log/acme.log\n"
    )
    s = sched.parse_schedule(raw, "nightly", "workspace.poly", 1)
    assert s.randomized_delay == 900 and s.timeout == 7200
    assert (s.user, s.group, s.persistent, s.log_file) == ("automation", "automation", False, "/var/log/acme.log")


@pytest.mark.parametrize(
    "body, line, words",
    [
        ("schedule:\n  on_calendar: daily\n  every: 5\n", 3, "unknown key 'every'"),
        ("schedule:\n  on_calendar: daily\n  cron: '0 2 * * *'\n", 1, "exactly one"),
        ("schedule:\n  user: x\n", 1, "exactly one"),
        ("schedule:\n  on_calendar: '*-*-* 25:00'\n", 2, "OnCalendar"),
        ("schedule:\n  on_calendar: 'Sun..Mon'\n", 2, "OnCalendar"),
        ("schedule:\n  on_calendar: '*-02-30'\n", 2, "never"),
        ("schedule:\n  cron: '0 2 * *'\n", 2, "5 fields"),
        ("schedule:\n  cron: '60 2 * * *'\n", 2, "out of range"),
        ("schedule:\n  cron: '0 2 * * mon-fri'\n", 2, "bad day of week"),
        ("schedule:\n  cron: '@reboot'\n", 2, "aliases"),
        ("schedule:\n  cron: '0 2 * * *'\n  timeout: 5 parsecs\n", 3, "timeout"),
        ("schedule:\n  cron: '0 2 * * *'\n  persistent: yes please\n", 3, "persistent"),
        ("schedule:\n  cron: '0 2 * * *'\n  user: 'root; rm -rf /'\n", 3, "user"),
        ("schedule:\n  cron: '0 2 * * *'\n  log_file: relative.log\n", 3, "log_file"),
        ("schedule: [1, 2]\n", 1, "must be"),
    ],
)
def test_invalid_schedules_name_file_and_line(body, line, words):
    raw = parse_yaml(body, "workspace.poly")["schedule"]
    with pytest.raises(ConfigError) as info:
        sched.parse_schedule(raw, "nightly", "/ws/workspace.poly", 1)
    message = str(info.value)
    assert message.startswith(f"/ws/workspace.poly:{line}: workflow 'nightly': schedule:")
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "written, advice",
    [
        ("0 0 2 * * ?", "write '0 2 * * *', or on_calendar: '*-*-* 02:00:00' (systemd)"),
        ("0 0 2 * * *", "write '0 2 * * *', or on_calendar: '*-*-* 02:00:00' (systemd)"),
        ("0 30 3 ? * MON-FRI", "write '30 3 * * 1-5', or on_calendar: 'Mon,Tue,Wed,Thu,Fri *-*-* 03:30:00'"),
        ("0 0 2 15 * ?", "write '0 2 15 * *', or on_calendar: '*-*-15 02:00:00' (systemd)"),
        ("15 0 2 * * ?", "cron runs at whole minutes; write on_calendar: '*-*-* 02:00:15' (systemd)"),
        # Quartz counts the days of the week 1-7 from Sunday, cron 0-7: a number is not translated
        ("0 0 2 ? * 2", "a day of the week by name, MON: Quartz numbers them from 1"),
        ("0 0 12 1 * ? 2027", "not 7 (Quartz puts seconds first and a year last)"),
    ],
)
def test_cron_with_seconds_says_cron_takes_five_fields_and_how_to_write_the_time(written, advice):
    """A Quartz or Spring expression (seconds first) in the short form was taken for an OnCalendar expression and
    refused as one ("systemd-analyze refuses it"); under cron: it said "expected 5 fields, got 6". Both now say that
    cron takes five fields, which, and the same time in cron's form and in systemd's, where that is unambiguous."""
    for raw in (written, _workflow_schedule(f"schedule:\n  cron: '{written}'\n")):
        with pytest.raises(ConfigError) as info:
            sched.parse_schedule(raw, "nightly", "/ws/workspace.poly", 2)
        message = str(info.value)
        assert message.startswith(f"/ws/workspace.poly:2: workflow 'nightly': schedule: invalid cron expression "
                                  f"'{written}': cron takes 5 fields (minute hour day-of-month month day-of-week), "
                                  f"not {len(written.split())} "), message
        assert advice in message and "\n" not in message
        written_as = message.split("write '")[1].split("'")[0] if ": write '" in message else None
        if written_as:  # the cron form given is one cron takes
            assert sched.validate_cron(written_as) == written_as
    assert sched.parse_schedule("0 2 * * *", "n").kind == "cron"  # five fields, OnCalendar forms: as before
    assert sched.parse_schedule("Mon..Fri *-*-* 02:00:00 Europe/Berlin", "n").kind == "on_calendar"


def test_cron_with_seconds_under_on_calendar_gets_the_same_advice():
    """An explicit `on_calendar: "0 0 2 * * ?"` said only "systemd-analyze refuses it" (our parser refused it, then
    systemd-analyze did); the short form and cron: already said how to write the time. Now on_calendar: says it
    too, from the same rule (cron.seconds_advice), the cron form introduced as cron:."""
    for raw in (_workflow_schedule("schedule:\n  on_calendar: '0 0 2 * * ?'\n"), {"on_calendar": "0 0 2 * * ?"}):
        with pytest.raises(ConfigError) as info:
            sched.parse_schedule(raw, "nightly", "/ws/workspace.poly", 2)
        message = str(info.value)
        assert message == ("/ws/workspace.poly:2: workflow 'nightly': schedule: invalid OnCalendar expression "
                           "'0 0 2 * * ?': it reads as cron with seconds first; cron takes 5 fields (minute hour "
                           "day-of-month month day-of-week), not 6 (Quartz and Spring put seconds first): write "
                           "cron: '0 2 * * *', or on_calendar: '*-*-* 02:00:00' (systemd)"), message
        assert "systemd-analyze" not in message


@pytest.mark.parametrize(
    "expression",
    ["*-*-* 25:00", "Sun..Mon", "*-*-32", "12", "*-*-* */5:00", "*:*/5", "*-*-* 02:00 Mon", "Mon,Blursday"],
)
def test_our_parser_refuses_what_systemd_refuses(expression, monkeypatch):
    monkeypatch.setenv("POLYCRATE_SYSTEMD_ANALYZE", "")
    with pytest.raises(sched.ScheduleError):
        sched.validate_calendar(expression)
    if ANALYZE:
        with pytest.raises(sched.ScheduleError):
            sched.analyze_calendar(expression, utc(2024, 1, 1), binary=ANALYZE)


@pytest.mark.parametrize("span, seconds", [(90, 90), ("90", 90), ("15m", 900), ("1h 30min", 5400),
                                           ("2 weeks", 1209600), ("1d", 86400), ("2h5s", 7205)])
def test_timespans(span, seconds):
    assert sched.parse_timespan(span) == seconds
    if shutil.which("systemd-analyze") and isinstance(span, str):
        out = subprocess.run(["systemd-analyze", "timespan", span], capture_output=True, text=True).stdout
        micro = next(line.split(":")[1].strip() for line in out.splitlines() if line.strip().startswith("μs:"))
        assert int(micro) == seconds * 1_000_000


# --- next run times -----------------------------------------------------------------------

# (expression, base time): day-of-week edges, month ends, leap years, DST and year boundaries
CALENDAR_CASES = [
    ("*-*-* 02:00:00", utc(2024, 3, 9, 12)),
    ("daily", utc(2023, 12, 31, 23, 59, 59)),
    ("weekly", utc(2024, 2, 28, 0, 0)),  # Wednesday -> Mondays, across the leap day
    ("hourly", utc(2024, 12, 31, 22, 30)),
    ("monthly", utc(2024, 1, 31, 0, 0)),
    ("Mon..Fri *-*-* 02:00", utc(2024, 3, 1, 3, 0)),  # Friday after the run -> Monday
    ("Sat,Sun 10:00", utc(2024, 6, 30, 10, 0)),  # exactly at the time -> strictly after
    ("Fri *-*-13 00:00:00", utc(2024, 1, 1)),  # Friday the 13th
    ("*-02-29 12:00", utc(2024, 3, 1)),  # next leap days: 2028, 2032, 2036
    ("*-*-31 06:00", utc(2024, 1, 31, 7)),  # months without a 31st are skipped
    ("*-01,04,07,10-01 00:00:00", utc(2024, 11, 15)),  # quarterly, across the year end
    ("*-*-* 00/6:30", utc(2024, 5, 5, 17, 0)),
    ("*:0/15", utc(2024, 5, 5, 23, 50)),
    ("Tue..Thu *-12-01..07 00:00", utc(2023, 11, 1)),
    ("2025-*-* 03:00", utc(2024, 12, 31, 12)),
    ("Sun *-*-* 02:30 Europe/Berlin", utc(2024, 3, 20)),  # 2024-03-31 02:30 does not exist in Berlin
    ("Mon *-*-* 02:00 UTC", utc(2024, 12, 30, 1)),
    ("*-*-* 02:30", utc(2024, 10, 26, 12)),  # 02:30 happens twice in Berlin on 2024-10-27
    ("*-*-1/10 08:00", utc(2024, 2, 21, 9)),
]


@needs_analyze
@pytest.mark.parametrize("expression, base", CALENDAR_CASES)
@pytest.mark.parametrize("tz", [UTC, BERLIN], ids=["UTC", "Berlin"])
def test_our_calendar_parser_matches_systemd_analyze(expression, base, tz):
    _, expected = sched.analyze_calendar(expression, base, 3, tz, binary=ANALYZE)
    assert len(expected) == 3
    assert sched.calendar_next(expression, base, 3, tz) == expected


def test_calendar_next_known_values():
    # hand-checked; these run even where systemd-analyze is missing
    assert sched.calendar_next("Mon..Fri *-*-* 02:00", utc(2024, 3, 1, 3), 3, UTC) == [
        utc(2024, 3, 4, 2), utc(2024, 3, 5, 2), utc(2024, 3, 6, 2)
    ]
    assert sched.calendar_next("*-02-29 12:00", utc(2024, 3, 1), 2, UTC) == [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)]
    # 02:00 does not exist in Berlin on 2024-03-31 (clocks jump to 03:00): skipped, as systemd does
    assert sched.calendar_next("*-*-* 02:00:00", utc(2024, 3, 30, 12), 2, BERLIN) == [
        utc(2024, 4, 1, 0), utc(2024, 4, 2, 0)
    ]
    assert sched.calendar_next("2020-01-01", utc(2024, 1, 1), 3, UTC) == []


@needs_analyze
def test_next_runs_uses_systemd_analyze_and_an_injected_now():
    s = sched.parse_schedule("Sat,Sun 10:00", "w")
    assert sched.next_runs(s, utc(2024, 6, 30, 10), 3, UTC) == [utc(2024, 7, 6, 10), utc(2024, 7, 7, 10), utc(2024, 7, 13, 10)]


def test_next_runs_without_systemd_analyze(monkeypatch):
    monkeypatch.setenv("POLYCRATE_SYSTEMD_ANALYZE", "")
    assert sched.systemd_analyze() is None
    s = sched.parse_schedule("Sat,Sun 10:00", "w")
    assert sched.next_runs(s, utc(2024, 6, 30, 10), 3, UTC) == [utc(2024, 7, 6, 10), utc(2024, 7, 7, 10), utc(2024, 7, 13, 10)]


CRON_CASES = [
    ("0 2 * * *", utc(2024, 3, 9, 12), [utc(2024, 3, 10, 2), utc(2024, 3, 11, 2), utc(2024, 3, 12, 2)]),
    ("30 3 * * 1-5", utc(2024, 3, 1, 4), [utc(2024, 3, 4, 3, 30), utc(2024, 3, 5, 3, 30), utc(2024, 3, 6, 3, 30)]),
    ("0 0 * * 0", utc(2024, 12, 28), [utc(2024, 12, 29), utc(2025, 1, 5), utc(2025, 1, 12)]),
    ("0 0 * * 7", utc(2024, 12, 28), [utc(2024, 12, 29), utc(2025, 1, 5), utc(2025, 1, 12)]),
    ("0 12 29 2 *", utc(2024, 3, 1), [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12), utc(2036, 2, 29, 12)]),
    ("0 6 31 * *", utc(2024, 1, 31, 7), [utc(2024, 3, 31, 6), utc(2024, 5, 31, 6), utc(2024, 7, 31, 6)]),
    ("*/15 * * * *", utc(2024, 5, 5, 23, 50), [utc(2024, 5, 6, 0, 0), utc(2024, 5, 6, 0, 15), utc(2024, 5, 6, 0, 30)]),
    ("0 0 1 jan *", utc(2024, 6, 1), [utc(2025, 1, 1), utc(2026, 1, 1), utc(2027, 1, 1)]),
    ("15 10 * * sat", utc(2024, 6, 29, 10, 15), [utc(2024, 7, 6, 10, 15), utc(2024, 7, 13, 10, 15), utc(2024, 7, 20, 10, 15)]),
    ("0 0 1,15 * *", utc(2024, 1, 20), [utc(2024, 2, 1), utc(2024, 2, 15), utc(2024, 3, 1)]),
    ("0 */6 * * *", utc(2024, 5, 5, 17), [utc(2024, 5, 5, 18), utc(2024, 5, 6, 0), utc(2024, 5, 6, 6)]),
    ("@weekly", utc(2024, 2, 28), [utc(2024, 3, 3), utc(2024, 3, 10), utc(2024, 3, 17)]),
]


@pytest.mark.parametrize("expression, base, expected", CRON_CASES)
def test_cron_next_runs(expression, base, expected):
    s = sched.parse_schedule(expression, "w")
    assert s.kind == "cron"
    assert sched.next_runs(s, base, 3, UTC) == expected


def test_cron_follows_local_time_across_dst():
    runs = sched.cron_next("0 2 * * *", utc(2024, 3, 30, 12), 2, BERLIN)
    assert [r.astimezone(UTC) for r in runs] == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0)]


@pytest.mark.parametrize("expression, base, expected", [c for c in CRON_CASES if c[0] != "0 0 1,15 * *"])
def test_cron_to_calendar_fires_at_the_same_times(expression, base, expected):
    calendar = sched.cron_to_calendar(expression)
    if ANALYZE:
        assert sched.analyze_calendar(calendar, base, 3, UTC, binary=ANALYZE)[1] == expected
    assert sched.calendar_next(calendar, base, 3, UTC) == expected


def test_cron_with_day_of_month_and_weekday_cannot_be_a_timer():
    with pytest.raises(sched.ScheduleError, match="OR a weekday"):
        sched.cron_to_calendar("0 2 1 * 1")


# --- rendering ----------------------------------------------------------------------------

ROOT = Path("/opt/polycrate workspaces/acme 100%")
COMMAND = ["/usr/local/bin/polycrate"]


def test_systemd_units():
    s = sched.parse_schedule(
        {"on_calendar": "*-*-* 02:00:00", "user": "automation", "group": "ops", "timeout": "2h", "randomized_delay": 600},
        "nightly-maintenance",
    )
    files = sched.render_systemd("acme-corp-automation", ROOT, s, COMMAND)
    service = files["polycrate-acme-corp-automation-nightly-maintenance.service"]
    timer = files["polycrate-acme-corp-automation-nightly-maintenance.timer"]
    assert "Type=oneshot\n" in service
    assert "WorkingDirectory=/opt/polycrate workspaces/acme 100%%\n" in service
    assert (
        'ExecStart=/usr/local/bin/polycrate --workspace "/opt/polycrate workspaces/acme 100%%" workflows run '
        "--launched-by systemd:polycrate-acme-corp-automation-nightly-maintenance.service nightly-maintenance\n"
    ) in service
    assert "--force" not in service
    assert "User=automation\nGroup=ops\nTimeoutStartSec=7200\n" in service
    assert "OnCalendar=*-*-* 02:00:00\nAccuracySec=1s\nPersistent=true\nRandomizedDelaySec=600\n" in timer
    assert timer.endswith("[Install]\nWantedBy=timers.target\n")
    for content in (service, timer):
        assert content.startswith("# Written by polycrate")
        assert f"# polycrate-workspace-root: {ROOT}\n" in content


def test_cron_entry():
    s = sched.parse_schedule({"cron": "0 2 * * *", "timeout": 3600, "randomized_delay": "5m", "user": "automation"}, "nightly")
    files = sched.render_cron("acme.corp", ROOT, s, COMMAND)
    [(name, content)] = files.items()
    assert name == "polycrate-acme_corp-nightly"  # cron ignores file names with dots
    entry = content.splitlines()[-1]
    # only root may create a folder in /var/log: another user's log is in the workspace's state folder
    assert entry.startswith("0 2 * * * automation sleep $(shuf -i 0-300 -n 1) && mkdir -p '/opt/polycrate "
                            "workspaces/acme 100\\%/.polycrate/logs' && ")
    assert "cd '/opt/polycrate workspaces/acme 100\\%' && " in entry
    assert ("timeout --foreground --kill-after=90s --signal=USR2 3600 /usr/local/bin/polycrate --workspace '/opt/polycrate workspaces/acme 100\\%' "
            "workflows run --launched-by cron:polycrate-acme_corp-nightly nightly") in entry
    assert entry.endswith(">> '/opt/polycrate workspaces/acme 100\\%/.polycrate/logs/cron-nightly.log' 2>&1")
    root_entry = sched.render_cron("acme.corp", ROOT, sched.parse_schedule("0 2 * * *", "nightly"), COMMAND)
    assert next(iter(root_entry.values())).splitlines()[-1].endswith(
        ">> /var/log/polycrate/acme.corp-nightly.log 2>&1")
    assert "SHELL=/bin/sh\n" in content


def test_cron_refuses_group_and_oncalendar():
    with pytest.raises(ConfigError, match="group"):
        sched.render_cron("a", ROOT, sched.parse_schedule({"cron": "0 2 * * *", "group": "ops"}, "w"), COMMAND)
    with pytest.raises(ConfigError, match="OnCalendar"):
        sched.render_cron("a", ROOT, sched.parse_schedule("daily", "w"), COMMAND)


def test_marker_round_trip(tmp_path):
    s = sched.parse_schedule("Mon *-*-* 02:00", "w")
    for name, content in {
        **sched.render_systemd("ws", ROOT, s, COMMAND),
        **sched.render_cron("ws", ROOT, sched.parse_schedule("0 2 * * 1", "w"), COMMAND),
    }.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "polycrate-foreign.timer").write_text("[Timer]\nOnCalendar=daily\n")
    found = {m.path.name: m for m in sched.installed(tmp_path)}
    assert set(found) == {"polycrate-ws-w.service", "polycrate-ws-w.timer", "polycrate-ws-w"}
    assert all(m.workspace_root == str(ROOT) and m.workflow == "w" for m in found.values())
    assert found["polycrate-ws-w.timer"].expression == "Mon *-*-* 02:00"
    assert found["polycrate-ws-w"].expression == "0 2 * * 1"


def test_executable_override(monkeypatch):
    monkeypatch.setenv("POLYCRATE_EXECUTABLE", "/opt/bin/polycrate")
    assert sched.executable_command() == ["/opt/bin/polycrate"]


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6 *", "0 0 31 jun *", "0 3 30-31 2 *"])
def test_cron_whose_day_never_occurs_is_refused(expression):
    # cron would accept it and never run it (croniter gives up on it: CroniterBadDateError)
    with pytest.raises(sched.ScheduleError, match="never occurs"):
        sched.validate_cron(expression)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 */2 *", "0 0 1-31/10 feb *", "0 0 30 2 1"])
def test_cron_whose_day_occurs_somewhere_is_kept(expression):
    assert sched.validate_cron(expression) == expression


@pytest.mark.skipif(not ANALYZE, reason="needs systemd-analyze (Debian package systemd)")
def test_loading_a_schedule_asks_systemd_analyze_only_about_what_our_parser_refuses(tmp_path, monkeypatch):
    """Every command that loads a scheduled workspace validates its schedules: our parser answers what it
    accepts (no process started); what it refuses goes to systemd-analyze, whose answer is final."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "systemd-analyze"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {ANALYZE} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("POLYCRATE_SYSTEMD_ANALYZE", str(wrapper))
    sched.validate_calendar("Sun *-*-* 04:30:00")
    sched.validate_calendar("*-*-* 02:00/15:00")
    assert not calls.exists()
    with pytest.raises(sched.ScheduleError, match="systemd-analyze refuses"):
        sched.validate_calendar("*-*-* 25:00")
    assert calls.read_text().splitlines()[-1].endswith("-- *-*-* 25:00")
